"""What a matmul of a shape this process has not run before costs the host, against the same call repeated.

Why: cuBLAS picks a kernel per problem shape by a heuristic query and caches the answer, and the per-expert
``loop`` meets a new shape whenever a learned router moves an expert's row count; whether that explains the
expected model's one outlier needs this number measured on the GPU's own host (docs/expected-time.md).

Method: bf16 ``x[:m] @ w`` (the forward and input-gradient layout) and ``x[:m].T @ g[:m]`` (the weight-gradient
layout, the reduction of length ``m``) with ``(k, n)`` of moe_1b_a390m's experts. Each arm is ``calls`` calls
timed on the host from the first call to the last issued (no synchronisation inside, so the GPU's work does not
count unless the launch queue fills: ``calls`` is far below its depth); the "same" arm repeats one row count,
the "new" arm uses row counts never used before in this process (distinct, odd, none a power of two), and the
arms alternate ``reps`` times so a drift in clocks cancels.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from tpsbench.results.calibration import ShapeChurnRecord

CHURN_K, CHURN_N = 1152, 576  # moe_1b_a390m: d_model 1152, expert width 576
SAME_ROWS = 2048  # the repeated arm's rows: moe_1b_a390m's mean rows per expert at 16,384 tokens, top-4 of 32
FIRST_NEW_ROWS, NEW_ROWS_STEP = 1031, 2  # odd row counts from 1,031 up: none is a row count calibrate uses
CALLS, REPS = 200, 3


@dataclass
class ShapeChurn:
    """Host seconds per call of each arm's repetitions; ``layout`` -> samples."""

    k: int
    n: int
    calls: int
    same_rows: int
    new_rows: list[int]
    same_s: dict[str, list[float]] = field(default_factory=dict)
    new_s: dict[str, list[float]] = field(default_factory=dict)

    def extra_s(self, layout: str) -> float:
        """Median host time of a new-shape call less that of a repeated one (may be negative: noise)."""
        return statistics.median(self.new_s[layout]) - statistics.median(self.same_s[layout])

    def record(self) -> ShapeChurnRecord:
        return ShapeChurnRecord(
            k=self.k, n=self.n, calls=self.calls, same_rows=self.same_rows,
            new_rows=[self.new_rows[0], self.new_rows[-1], len(self.new_rows)], same_samples_s=self.same_s,
            new_samples_s=self.new_s,
            host_same_shape_s={layout: statistics.median(v) for layout, v in self.same_s.items()},
            host_new_shape_extra_s={layout: self.extra_s(layout) for layout in self.same_s})


def _host_time_per_call(fn: Callable[[int], object], rows: list[int], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for m in rows:
        fn(m)
    elapsed = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return elapsed / len(rows)


def shape_churn(device: torch.device, *, calls: int = CALLS, reps: int = REPS) -> ShapeChurn:
    """Host time per matmul of new shapes against repeated ones (see the module's docstring)."""
    dtype = torch.bfloat16
    layout_names = ("fprop", "wgrad")
    # every "new" arm's row counts drawn first, so that the operands hold the largest of them and the repeated
    # arm's (a slice past the end would silently repeat one clipped shape)
    fresh = itertools.count(FIRST_NEW_ROWS, NEW_ROWS_STEP)
    plan = [{name: [next(fresh) for _ in range(calls)] for name in layout_names} for _ in range(reps)]
    most = max(SAME_ROWS, *(max(rows) for arm in plan for rows in arm.values()))
    x = torch.randn(most, CHURN_K, device=device, dtype=dtype)
    g = torch.randn(most, CHURN_N, device=device, dtype=dtype)
    w = torch.randn(CHURN_K, CHURN_N, device=device, dtype=dtype)
    layouts: dict[str, Callable[[int], object]] = {
        "fprop": lambda m: torch.matmul(x[:m], w),
        "wgrad": lambda m: torch.matmul(x[:m].t(), g[:m]),
    }
    out = ShapeChurn(k=CHURN_K, n=CHURN_N, calls=calls, same_rows=SAME_ROWS, new_rows=[])
    with torch.no_grad():
        for layout, fn in layouts.items():
            fn(SAME_ROWS)  # the repeated shape's heuristic query, outside the timing
            out.same_s[layout], out.new_s[layout] = [], []
        for arm in plan:
            for layout, fn in layouts.items():
                out.same_s[layout].append(_host_time_per_call(fn, [SAME_ROWS] * calls, device))
                out.new_rows.extend(arm[layout])
                out.new_s[layout].append(_host_time_per_call(fn, arm[layout], device))
    return out


if __name__ == "__main__":  # the outlier experiment's stage (tools/gpu_stages.sh): one JSON document
    import argparse
    import json

    from tpsbench.cli.args import positive_int
    from tpsbench.results.typed import to_dict

    parser = argparse.ArgumentParser(prog="python -m tpsbench.bench.shape_churn", description=__doc__.split("\n")[0])
    parser.add_argument("calls", nargs="?", type=positive_int, default=CALLS, help="calls per arm (fewer on a CPU)")
    calls = parser.parse_args().calls
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(json.dumps({"device": str(dev), "torch": torch.__version__,
                      **to_dict(shape_churn(dev, calls=calls).record())}, indent=1))
