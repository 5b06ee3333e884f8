"""A sweep: plan the points of a run, measure each, write each to the results file as soon as it is done.

A point that runs out of memory is recorded with status ``oom`` and the sweep goes on; any other
exception is recorded as ``error`` with its message. Ctrl-C stops the sweep; every finished point is
already on disk, and the run is marked ``interrupted``.
"""

from __future__ import annotations

import gc
import os
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from tpsbench import __version__
from tpsbench.bench import e2e, micro
from tpsbench.bench.config import RunConfig
from tpsbench.bench.env import machine_info
from tpsbench.bench.measurement import Measurement
from tpsbench.bench.stats import summarize
from tpsbench.bench.trace import trace_path
from tpsbench.counters.sampler import NullSource, Sampler, open_source
from tpsbench.estimate.memory import ALLOCATOR_RESERVE, step_memory, usable_bytes
from tpsbench.options import TRAIN_STEP, PointKind
from tpsbench.points import point_label
from tpsbench.results import ResultsWriter
from tpsbench.results.points import point_key
from tpsbench.results.schema import ConfigRecord, Derived, Point, PointPrediction, PointStatus, RunStatus, Stats

Case = micro.MicroCase | e2e.E2ECase
Plan = list[Case]


def plan(cfg: RunConfig) -> Plan:
    spec = cfg.seq_spec
    points: Plan = []
    if cfg.mode.layers:
        points += micro.micro_cases(spec, cfg.impls, cfg.batches, cfg.stack, stages=cfg.stages, layers=cfg.layers)
    if cfg.mode.steps:
        points += e2e.e2e_cases(spec, cfg.impls, cfg.batches, cfg.global_batch, cfg.recompute)
    return points


def planned_point(case: Case, cfg: RunConfig, record: ConfigRecord) -> Point:
    """A case as the results file names it, before it is measured (status ``ok`` until it is)."""
    is_micro = isinstance(case, micro.MicroCase)
    point = Point(kind=PointKind.MICRO if is_micro else PointKind.E2E,
                  layer=case.layer if is_micro else "model", impl=case.impl, tokens=case.tokens,
                  mode=case.mode_name if is_micro else TRAIN_STEP,
                  global_tokens=None if is_micro else case.global_tokens, label="",
                  routing=cfg.routing if cfg.model.moe is not None else None, status=PointStatus.OK)
    return replace(point, label=point_label(point_key(record, point)))


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _free(device: torch.device) -> None:
    """Give a GPU's memory back between points (on the CPU a full collection would cost more than a tiny point)."""
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()


def execute(cfg: RunConfig, out: Path, on_point: Callable[[int, int, Point], None] | None = None, *,
            overwrite: bool = False) -> ResultsWriter:
    """Measure every planned point; the results file is valid after each one. ``out`` must not exist unless
    ``overwrite``, and no other run may be writing it."""
    device = torch.device(cfg.device)
    threads = torch.get_num_threads()
    if cfg.device == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        # On a shared CPU a second intra-op thread stalls every op whenever either thread is descheduled, so
        # medians swing with the load (docs/measuring.md); one thread keeps a point's modes comparable.
        torch.set_num_threads(1)
    try:
        return _execute(cfg, out, device, on_point, overwrite=overwrite)
    finally:
        torch.set_num_threads(threads)


def _execute(cfg: RunConfig, out: Path, device: torch.device, on_point: Callable[[int, int, Point], None] | None,
             *, overwrite: bool) -> ResultsWriter:
    record = cfg.describe()
    writer = ResultsWriter(out, config=record, machine=machine_info(cfg.device, cfg.profile),
                           tool_version=__version__, overwrite=overwrite)
    cases = plan(cfg)
    sampler = make_sampler(cfg)
    bench = micro.MicroBench(cfg.seq_spec, device=device, policy=cfg.policy, routing=cfg.routing, skew=cfg.skew,
                             timing=cfg.micro_timing, stack=cfg.stack, seed=cfg.seed, window=sampler,
                             gpu_time=cfg.gpu_time)
    bench.interleave(cases)
    try:
        for i, case in enumerate(cases):
            point = _measure(case, planned_point(case, cfg, record), bench, cfg, device, sampler)
            writer.add(point)
            if on_point is not None:
                on_point(i + 1, len(cases), point)
    except KeyboardInterrupt:
        writer.finish(RunStatus.INTERRUPTED)
        raise
    else:
        writer.finish(RunStatus.COMPLETE)
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


def _memory_skip(case: e2e.E2ECase, cfg: RunConfig) -> str | None:
    """Why a training step is not tried (the memory model says it does not fit this GPU), or None."""
    if cfg.force or cfg.device != "cuda" or cfg.profile is None or not cfg.stack.modelled:
        return None
    spec = cfg.seq_spec
    w = e2e.cost_workload(spec, case, cfg.policy, spec.moe.capacity_factor if spec.moe else None)
    mem = step_memory(w, compiled=cfg.compile_model, overhead_fraction=ALLOCATOR_RESERVE.value)
    usable = usable_bytes(cfg.profile.memory_gb.value)
    if mem.fits(usable):
        return None
    return (f"predicted not to fit: {mem.peak_bytes / 1e9:.1f} GB peak + {mem.overhead_bytes / 1e9:.1f} GB allocator "
            f"reserve > {usable / 1e9:.1f} GB usable on {cfg.profile.name}; skipped (run --force to try it)")


def _measure(case: Case, planned: Point, bench: micro.MicroBench, cfg: RunConfig, device: torch.device,
             sampler: Sampler | None) -> Point:
    spec = cfg.seq_spec
    cap = spec.moe.capacity_factor if spec.moe else None
    trace = None if cfg.trace_dir is None else trace_path(cfg.trace_dir, planned.label)
    try:
        if isinstance(case, micro.MicroCase):
            measured = bench.run(case, trace=trace)
            stats = summarize(measured.raw.samples_s)
            ops = micro.case_ops(spec, case, cfg.policy, "flash" if device.type == "cuda" else "math", cap)
            derived, prediction = micro.derived_metrics(ops, case.tokens, stats.median, cfg.profile, cfg.policy,
                                                        cfg.ceilings, cfg.calibration)
        else:
            if (skip := _memory_skip(case, cfg)) is not None:
                return replace(planned, status=PointStatus.SKIPPED, error=skip)
            measured = e2e.run_e2e(spec, case, device=device, policy=cfg.policy, routing=cfg.routing, skew=cfg.skew,
                                   timing=cfg.e2e_timing, stack=cfg.stack, compile_model=cfg.compile_model,
                                   seed=cfg.seed, window=sampler, measure_idle=cfg.gpu_time, trace=trace)
            stats = summarize(measured.raw.samples_s)
            assert measured.raw.optimizer_stats is not None
            derived, prediction = e2e.e2e_metrics(spec, case, stats.median, measured.raw.optimizer_stats.median,
                                                  cfg.policy, cfg.profile, cap, cfg.ceilings, cfg.calibration)
        return _ok(planned, measured, stats, derived, prediction)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # recorded, and the sweep goes on
        status = PointStatus.OOM if _is_oom(exc) else PointStatus.ERROR
        return replace(planned, status=status, error=f"{type(exc).__name__}: {exc}".strip()[:2000],
                       traceback=traceback.format_exc(limit=6)[-4000:] if status is PointStatus.ERROR else None)
    finally:
        _free(device)


def _ok(planned: Point, measured: Measurement, stats: Stats, derived: Derived, prediction: PointPrediction | None
        ) -> Point:
    return replace(planned, status=PointStatus.OK, stats=stats, derived=derived, prediction=prediction,
                   counters=measured.counters, raw=measured.raw)
