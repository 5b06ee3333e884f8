"""A sweep: plan the points of a run, measure each, write each to the results file as soon as it is done.

A point that runs out of memory is recorded with status ``oom`` and the sweep goes on; any other
exception is recorded as ``error`` with its message. Ctrl-C stops the sweep; every finished point is
already on disk, and the run is marked ``interrupted``.
"""

from __future__ import annotations

import gc
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from tpsbench import __version__
from tpsbench.bench import e2e, micro
from tpsbench.bench.config import RunConfig
from tpsbench.bench.env import machine_info
from tpsbench.bench.stats import summarize
from tpsbench.bench.trace import trace_path
from tpsbench.counters.sampler import NullSource, Sampler, open_source
from tpsbench.estimate.memory import ALLOCATOR_RESERVE, step_memory, usable_bytes
from tpsbench.models import ModelSpec
from tpsbench.results import ResultsWriter, finite, from_dict
from tpsbench.results.schema import Counters, Point, Raw, Stats

Plan = list[micro.MicroCase | e2e.E2ECase]


def plan(cfg: RunConfig) -> Plan:
    spec = _seq_spec(cfg)
    points: Plan = []
    if cfg.mode in ("micro", "all"):
        points += micro.micro_cases(spec, cfg.impls, cfg.batches, stages=cfg.stages, layers=cfg.layers,
                                    stack=cfg.stack)
    if cfg.mode in ("e2e", "all"):
        points += e2e.e2e_cases(spec, cfg.impls, cfg.batches, cfg.global_batch, cfg.recompute)
    return points


def _seq_spec(cfg: RunConfig) -> ModelSpec:
    return replace(cfg.model, seq_len=cfg.seq_len)


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def execute(cfg: RunConfig, out: Path, on_point: Callable[[int, int, Point], None] | None = None, *,
            overwrite: bool = False) -> ResultsWriter:
    """Measure every planned point; the results file is valid after each one. ``out`` must not exist unless
    ``overwrite``, and no other run may be writing it."""
    spec = _seq_spec(cfg)
    device = torch.device(cfg.device)
    writer = ResultsWriter(out, config=cfg.describe(), machine=machine_info(cfg.device, cfg.profile),
                           tool_version=__version__, overwrite=overwrite)
    points = plan(cfg)
    sampler = make_sampler(cfg)
    bench = micro.MicroBench(spec, device=device, policy=cfg.policy, routing=cfg.routing, skew=cfg.skew,
                             timing=cfg.micro_timing, profile=cfg.profile, seed=cfg.seed, window=sampler,
                             gpu_time=cfg.gpu_time, stack=cfg.stack)
    cap = spec.moe.capacity_factor if spec.moe else None
    try:
        for i, case in enumerate(points):
            point = _measure(case, spec, bench, cfg, device, cap, sampler)
            writer.add(point)
            if on_point is not None:
                on_point(i + 1, len(points), point)
    except KeyboardInterrupt:
        writer.finish("interrupted")
        raise
    else:
        writer.finish("complete")
    finally:
        if sampler is not None:
            sampler.source.close()
        writer.close()  # the lock, whatever happened (finish() has released it already)
    return writer


def make_sampler(cfg: RunConfig) -> Sampler | None:
    """A counter sampler for GPU runs; on the CPU, or with counters off, every point's counters are null."""
    if not cfg.counters:
        return None
    source = open_source() if cfg.device == "cuda" else NullSource("CPU run: no GPU counters")
    bandwidth = cfg.profile.mem_bandwidth_gbs.value if cfg.profile is not None else None
    return Sampler(source, interval_s=cfg.counter_interval_s, bandwidth_gbs=bandwidth)


def _memory_skip(case: e2e.E2ECase, spec: ModelSpec, cfg: RunConfig, cap: float | None) -> str | None:
    """Why a training step is not tried (the memory model says it does not fit this GPU), or None."""
    if cfg.force or cfg.device != "cuda" or cfg.profile is None or cfg.stack != "tpsbench":
        return None
    w = e2e.cost_workload(spec, case, cfg.policy, cap)
    mem = step_memory(w, compiled=cfg.compile_model, overhead_fraction=ALLOCATOR_RESERVE.value)
    usable = usable_bytes(cfg.profile.memory_gb.value)
    if mem.fits(usable):
        return None
    return (f"predicted not to fit: {mem.peak_bytes / 1e9:.1f} GB peak + {mem.overhead_bytes / 1e9:.1f} GB allocator "
            f"reserve > {usable / 1e9:.1f} GB usable on {cfg.profile.name}; skipped (run --force to try it)")


def _measure(case: micro.MicroCase | e2e.E2ECase, spec: ModelSpec, bench: micro.MicroBench, cfg: RunConfig,
             device: torch.device, cap: float | None, sampler: Sampler | None) -> Point:
    is_micro = isinstance(case, micro.MicroCase)
    ident = {"kind": "micro" if is_micro else "e2e", "layer": case.layer if is_micro else "model",
             "impl": case.impl, "tokens": case.tokens, "mode": case.mode if is_micro else "train_step",
             "global_tokens": None if is_micro else case.global_tokens, "label": case.label,
             "routing": cfg.routing if spec.moe is not None else None}
    trace = None if cfg.trace_dir is None else trace_path(cfg.trace_dir, f"{spec.name}-{case.label}")
    try:
        if not is_micro and (skip := _memory_skip(case, spec, cfg, cap)) is not None:
            return Point(**ident, status="skipped", error=skip)
        if isinstance(case, micro.MicroCase):
            raw = bench.run(case, trace=trace)
            stats = summarize(raw["samples_s"])
            ops = micro.case_ops(spec, case, cfg.policy, "flash" if device.type == "cuda" else "math", cap)
            derived, prediction = micro.derived_metrics(ops, case.tokens, stats.median, cfg.profile, cfg.policy,
                                                        cfg.ceilings, cfg.calibration)
        else:
            raw = e2e.run_e2e(spec, case, device=device, policy=cfg.policy, routing=cfg.routing, skew=cfg.skew,
                              timing=cfg.e2e_timing, profile=cfg.profile, compile_model=cfg.compile_model,
                              seed=cfg.seed, window=sampler, measure_idle=cfg.gpu_time, stack=cfg.stack,
                              trace=trace)
            stats = summarize(raw["samples_s"])
            opt_stats = summarize(raw["optimizer_samples_s"])
            raw["optimizer_stats"] = opt_stats.to_dict()
            derived, prediction = e2e.e2e_metrics(spec, case, stats.median, opt_stats.median, cfg.policy,
                                                  cfg.profile, cap, cfg.ceilings, cfg.calibration)
        window, window_info = raw.pop("window", None), raw.pop("window_info", None)
        counters = None
        if window is not None:  # read in their own window, back to back after the timed repetitions (timing.py)
            counters = from_dict(Counters, finite({**window.to_dict(), "window": window_info}), "counters")
        # measured values become typed records here; a NaN (JSON has none) is unknown: null
        return Point(**ident, status="ok", stats=from_dict(Stats, finite(stats.to_dict()), "stats"),
                     derived=derived, prediction=prediction, counters=counters,
                     raw=from_dict(Raw, finite(raw), "raw"))
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # recorded, and the sweep goes on
        status = "oom" if _is_oom(exc) else "error"
        return Point(**ident, status=status, error=f"{type(exc).__name__}: {exc}".strip()[:2000],
                     traceback=traceback.format_exc(limit=6)[-4000:] if status == "error" else None)
    finally:
        _free()
