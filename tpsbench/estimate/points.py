"""Measured points as the expected-time model sees them: what ran (model, layer, implementation, tokens, mode,
compiled or not, GPU profile) and what it measured (median seconds, peak memory), read from results files;
and the expected estimate of each."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tpsbench.costmodel import get_policy, train_workload
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
    kind: str  # "step" (training step), "layer" or "stage"
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

    @property
    def label(self) -> str:
        what = self.impl or self.layer
        if self.kind == "step":
            return f"{self.model} {what} step{' compiled' if self.compiled else ''} @{self.tokens}"
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
                gpu_idle_share=idle, stack=cfg.stack))
    return out


def estimate_point(p: MeasuredPoint, table: EfficiencyTable, profile: GPUProfile | None = None) -> Expected:
    """The expected estimate of what ``p`` measured (on its own GPU, or on ``profile``)."""
    prof = profile or load_profile(p.gpu)
    spec = get_model(p.model)
    policy = get_policy(p.policy)
    if p.kind == "step":
        impl = p.impl or "dense"
        w = train_workload(spec, impl if spec.is_moe else "dense", p.tokens, policy)
        return expected_step(w, prof, table, compiled=p.compiled)
    impl = p.impl if p.layer == "moe" else None
    return expected_layer(spec, p.layer, impl, p.tokens, p.mode, prof, table, policy=policy)
