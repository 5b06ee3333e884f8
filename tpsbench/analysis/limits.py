"""What the expected-time model says limits a training step on a GPU, in a line: GPU idle (host-bound
stretches), the ops whose time is set by the per-kernel floor (launch-bound) and the matmuls on fp32 CUDA
cores. Used next to cross-GPU speedups, where those are the parts that do not scale with bandwidth or
tensor-core compute."""

from __future__ import annotations

from dataclasses import dataclass

from tpsbench.costmodel import Workload
from tpsbench.estimate.step import StepEstimate, expected_for
from tpsbench.profiles import GPUProfile

TOP = 3


@dataclass(frozen=True, slots=True)
class StepLimits:
    gpu: str
    estimate: StepEstimate
    idle_fraction: float | None
    launch_bound: tuple[tuple[str, float], ...]  # (op, expected GPU seconds), largest first
    fp32_cuda_core: tuple[tuple[str, float], ...]

    @property
    def expected_tokens_per_s(self) -> float | None:
        e = self.estimate.expected
        return None if e is None else self.estimate.tokens / e.seconds

    def text(self) -> str:
        if self.estimate.expected is None:
            return f"{self.gpu}: expected n/a ({self.estimate.reason})"
        parts = [f"{self.gpu}: GPU idle {100 * (self.idle_fraction or 0):.0f}% (host-bound)"]

        def ops(xs: tuple[tuple[str, float], ...]) -> str:
            return ", ".join(f"{n} {s * 1e3:.1f} ms" for n, s in xs) or "none"
        parts.append(f"launch-bound ops: {ops(self.launch_bound)}")
        parts.append(f"fp32 CUDA-core matmuls: {ops(self.fp32_cuda_core)}")
        return "; ".join(parts)


def step_limits(w: Workload, profile: GPUProfile, *, compiled: bool = False, accumulation: int = 1) -> StepLimits:
    est = expected_for(w, profile, compiled=compiled, accumulation=accumulation)
    e = est.expected
    if e is None:
        return StepLimits(profile.name, est, None, (), ())
    by_op: dict[tuple[str, bool], float] = {}
    for r in e.rows:
        if r.bound == "floor" or r.op.fp32_matmul:
            key = (r.op.name, r.op.fp32_matmul)
            by_op[key] = by_op.get(key, 0.0) + r.expected_s
    launch = sorted(((n, s) for (n, fp32), s in by_op.items() if not fp32), key=lambda x: -x[1])[:TOP]
    fp32 = sorted(((n, s) for (n, is32), s in by_op.items() if is32), key=lambda x: -x[1])[:TOP]
    return StepLimits(profile.name, est, e.timeline.gpu_idle_fraction, tuple(launch), tuple(fp32))
