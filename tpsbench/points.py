"""One measured point, as every analysis sees it: what ran (:class:`PointKey`: model, layer or training step,
implementation, mode, tokens, compile, stack, GPUs, routing, recompute), where (the GPU profile) and what was
measured (median and raw samples, tokens/s, the roofline floor recorded with it, counters, idle time, peak
memory). `compare`, `check`, `plot`, `worth`, `validate` and `fit` all read these; results files become them in
one place (tpsbench.results.points), calibrate's GEMM sweep too. :func:`point_label` is the one name a point
has. Pure data: no torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from tpsbench.options import HEADLINE_MODES, PointKind, Recompute, Scope
from tpsbench.stacks import DEFAULT_STACK, stack_label

NO_IMPL = "-"  # a layer without an MoE implementation (attention, a dense MLP)


class PointKey(NamedTuple):
    """What a point is, independent of where and when it ran: two points with equal keys measured the same."""

    model: str
    scope: Scope
    layer: str  # attention, mlp, moe, a bracket, gemm, or model (a training step)
    impl: str  # MoE implementation, a bracket, "dense", or NO_IMPL
    mode: str  # fwd, bwd, fwd_bwd, stage:<name>, train_step, or a GEMM's MxNxKxG
    tokens: int  # per microbatch
    global_tokens: int | None  # training step: per optimizer step
    compiled: bool
    stack: str = DEFAULT_STACK
    dist: str | None = None  # run --dist: layout and ranks ("ep x2"); tokens/s are per GPU
    routing: str = "learned"  # learned, uniform, "skewed S" (a point without a router counts as learned)
    recompute: Recompute = Recompute.NONE

    @property
    def kind(self) -> PointKind:
        return PointKind.E2E if self.scope is Scope.STEP else PointKind.MICRO


def point_label(key: PointKey, *, tokens: bool = True, gpu: str | None = None) -> str:
    """The one name of a point: ``moe_1b train step/grouped @ 32,768 compiled``, ``moe_1b moe fwd_bwd/triton @
    32,768``; ``tokens=False`` names a series across microbatch sizes, ``gpu`` adds the GPU in brackets."""
    what = "train step" if key.scope is Scope.STEP else f"{key.layer} {key.mode}"
    impl = "" if key.impl in (NO_IMPL, "dense") else f"/{key.impl}"
    at = f" @ {key.tokens:,}" if tokens else ""
    comp = " compiled" if key.compiled else ""
    ac = "" if key.recompute is Recompute.NONE else f" ac {key.recompute}"
    stack = stack_label(key.stack)
    spread = "" if key.dist is None else f" ({key.dist}, per GPU)"
    route = "" if key.routing == "learned" else f" [{key.routing} routing]"
    where = "" if gpu is None else f" [{gpu}]"
    return f"{key.model} {what}{impl}{at}{comp}{ac}{stack}{spread}{route}{where}"


@dataclass(frozen=True, slots=True)
class MeasuredPoint:
    """A point of a results file (or of calibrate's GEMM sweep) with its measurements; None where the file has
    none (a failed point, a CPU run without counters or floors)."""

    key: PointKey
    source: str  # the file it came from
    gpu: str  # GPU profile name, or "cpu"
    gpu_name: str | None
    policy: str  # dtype policy
    status: str  # ok, oom, error, skipped, inconsistent (its modes contradict each other: analysis.consistency)
    error: str | None = None
    median_s: float | None = None
    samples_s: tuple[float, ...] = ()
    iqr_s: float | None = None
    tokens_per_s: float | None = None
    matmul_flops: float | None = None  # cost-model matmul FLOPs of what was timed
    bytes: float | None = None  # cost-model DRAM bytes of what was timed
    predicted_s: float | None = None  # the roofline floor recorded with the point
    predicted_memory_share: float | None = None
    roofline_fraction: float | None = None
    dram_util: float | None = None  # GPM, fraction of peak
    dram_gbs: float | None = None
    throttled: bool = False
    idle_share: float | None = None  # GPU idle share of the time (profiler)
    peak_memory_bytes: int | None = None  # training step

    @property
    def label(self) -> str:
        return point_label(self.key)

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.median_s is not None

    @property
    def is_headline(self) -> bool:
        return self.key.mode in HEADLINE_MODES

    @property
    def accumulation(self) -> int:
        """Microbatches per optimizer step of a training step (1 for every other point)."""
        return max(1, (self.key.global_tokens or self.key.tokens) // self.key.tokens)

    @property
    def step_tokens(self) -> int:
        """Tokens per timed repetition: per optimizer step for a training step, else per microbatch."""
        return self.key.global_tokens or self.key.tokens

    @property
    def iqr_rel(self) -> float | None:
        return self.iqr_s / self.median_s if self.iqr_s is not None and self.median_s else None

    @property
    def predicted_tokens_per_s(self) -> float | None:
        return None if self.predicted_s is None else self.step_tokens / self.predicted_s
