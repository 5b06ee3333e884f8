"""How many repetitions per run `tpsbench check` needs for a +-THRESHOLD interval at the noise of baseline runs.

    python tools/check_power.py results/baselines/*.json [--threshold 5]

Per point: the samples' count and relative IQR, the half-width of the 95% bootstrap interval of the change
that the baseline's own samples give (the run against itself), and the repetitions per run that shrink it
to the threshold (tpsbench.analysis.check.repetitions_needed: the half-width scales as 1/sqrt(n)).
"""

from __future__ import annotations

import argparse
import sys

from tpsbench.analysis.check import repetitions_needed, time_ratio_interval
from tpsbench.results.points import load_points


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="+")
    ap.add_argument("--threshold", type=float, default=5.0, help="percent (default 5)")
    args = ap.parse_args(argv)
    t = args.threshold / 100
    print(f"| point | n | IQR % | interval now (+-%) | reps for +-{args.threshold:g}% |")
    print("|:---|---:|---:|---:|---:|")
    for e in load_points(args.results):
        if e.status != "ok" or len(e.samples_s) < 2:
            continue
        lo, hi = time_ratio_interval(e.samples_s, e.samples_s)
        iqr = 100 * e.iqr_rel if e.iqr_rel is not None else float("nan")
        print(f"| {e.label} | {len(e.samples_s)} | {iqr:.1f} | {100 * (hi - lo) / 2:.1f} | "
              f"{repetitions_needed(e.samples_s, t)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
