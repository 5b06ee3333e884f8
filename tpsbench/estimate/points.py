"""Measured points as the expected-time model sees them: what ran (model, layer, implementation, tokens, mode,
compiled or not, GPU profile) and what it measured (median seconds, peak memory), read from results files;
and the expected estimate of each."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tpsbench.costmodel import Workload, get_policy, train_workload
from tpsbench.estimate.expected import Expected, expected_layer, expected_step
from tpsbench.estimate.table import EfficiencyTable
from tpsbench.models import get_model
from tpsbench.profiles import GPUProfile, load_profile
from tpsbench.results import load_results


@dataclass(frozen=True, slots=True)
class MeasuredPoint:
    source: str  # results file
    gpu: str  # GPU profile
    model: str
    kind: str  # "step" (training step), "layer", "stage", or "gemm" (calibrate's GEMM sweep)
    layer: str  # attention, mlp, moe, a bracket, or model (step)
    impl: str | None
    tokens: int
    mode: str
    compiled: bool
    policy: str
    measured_s: float
    peak_memory_bytes: int | None
    gpu_idle_share: float | None  # measured GPU idle share (profiler), when recorded
    stack: str = "tpsbench"
    accumulation: int = 1  # training step: microbatches per optimizer step
    recompute: str = "none"  # training step: activation checkpointing

    def step_workload(self) -> Workload:
        """The cost model's workload of a training-step point (a dense model's impl is "dense")."""
        spec = get_model(self.model)
        return train_workload(spec, (self.impl or "dense") if spec.is_moe else "dense", self.tokens,
                              get_policy(self.policy), recompute=self.recompute)

    @property
    def label(self) -> str:
        what = self.impl or self.layer
        if self.kind == "step":
            ac = "" if self.recompute == "none" else f" ac {self.recompute}"
            return f"{self.model} {what} step{' compiled' if self.compiled else ''}{ac} @{self.tokens}"
        return f"{self.model} {self.layer}{'/' + self.impl if self.impl and self.layer == 'moe' else ''} " \
               f"{self.mode} @{self.tokens}"


def read_points(paths: Iterable[str | Path]) -> list[MeasuredPoint]:
    """Every ok GPU point of tpsbench's own stack in ``paths``, in file order (repeated measurements of the same
    point in different files are all kept: each is a measurement)."""
    out: list[MeasuredPoint] = []
    for path in paths:
        doc = load_results(path)
        cfg = doc.config
        if cfg.device != "cuda" or cfg.gpu_profile is None or cfg.stack != "tpsbench":
            continue
        for p in doc.points:
            if p.status != "ok" or p.stats is None:
                continue
            kind = "step" if p.kind == "e2e" else ("stage" if p.mode.startswith("stage:") else "layer")
            raw = p.raw
            compiled = bool(raw.compiled) if raw is not None and raw.compiled is not None else cfg.compile
            idle = raw.gpu_time.idle_share if raw is not None and raw.gpu_time is not None else None
            out.append(MeasuredPoint(
                source=str(path), gpu=cfg.gpu_profile, model=cfg.model, kind=kind, layer=p.layer, impl=p.impl,
                tokens=p.tokens, mode=p.mode, compiled=compiled and kind == "step", policy=cfg.dtype_policy,
                measured_s=p.stats.median, peak_memory_bytes=None if raw is None else raw.peak_memory_bytes,
                gpu_idle_share=idle, stack=cfg.stack,
                accumulation=(raw.accumulation_steps or 1) if raw is not None else 1,
                recompute=cfg.recompute if kind == "step" else "none"))
    return out


def estimate_point(p: MeasuredPoint, table: EfficiencyTable, profile: GPUProfile | None = None) -> Expected:
    """The expected estimate of what ``p`` measured (on its own GPU, or on ``profile``)."""
    prof = profile or load_profile(p.gpu)
    if p.kind == "gemm":
        return _gemm_estimate(p, table, prof)
    if p.kind == "step":
        return expected_step(p.step_workload(), prof, table, compiled=p.compiled, accumulation=p.accumulation)
    impl = p.impl if p.layer == "moe" else None
    return expected_layer(get_model(p.model), p.layer, impl, p.tokens, p.mode, prof, table,
                          policy=get_policy(p.policy))


def gemm_points(calibration: str | Path, gpu: str) -> list[MeasuredPoint]:
    """The GEMM shape sweep of a `tpsbench calibrate` file as measured points (kind ``gemm``)."""
    import json

    doc = json.loads(Path(calibration).read_text(encoding="utf-8"))
    out = []
    for g in doc.get("gemm_sweep") or []:
        out.append(MeasuredPoint(
            source=str(calibration), gpu=gpu, model="-", kind="gemm", layer="gemm", impl=None, tokens=int(g["m"]),
            mode=f"{g['m']}x{g['n']}x{g['k']}x{g['groups']}", compiled=False, policy="bf16",
            measured_s=float(g["median_s"]), peak_memory_bytes=None, gpu_idle_share=None))
    return out


def _gemm_estimate(p: MeasuredPoint, table: EfficiencyTable, profile: GPUProfile) -> Expected:
    """One bf16 GEMM launch as `calibrate` times it (L2 flushed before each repetition)."""
    from tpsbench.costmodel import GemmShape, OpCost, OpKind, Phase, Traffic
    from tpsbench.estimate.optime import Rates, op_instance_cost
    from tpsbench.estimate.timeline import KernelRun, simulate

    m, n, k, groups = (int(x) for x in p.mode.split("x"))
    op = OpCost(name="gemm", group="gemm", phase=Phase.FWD, kind=OpKind.MATMUL, flops=2.0 * m * n * k * groups,
                traffic=Traffic(activations=2.0 * groups * (m * k + k * n + m * n)), gemm=GemmShape(m, n, k, groups))
    rates = Rates.of(profile, "bf16", table)
    cost = op_instance_cost(op, rates, table, compiled=False)
    head = 2 * profile.l2_mb.value * 1e6 / rates.bandwidth
    host = table.host_launch_eager_s.value + table.host_gemm_s.value
    tl = simulate([KernelRun("gemm", 1, cost.gpu_s, host)], gpu_head_s=head)
    return Expected((), tl, op.flops / (profile.bf16_tflops.value * 1e12), False, table, ())
