"""`tpsbench check`: a regression check of a run against a baseline run (measuring the baseline's configuration
on this machine first when no current run is given); exit 1 on a regression."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tpsbench.analysis.check import DEFAULT_THRESHOLD, check
from tpsbench.cli.args import UsageError, add_json, positive_float
from tpsbench.cli.measure import add_timing_args, use_expandable_segments
from tpsbench.profiles import gpu_label
from tpsbench.report.check import check_markdown, check_summary, check_table
from tpsbench.report.tables import show
from tpsbench.results import RunDoc, finite, load_results
from tpsbench.results.io import check_output
from tpsbench.results.points import points_from_doc

if TYPE_CHECKING:
    from rich.console import Console


def add_check_args(ck: argparse.ArgumentParser) -> None:
    ck.add_argument("--baseline", required=True, help="baseline results JSON (e.g. results/baselines/...)")
    ck.add_argument("--current", default=None,
                    help="results JSON to check; without it, the baseline's configuration is run on this machine")
    ck.add_argument("--threshold", type=positive_float, default=DEFAULT_THRESHOLD * 100,
                    help=f"smallest change in percent that counts (default {DEFAULT_THRESHOLD * 100:g})")
    ck.add_argument("--device", default=None, choices=["cuda", "cpu"], help="device of the run (default: the "
                    "baseline's)")
    add_timing_args(ck)
    ck.add_argument("--out", default=None, help="results file of the run (default results/<time>-<gpu>-<model>.json)")
    ck.add_argument("--allow-missing", action="store_true",
                    help="baseline points the current run did not measure are listed but do not fail the check")
    ck.add_argument("--allow-gpu-mismatch", action="store_true",
                    help="compare runs from different GPUs (normally an error: the numbers are not comparable)")
    ck.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    ck.add_argument("--markdown", default=None, help="also append the check as markdown to this file (e.g. "
                    "$GITHUB_STEP_SUMMARY: one section per check)")
    add_json(ck, "a table")


def _baseline_run(args: argparse.Namespace, baseline: RunDoc) -> RunDoc:
    """Run the baseline's configuration on this machine and return the new results document."""
    import torch
    from rich.console import Console as StderrConsole

    from tpsbench.bench.config import rerun_config
    from tpsbench.bench.runner import execute, plan

    cfg = rerun_config(baseline, device=args.device, cuda_available=torch.cuda.is_available(), reps=args.reps,
                       min_time=args.min_time, allow_gpu_mismatch=args.allow_gpu_mismatch)
    out = Path(args.out) if args.out else cfg.default_out()
    check_output(out, overwrite=args.overwrite)  # before anything runs
    status = StderrConsole(stderr=True)
    status.print(f"tpsbench check: running the baseline's {len(plan(cfg))} points of {cfg.model.name} on "
                 f"{cfg.gpu_label} -> {out}", highlight=False)
    try:
        return execute(cfg, out, overwrite=args.overwrite).doc
    except KeyboardInterrupt:
        status.print(f"interrupted: finished points are in {out}; nothing was checked", highlight=False)
        raise


def _run_gpu(doc: RunDoc) -> str:
    return gpu_label(doc.config.device, doc.machine.profile)


def cmd_check(args: argparse.Namespace, console: Console) -> int:
    base_doc = load_results(args.baseline)
    if args.current and args.out:
        raise UsageError("--out names the results of a run, and with --current nothing is run: drop one of them")
    if args.current:
        cur_doc, cur_name = load_results(args.current), args.current
        if cur_doc.points == base_doc.points:  # the same file, or a copy: nothing was measured again
            print("tpsbench check: warning: baseline and current hold the same measurements, so every change is "
                  "zero by construction; give a new run's file, or leave out --current to measure now",
                  file=sys.stderr)
    else:
        use_expandable_segments()
        cur_doc = _baseline_run(args, base_doc)
        cur_name = "this run"
    if base_doc.config.model != cur_doc.config.model:
        raise UsageError(f"baseline measures {base_doc.config.model}, current {cur_doc.config.model}: check a run of "
                         "the same model")
    gpus = [_run_gpu(d) for d in (base_doc, cur_doc)]
    if gpus[0] != gpus[1] and not args.allow_gpu_mismatch:
        raise UsageError(f"baseline ran on {gpus[0]}, current on {gpus[1]}: times are not comparable across "
                         "devices; use a baseline of this GPU, or pass --allow-gpu-mismatch")
    report = check(points_from_doc(base_doc, args.baseline), points_from_doc(cur_doc, cur_name),
                   threshold=args.threshold / 100, baseline_name=args.baseline, current_name=cur_name,
                   allow_missing=args.allow_missing)
    if args.json:
        print(json.dumps(finite(report.to_dict()), indent=1))
    else:
        show(console, [f"tpsbench check: {check_summary(report)}", check_table(report)])
    if args.markdown:  # appended: a CI job summary collects every model's check in one file
        with Path(args.markdown).open("a", encoding="utf-8") as f:
            f.write(check_markdown(report) + "\n")
    return 1 if report.failed else 0
