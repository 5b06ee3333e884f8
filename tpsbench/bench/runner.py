"""A sweep: plan the points of a run, measure each, write each to the results file as soon as it is done.

A point that runs out of memory is recorded with status ``oom`` and the sweep goes on; any other
exception is recorded as ``error`` with its message. Ctrl-C stops the sweep; every finished point is
already on disk, and the run is marked ``interrupted``.
"""

from __future__ import annotations

import gc
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from tpsbench import __version__
from tpsbench.bench import e2e, micro
from tpsbench.bench.env import git_commit, machine_info
from tpsbench.bench.stats import summarize
from tpsbench.bench.timing import TimingConfig
from tpsbench.costmodel import DTypePolicy
from tpsbench.counters.sampler import DEFAULT_INTERVAL_S, NullSource, Sampler, open_source
from tpsbench.models import ModelSpec
from tpsbench.profiles import GPUProfile
from tpsbench.results import ResultsWriter


@dataclass(frozen=True, slots=True)
class RunConfig:
    model: ModelSpec
    profile: GPUProfile | None
    device: str
    batches: list[int]
    seq_len: int
    impls: list[str]
    mode: str  # micro | e2e | all
    routing: str
    skew: float
    policy: DTypePolicy
    compile_model: bool = False
    global_batch: int | None = None
    micro_timing: TimingConfig = field(default_factory=TimingConfig)
    e2e_timing: TimingConfig = field(default_factory=lambda: TimingConfig(warmup=2, min_reps=5, min_time_s=1.0))
    stages: bool = True
    layers: list[str] | None = None  # micro layers to run (None: all)
    counters: bool = True  # NVML/GPM sampling around every measured window (GPU runs)
    ceilings: str = "spec"  # roofline ceilings of the predictions: spec | measured | calibrated
    calibration: dict[str, object] | None = None  # best ceilings of a calibration file, for "calibrated"
    counter_interval_s: float = DEFAULT_INTERVAL_S
    gpu_time: bool = True  # profile a few extra calls per point for GPU busy/idle time (GPU runs)
    seed: int = 0

    def describe(self) -> dict[str, object]:
        return {
            "model": self.model.name, "gpu_profile": None if self.profile is None else self.profile.name,
            "device": self.device, "batches": self.batches, "seq_len": self.seq_len, "impls": self.impls,
            "mode": self.mode, "routing": self.routing, "skew": self.skew if self.routing == "skewed" else None,
            "dtype_policy": self.policy.name, "compile": self.compile_model, "global_batch": self.global_batch,
            "micro_timing": asdict(self.micro_timing), "e2e_timing": asdict(self.e2e_timing),
            "stages": self.stages, "layers": self.layers, "seed": self.seed, "counters": self.counters,
            "counter_interval_s": self.counter_interval_s, "ceilings": self.ceilings, "gpu_time": self.gpu_time,
            "calibration": None if self.calibration is None else self.calibration.get("path"),
        }


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


def run_config_from_doc(doc: dict[str, object], *, device: str | None = None, reps: int | None = None,
                        min_time: float | None = None, allow_gpu_mismatch: bool = False) -> RunConfig:
    """The configuration a results document was measured with, to measure it again on this machine
    (``tpsbench check`` without ``--current``). Timing can be tightened or loosened; nothing else changes,
    so the two runs measure the same points."""
    from tpsbench.bench.env import DeviceError, resolve_gpu
    from tpsbench.costmodel import get_policy
    from tpsbench.models import get_model
    from tpsbench.nn.moe import DEFAULT_SKEW

    cfg = doc["config"]
    assert isinstance(cfg, dict)
    dev = device or str(cfg.get("device") or "cuda")
    if dev == "cuda" and not torch.cuda.is_available():
        raise DeviceError("the baseline ran on a GPU and none is present: run the check on that GPU, or pass "
                          "--current FILE to compare two results files")
    profile = resolve_gpu("auto", dev)
    base_gpu = cfg.get("gpu_profile")
    if dev == "cuda" and profile is not None and base_gpu and base_gpu != profile.name and not allow_gpu_mismatch:
        raise DeviceError(f"the baseline ran on {base_gpu}, this GPU is {profile.name}: use a baseline of this GPU "
                          "or pass --allow-gpu-mismatch")

    def timing(d: object, fallback: TimingConfig) -> TimingConfig:
        t = TimingConfig(**d) if isinstance(d, dict) else fallback
        if reps or min_time:
            t = replace(t, min_reps=reps or t.min_reps, min_time_s=min_time or t.min_time_s,
                        max_reps=max(t.max_reps, reps or 0))
        return t

    defaults = RunConfig.__dataclass_fields__
    return RunConfig(
        model=get_model(str(cfg["model"])), profile=profile, device=dev, batches=[int(b) for b in cfg["batches"]],
        seq_len=int(cfg["seq_len"]), impls=list(cfg["impls"]), mode=str(cfg["mode"]),
        routing=str(cfg.get("routing") or "learned"), skew=float(cfg.get("skew") or DEFAULT_SKEW),
        policy=get_policy(str(cfg.get("dtype_policy") or ("amp_bf16" if dev == "cuda" else "fp32"))),
        compile_model=bool(cfg.get("compile")), global_batch=cfg.get("global_batch"),  # type: ignore[arg-type]
        micro_timing=timing(cfg.get("micro_timing"), defaults["micro_timing"].default_factory()),  # type: ignore
        e2e_timing=timing(cfg.get("e2e_timing"), defaults["e2e_timing"].default_factory()),  # type: ignore
        stages=bool(cfg.get("stages", True)), layers=cfg.get("layers"),  # type: ignore[arg-type]
        counters=bool(cfg.get("counters", True)), gpu_time=bool(cfg.get("gpu_time", True)),
        counter_interval_s=float(cfg.get("counter_interval_s") or DEFAULT_INTERVAL_S), seed=int(cfg.get("seed") or 0),
    )
