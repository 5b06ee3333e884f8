"""What a run measures (:class:`RunConfig`), and the policy that turns a user's options into one: defaults per
device (batch, timing), the stack's own choices (dtype policy, implementations), validation with one-line errors
(the checks `predict` shares live in tpsbench.options and tpsbench.roofline), and the round trip through a
results file's ``config`` block (``describe`` / ``from_doc``), which `tpsbench check` uses to measure a baseline's
points again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from tpsbench.bench.env import NO_GPU, DeviceError, resolve_gpu
from tpsbench.bench.protocol import TimingConfig
from tpsbench.costmodel import DTypePolicy, get_policy
from tpsbench.counters.sampler import DEFAULT_INTERVAL_S
from tpsbench.errors import closest_choices_message
from tpsbench.impls import BRACKETS, get_impl, is_bracket
from tpsbench.models import USERS_MICROBATCH_TOKENS, ModelSpec, get_model
from tpsbench.options import (
    DEFAULT_SKEW,
    OptionError,
    Recompute,
    RoutingMode,
    RunMode,
    check_global_batch,
    check_impl_applies,
    choice,
    parse_batches,
)
from tpsbench.profiles import GPUProfile, gpu_label
from tpsbench.results.calibration import calibration_for
from tpsbench.results.model_record import model_record, model_spec
from tpsbench.results.schema import CalibrationRef, ConfigRecord, RunDoc, TimingRecord
from tpsbench.roofline import CeilingSource
from tpsbench.stacks import Stack, get_stack

LAYER_CHOICES = ("attention", "mlp", "moe", *BRACKETS)
# Timing per kind of point and device: a layer is timed for >= 0.5 s (>= 10 reps) on a GPU; a training step,
# seconds each, for >= 1 s (>= 5 reps). CPU runs check the pipeline on small models: kept short.
MICRO_TIMING = {"cuda": TimingConfig(), "cpu": TimingConfig(warmup=1, min_reps=5, min_time_s=0.05)}
E2E_TIMING = {"cuda": TimingConfig(warmup=2, min_reps=5, min_time_s=1.0), "cpu": TimingConfig(1, 3, 0.1)}
CPU_BATCH_SEQUENCES = 4  # the CPU's default microbatch: 4 sequences of the model's length


class ConfigError(OptionError):
    """Options that do not make a run (printed as one line, exit 2)."""


def _layers(layers: str | None, spec: ModelSpec) -> list[str] | None:
    """--layers, each one the model has: attention, and mlp (dense) or moe and its brackets (MoE)."""
    if not layers:
        return None
    chosen = [name.strip() for name in layers.split(",") if name.strip()]
    present = ["attention", *(("moe", *BRACKETS) if spec.is_moe else ("mlp",))]
    for name in chosen:
        if name not in LAYER_CHOICES:
            raise ConfigError(closest_choices_message("layer", name, list(LAYER_CHOICES)))
        if name not in present:
            kind = "an MoE model (its FFN is layer moe)" if spec.is_moe else "dense (its FFN is layer mlp)"
            raise ConfigError(f"--layers {name}: {spec.name} is {kind}; choose from {', '.join(present)}")
    if not chosen:
        raise ConfigError(f"--layers '{layers}' names no layer; choose from {', '.join(present)}")
    return chosen


def _check_compile(compile_model: bool, impls: list[str], policy: DTypePolicy) -> None:
    if not compile_model or policy.compute_bytes == 2:
        return
    for name in impls:
        if not is_bracket(name) and get_impl(name).compile_needs_bf16:
            raise ConfigError(f"--compile with --impl {name} needs bf16 operands (torch.compile accepts "
                              f"torch._grouped_mm only in bf16) and --dtype {policy.name} computes in fp32: drop "
                              f"--compile, or use --dtype amp_bf16 or bf16 on a GPU")


def _timing(base: TimingConfig, reps: int | None, min_time: float | None, window_s: float | None) -> TimingConfig:
    t = base
    if reps or min_time:
        t = replace(t, min_reps=reps or t.min_reps, min_time_s=min_time or t.min_time_s,
                    max_reps=max(t.max_reps, reps or 0))
    return t if window_s is None else replace(t, counter_window_s=window_s)


@dataclass(frozen=True, slots=True)
class RunConfig:
    model: ModelSpec
    profile: GPUProfile | None
    device: str
    batches: list[int]
    seq_len: int
    impls: list[str]
    mode: RunMode
    routing: RoutingMode
    skew: float
    policy: DTypePolicy
    stack: Stack
    compile_model: bool = False
    global_batch: int | None = None
    micro_timing: TimingConfig = field(default_factory=lambda: MICRO_TIMING["cuda"])
    e2e_timing: TimingConfig = field(default_factory=lambda: E2E_TIMING["cuda"])
    stages: bool = True
    layers: list[str] | None = None  # micro layers to run (None: all)
    counters: bool = True  # NVML/GPM sampling around every measured window (GPU runs)
    ceilings: CeilingSource = CeilingSource.SPEC  # roofline ceilings of the predictions
    calibration: CalibrationRef | None = None  # best ceilings of a calibration file (with its path)
    counter_interval_s: float = DEFAULT_INTERVAL_S
    gpu_time: bool = True  # profile a few extra calls per point for GPU busy/idle time (GPU runs)
    seed: int = 0
    force: bool = False  # try training steps predicted not to fit the GPU's memory
    trace_dir: Path | None = None  # write the profiler's Chrome trace of one repetition per point there
    recompute: Recompute = Recompute.NONE  # activation checkpointing of training steps

    @property
    def gpu_label(self) -> str:
        return gpu_label(self.device, None if self.profile is None else self.profile.name)

    @property
    def seq_spec(self) -> ModelSpec:
        """The model at the run's sequence length."""
        return replace(self.model, seq_len=self.seq_len)

    def default_out(self, results_dir: Path = Path("results")) -> Path:
        from tpsbench.results import default_path

        return default_path(results_dir, self.gpu_label, self.model.name)

    def describe(self) -> ConfigRecord:
        """The results file's ``config`` block: every field, so that :meth:`from_doc` restores this config."""
        return ConfigRecord(
            model=self.model.name, model_spec=model_record(self.model),
            gpu_profile=None if self.profile is None else self.profile.name,
            device=self.device, batches=list(self.batches), seq_len=self.seq_len, impls=list(self.impls),
            mode=self.mode, routing=self.routing, skew=self.skew if self.routing is RoutingMode.SKEWED else None,
            dtype_policy=self.policy.name, compile=self.compile_model, global_batch=self.global_batch,
            micro_timing=TimingRecord(**asdict(self.micro_timing)), e2e_timing=TimingRecord(**asdict(self.e2e_timing)),
            stages=self.stages, layers=None if self.layers is None else list(self.layers), seed=self.seed,
            counters=self.counters, counter_interval_s=self.counter_interval_s, ceilings=self.ceilings.value,
            gpu_time=self.gpu_time, stack=self.stack.name, recompute=self.recompute, calibration=self.calibration)

    @classmethod
    def from_options(
        cls, *, model: str, device: str | None, cuda_available: bool, gpu: str = "auto", batch: str | None = None,
        seq: int | None = None, impl: str | None = None, mode: str = "all", routing: str = "learned",
        skew: float = DEFAULT_SKEW, dtype: str | None = None, compile_model: bool = False,
        global_batch: int | None = None, stages: bool = True, layers: str | None = None, reps: int | None = None,
        min_time: float | None = None, ceilings: str = "spec", calibration: str | None = None,
        counters: bool = True, counter_interval_s: float = DEFAULT_INTERVAL_S, counter_window_s: float | None = None,
        gpu_time: bool = True, stack: str = "tpsbench", force: bool = False, trace_dir: str | None = None,
        recompute: str = "none",
    ) -> RunConfig:
        """A run from `tpsbench run`'s options, each default decided here and nowhere else."""
        spec = get_model(model)
        dev = device or ("cuda" if cuda_available else None)
        if dev is None:
            raise DeviceError(NO_GPU)
        profile = resolve_gpu(gpu, dev)
        seq_len = seq or spec.seq_len
        if seq_len > spec.seq_len:
            raise ConfigError(f"--seq {seq_len} is longer than {spec.name}'s sequence length {spec.seq_len} (the "
                              f"attention square and RoPE tables grow with it): give --seq {spec.seq_len} or less")
        default_batch = USERS_MICROBATCH_TOKENS if dev == "cuda" else CPU_BATCH_SEQUENCES * seq_len
        batches = parse_batches(batch or str(default_batch), seq_len)
        run_mode, ac = choice(RunMode, mode, "--mode"), choice(Recompute, recompute, "--ac")
        chosen = get_stack(stack)
        check_impl_applies(spec.name, spec.is_moe, impl)
        policy, impls = chosen.run_choices(spec, dev, dtype, impl)
        check_global_batch(global_batch, batches)
        source = CeilingSource.parse(ceilings)
        if source is not CeilingSource.SPEC and profile is None:
            raise ConfigError("--ceilings applies to GPU predictions; a CPU run has none")
        _check_compile(compile_model, impls, policy)
        if ac is not Recompute.NONE and not chosen.supports_recompute:
            raise ConfigError(f"--ac {ac} checkpoints tpsbench's own blocks; drop it with --stack {chosen.name}")
        if ac is not Recompute.NONE and not run_mode.steps:
            raise ConfigError(f"--ac {ac} applies to training steps; use --mode e2e or all")
        return cls(
            model=spec, profile=profile, device=dev, batches=batches, seq_len=seq_len, impls=impls, mode=run_mode,
            routing=choice(RoutingMode, routing, "--routing"), skew=skew, policy=policy, stack=chosen,
            compile_model=compile_model, global_batch=global_batch,
            micro_timing=_timing(MICRO_TIMING[dev], reps, min_time, counter_window_s),
            e2e_timing=_timing(E2E_TIMING[dev], reps, min_time, counter_window_s), stages=stages,
            layers=_layers(layers, spec), counters=counters, ceilings=source,
            calibration=calibration_for(source, calibration, profile), counter_interval_s=counter_interval_s,
            gpu_time=gpu_time, force=force, trace_dir=None if trace_dir is None else Path(trace_dir), recompute=ac,
        )

    @classmethod
    def from_doc(cls, cfg: ConfigRecord, *, profile: GPUProfile | None, device: str | None = None,
                 reps: int | None = None, min_time: float | None = None) -> RunConfig:
        """The configuration a results file's ``config`` block describes, on ``device`` (default: its own) and
        ``profile`` (this machine's GPU). Timing can be tightened or loosened; nothing else changes, so the two
        runs measure the same points."""
        def timing(t: TimingRecord) -> TimingConfig:
            return _timing(TimingConfig(**asdict(t)), reps, min_time, None)

        calibration = cfg.calibration
        if calibration is not None and calibration.bf16_tflops is None and calibration.copy_gbs is None:
            calibration = calibration_for("calibrated", calibration.path, profile)  # version 1 kept only the path
        return cls(
            model=model_spec(cfg.model_spec, "config.model_spec"), profile=profile, device=device or cfg.device,
            batches=list(cfg.batches),
            seq_len=cfg.seq_len, impls=list(cfg.impls), mode=cfg.mode, routing=cfg.routing,
            skew=cfg.skew or DEFAULT_SKEW, policy=get_policy(cfg.dtype_policy), stack=get_stack(cfg.stack),
            compile_model=cfg.compile, global_batch=cfg.global_batch, micro_timing=timing(cfg.micro_timing),
            e2e_timing=timing(cfg.e2e_timing), stages=cfg.stages,
            layers=None if cfg.layers is None else list(cfg.layers), counters=cfg.counters, gpu_time=cfg.gpu_time,
            ceilings=CeilingSource.parse(cfg.ceilings), calibration=calibration,
            counter_interval_s=cfg.counter_interval_s or DEFAULT_INTERVAL_S, seed=cfg.seed, recompute=cfg.recompute,
        )


def rerun_config(doc: RunDoc, *, device: str | None, cuda_available: bool, reps: int | None = None,
                 min_time: float | None = None, allow_gpu_mismatch: bool = False) -> RunConfig:
    """The configuration a results document was measured with, to measure it again on this machine
    (``tpsbench check`` without ``--current``). The device is checked before anything is measured."""
    cfg = doc.config
    dev = device or cfg.device
    if dev == "cuda" and not cuda_available:
        raise DeviceError("the baseline ran on a GPU and none is present: run the check on that GPU, or pass "
                          "--current FILE to compare two results files")
    profile = resolve_gpu("auto", dev)
    base, here = gpu_label(cfg.device, cfg.gpu_profile), gpu_label(dev, None if profile is None else profile.name)
    if base != here and not allow_gpu_mismatch:  # checked before anything is measured
        raise DeviceError(f"the baseline ran on {base}, this run would be on {here}: times are not comparable "
                          f"across devices; use a baseline of {here}, or pass --allow-gpu-mismatch")
    return RunConfig.from_doc(cfg, profile=profile, device=dev, reps=reps, min_time=min_time)
