"""Results files as measured points (tpsbench.points.MeasuredPoint): the one place a run document's points become
what the analyses and the expected-time model read, and calibrate's GEMM sweep too."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from tpsbench.analysis.consistency import INCONSISTENT, inconsistent_points
from tpsbench.costmodel import FWD_BWD, get_policy, global_step_bytes, step_ops, total_flops, train_workload
from tpsbench.errors import UnknownNameError
from tpsbench.models import ModelSpec, remember
from tpsbench.options import PointKind, Recompute, Scope
from tpsbench.points import NO_IMPL, MeasuredPoint, PointKey
from tpsbench.profiles import gpu_label
from tpsbench.results.calibration import CalibrationDoc
from tpsbench.results.io import load_results
from tpsbench.results.model_record import model_spec
from tpsbench.results.schema import ConfigRecord, Point, RunDoc
from tpsbench.stacks import is_modelled


def _e2e_costs(model: ModelSpec, seq_len: int, impl: str, tokens: int, global_tokens: int, policy: str
               ) -> tuple[float, float]:
    """Matmul FLOPs and bytes of one optimizer step, for result files written before they were stored."""
    spec = replace(model, seq_len=seq_len)
    cap = spec.moe.capacity_factor if spec.moe else None
    w = train_workload(spec, impl, tokens, get_policy(policy), cap)
    steps = global_tokens // tokens
    return steps * total_flops(step_ops(w), phases=FWD_BWD), global_step_bytes(w, steps)


def _routing(mode: str | None, skew: float | None) -> str:
    if mode is None:
        return "learned"  # no router: counts as learned, as every committed run is
    return f"skewed {skew:g}" if mode == "skewed" and skew is not None else mode


def _dist(cfg: ConfigRecord) -> str | None:
    if cfg.dist is None:
        return None
    return (f"{cfg.dist} x{cfg.world_size}" + ("" if cfg.ep_size is None else f", expert groups of {cfg.ep_size}")
            + ("" if cfg.shard_size is None else f", shard groups of {cfg.shard_size}")
            + ("" if cfg.fsdp_param_dtype in (None, "fp32") else f", {cfg.fsdp_param_dtype} gathers"))


def point_key(cfg: ConfigRecord, p: Point) -> PointKey:
    """What a results file's point measured."""
    step = p.kind == PointKind.E2E
    compiled = cfg.compile if p.raw is None or p.raw.compiled is None else p.raw.compiled
    return PointKey(model=cfg.model, scope=Scope.of(p.kind, p.mode), layer=p.layer, impl=p.impl or NO_IMPL,
                    mode=p.mode, tokens=p.tokens, global_tokens=(p.global_tokens or p.tokens) if step else None,
                    compiled=compiled and step, stack=cfg.stack, dist=_dist(cfg),
                    routing=_routing(p.routing, cfg.skew),
                    recompute=Recompute(cfg.recompute) if step else Recompute.NONE)


def points_from_doc(doc: RunDoc, source: str = "") -> list[MeasuredPoint]:
    """The file's points; its model is remembered, so that analyses find it by name wherever it came from."""
    cfg, machine = doc.config, doc.machine
    spec = remember(model_spec(cfg.model_spec, "config.model_spec"), source or "a results file")
    gpu = gpu_label(cfg.device, machine.profile)
    out = []
    contradicted = inconsistent_points(doc)
    for i, p in enumerate(doc.points):
        key = point_key(cfg, p)
        base = MeasuredPoint(key=key, source=source, gpu=gpu, gpu_name=machine.gpu_name, policy=cfg.dtype_policy,
                             status=p.status, error=p.error)
        if i in contradicted:  # its modes' medians contradict each other: not a result, for any analysis
            out.append(replace(base, status=INCONSISTENT, error=f"{contradicted[i]}: the machine was busy"))
            continue
        if p.status != "ok":
            out.append(base)
            continue
        assert p.stats is not None and p.derived is not None and p.raw is not None  # parse_results checks it
        stats, derived, pred, counters, raw = p.stats, p.derived, p.prediction, p.counters, p.raw
        values = counters.values if counters is not None else {}
        dram_pct = values.get("dram_bw_util_pct_mean")
        matmul_flops, nbytes = derived.matmul_flops, derived.bytes
        if key.scope is Scope.STEP and (matmul_flops is None or nbytes is None):
            try:
                matmul_flops, nbytes = _e2e_costs(spec, cfg.seq_len, key.impl, key.tokens, base.step_tokens,
                                                  cfg.dtype_policy)
            except (ValueError, UnknownNameError):  # a model or implementation this version does not know
                matmul_flops = nbytes = None
        out.append(replace(
            base, median_s=stats.median, samples_s=tuple(raw.samples_s), iqr_s=stats.iqr,
            tokens_per_s=derived.tokens_per_s, matmul_flops=matmul_flops, bytes=nbytes,
            predicted_s=None if pred is None else pred.predicted_s,
            predicted_memory_share=None if pred is None else pred.memory_bound_share,
            roofline_fraction=None if pred is None else pred.achieved_fraction,
            dram_util=dram_pct / 100 if dram_pct is not None else None, dram_gbs=values.get("dram_gbs"),
            throttled=counters is not None and counters.throttled,
            idle_share=None if raw.gpu_time is None else raw.gpu_time.idle_share,
            peak_memory_bytes=raw.peak_memory_bytes))
    return out


def load_points(paths: Iterable[str | Path]) -> list[MeasuredPoint]:
    """The points of every results file, in the order given (raises ResultsError on a bad file)."""
    out: list[MeasuredPoint] = []
    for path in paths:
        out += points_from_doc(load_results(path), str(path))
    return out


def read_points(paths: Iterable[str | Path]) -> list[MeasuredPoint]:
    """Every ok GPU point of a stack tpsbench's models describe (what the expected-time model is fitted to and
    validated on), in file order: repeated measurements of a point in different files are all kept."""
    return [p for p in load_points(paths) if p.ok and p.gpu != "cpu" and is_modelled(p.key.stack)]


def gemm_points(doc: CalibrationDoc, source: str) -> list[MeasuredPoint]:
    """The GEMM shape sweep of a `tpsbench calibrate` file as measured points (scope GEMM, bf16)."""
    out = []
    for g in doc.gemm_sweep or []:
        key = PointKey(model="-", scope=Scope.GEMM, layer="gemm", impl=NO_IMPL, mode=f"{g.m}x{g.n}x{g.k}x{g.groups}",
                       tokens=g.m, global_tokens=None, compiled=False)
        out.append(MeasuredPoint(key=key, source=source, gpu=doc.profile, gpu_name=doc.machine.gpu_name,
                                 policy="bf16", status="ok", median_s=g.median_s, samples_s=tuple(g.samples_s)))
    return out
