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
from tpsbench.bench.env import git_commit, machine_info
from tpsbench.bench.stats import summarize
from tpsbench.counters.sampler import NullSource, Sampler, open_source
from tpsbench.models import ModelSpec
from tpsbench.results import ResultsWriter

Plan = list[micro.MicroCase | e2e.E2ECase]


def plan(cfg: RunConfig) -> Plan:
    spec = _seq_spec(cfg)
    points: Plan = []
    if cfg.mode in ("micro", "all"):
        points += micro.micro_cases(spec, cfg.impls, cfg.batches, stages=cfg.stages, layers=cfg.layers)
    if cfg.mode in ("e2e", "all"):
        points += e2e.e2e_cases(spec, cfg.impls, cfg.batches, cfg.global_batch)
    return points


def _seq_spec(cfg: RunConfig) -> ModelSpec:
    return replace(cfg.model, seq_len=cfg.seq_len)


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def execute(cfg: RunConfig, out: Path, on_point: Callable[[int, int, dict[str, object]], None] | None = None
            ) -> ResultsWriter:
    """Measure every planned point; the results file is valid after each one."""
    spec = _seq_spec(cfg)
    device = torch.device(cfg.device)
    writer = ResultsWriter(out, config=cfg.describe(), machine=machine_info(cfg.device, cfg.profile),
                           git_commit=git_commit(), tool_version=__version__)
    points = plan(cfg)
    sampler = make_sampler(cfg)
    bench = micro.MicroBench(spec, device=device, policy=cfg.policy, routing=cfg.routing, skew=cfg.skew,
                             timing=cfg.micro_timing, profile=cfg.profile, seed=cfg.seed, window=sampler,
                             gpu_time=cfg.gpu_time)
    cap = spec.moe.capacity_factor if spec.moe else None
    try:
        for i, case in enumerate(points):
            record = _measure(case, spec, bench, cfg, device, cap, sampler)
            writer.add(record)
            if on_point is not None:
                on_point(i + 1, len(points), record)
    except KeyboardInterrupt:
        writer.finish("interrupted")
        raise
    finally:
        if sampler is not None:
            sampler.source.close()
    writer.finish("complete")
    return writer


def make_sampler(cfg: RunConfig) -> Sampler | None:
    """A counter sampler for GPU runs; on the CPU, or with counters off, every point's counters are null."""
    if not cfg.counters:
        return None
    source = open_source() if cfg.device == "cuda" else NullSource("CPU run: no GPU counters")
    bandwidth = cfg.profile.mem_bandwidth_gbs.value if cfg.profile is not None else None
    return Sampler(source, interval_s=cfg.counter_interval_s, bandwidth_gbs=bandwidth)


def _measure(case: micro.MicroCase | e2e.E2ECase, spec: ModelSpec, bench: micro.MicroBench, cfg: RunConfig,
             device: torch.device, cap: float | None, sampler: Sampler | None) -> dict[str, object]:
    record: dict[str, object]
    if isinstance(case, micro.MicroCase):
        record = {"kind": "micro", "layer": case.layer, "impl": case.impl, "tokens": case.tokens, "mode": case.mode,
                  "label": case.label}
    else:
        record = {"kind": "e2e", "layer": "model", "impl": case.impl, "tokens": case.tokens, "mode": "train_step",
                  "global_tokens": case.global_tokens, "label": case.label}
    record["routing"] = cfg.routing if spec.moe is not None else None
    try:
        if isinstance(case, micro.MicroCase):
            raw = bench.run(case)
            stats = summarize(raw["samples_s"])  # type: ignore[arg-type]
            ops = micro.case_ops(spec, case, cfg.policy, "flash" if device.type == "cuda" else "math", cap)
            derived, prediction = micro.derived_metrics(ops, case.tokens, stats.median, cfg.profile, cfg.policy,
                                                        cfg.ceilings, cfg.calibration)
        else:
            raw = e2e.run_e2e(spec, case, device=device, policy=cfg.policy, routing=cfg.routing, skew=cfg.skew,
                              timing=cfg.e2e_timing, profile=cfg.profile, compile_model=cfg.compile_model,
                              seed=cfg.seed, window=sampler, measure_idle=cfg.gpu_time)
            stats = summarize(raw["samples_s"])  # type: ignore[arg-type]
            opt_stats = summarize(raw["optimizer_samples_s"])  # type: ignore[arg-type]
            raw["optimizer_stats"] = opt_stats.to_dict()
            derived, prediction = e2e.e2e_metrics(spec, case, stats.median, opt_stats.median, cfg.policy,
                                                  cfg.profile, cap, cfg.ceilings, cfg.calibration)
        window, window_info = raw.pop("window", None), raw.pop("window_info", None)
        counters = window.to_dict() if window is not None else None
        if counters is not None:
            counters["window"] = window_info  # back-to-back repetitions after the timed ones (timing.py)
        record.update({"status": "ok", "stats": stats.to_dict(), "derived": derived, "prediction": prediction,
                       "counters": counters, "raw": raw})
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # recorded, and the sweep goes on
        status = "oom" if _is_oom(exc) else "error"
        record.update({"status": status, "error": f"{type(exc).__name__}: {exc}".strip()[:2000],
                       "traceback": traceback.format_exc(limit=6)[-4000:] if status == "error" else None,
                       "stats": None, "derived": None, "prediction": None, "counters": None, "raw": None})
    finally:
        _free()
    return record
