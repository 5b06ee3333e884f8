"""The results schema, version 3: one run document per `tpsbench run`, as typed dataclasses.

A run (:class:`RunDoc`) holds where and with what code it ran (:class:`Machine`, :class:`Provenance`), what it
was asked to measure (:class:`ConfigRecord`) and one :class:`Point` per measured workload: its raw samples and
facts (:class:`Raw`, :class:`GpuTime`), their statistics (:class:`Stats`), what the cost model makes of them
(:class:`Derived`), the roofline's prediction (:class:`PointPrediction`) and the hardware counters read in
their own window (:class:`Counters`). ``results/SCHEMA.md`` is generated from these classes
(``python -m tpsbench.results.schema_doc``; a test fails when it is stale). Version 1 and 2 files are read
through :func:`tpsbench.results.upgrade.upgrade`.
"""

from __future__ import annotations

from enum import StrEnum

from tpsbench.options import DistMode, PointKind, Recompute, RoutingMode, RunMode
from tpsbench.results.model_record import ModelRecord, MoERecord
from tpsbench.results.typed import fld, schema

SCHEMA = "tpsbench.results/3"
SCHEMA_V2 = "tpsbench.results/2"
SCHEMA_V1 = "tpsbench.results/1"


class PointStatus(StrEnum):
    OK = "ok"
    OOM = "oom"
    ERROR = "error"
    SKIPPED = "skipped"  # a training step predicted not to fit the GPU's memory


class RunStatus(StrEnum):
    RUNNING = "running"
    COMPLETE = "complete"
    INTERRUPTED = "interrupted"


POINT_STATUSES = tuple(s.value for s in PointStatus)
RUN_STATUSES = tuple(s.value for s in RunStatus)


@schema
class Stats:
    """Summary statistics of the timed samples (tpsbench.bench.stats: type-7 quantiles)."""

    n: int = fld("timed repetitions")
    median: float = fld("median time of one repetition", "s")
    q1: float = fld("first quartile", "s")
    q3: float = fld("third quartile", "s")
    min: float = fld("fastest repetition", "s")
    max: float = fld("slowest repetition", "s")
    mean: float = fld("mean", "s")
    stdev: float | None = fld("sample standard deviation; null for one sample", "s")
    mad: float = fld("median absolute deviation", "s")
    outliers: list[int] = fld("indices of samples with a modified z-score above 3.5 (flagged, kept)")
    iqr: float = fld("q3 - q1", "s")


@schema
class GpuTime:
    """GPU busy and idle time from the profiler's kernel timeline of a few extra calls (bench/gpu_busy.py)."""

    busy_s: float | None = fld("union of kernel, memcpy and memset intervals per call", "s")
    idle_share: float | None = fld("1 - busy / timed median, clamped at 0", "fraction")
    kernels_per_call: float | None = fld("GPU activities per profiled call")
    profiled_calls: int = fld("calls profiled")
    reason: str | None = fld("why idle_share is null")


@schema
class AllocatorActivity:
    """The CUDA caching allocator during the timed training steps (bench/allocator.py): cache misses that went to
    cudaMalloc, frees, and retries after freeing the cache (each one synchronises the device)."""

    steps: int = fld("timed steps (warm-up included) the counts cover")
    alloc_retries: int = fld("allocations retried after freeing cached blocks (num_alloc_retries)")
    device_allocs: int = fld("cudaMalloc calls (num_device_alloc)")
    device_frees: int = fld("cudaFree calls (num_device_free)")
    ooms: int = fld("out-of-memory errors raised (num_ooms)")
    reserved_peak_bytes: int | None = fld("peak memory reserved by the allocator (reserved_bytes.all.peak)", "B")


@schema
class RowCounts:
    """How an MoE training step's per-expert row counts change from step to step (bench/row_counts.py). An
    implementation with one GEMM per expert (``loop``) sizes each GEMM by its expert's row count, so a count new
    in a step is a GEMM shape that cuBLAS's heuristics and the caching allocator meet for the first time; uniform
    routing repeats its counts, a learned router's move with every optimizer step."""

    steps: int = fld("steps recorded: warm-up, timed, profiled (the last microbatch of each)")
    expert_gemms_per_step: int = fld("MoE layers x experts: per-expert row counts per step")
    distinct_per_step: list[int] = fld("distinct row counts among all layers' experts, step by step")
    new_per_step: list[int] = fld("row counts that no earlier step had, step by step (the first step's are all new)")


@schema
class DistTiming:
    """A point on several ranks (tpsbench/dist/run.py, comm_bench.py): each rank's median time; the slowest rank
    sets the point's time (the collectives wait for it). Tokens are per rank (a training step's per optimizer
    step)."""

    mode: DistMode = fld("the layout")
    world_size: int = fld("ranks (one GPU each on a GPU machine)")
    backend: str = fld("gloo or nccl")
    per_rank_median_s: list[float] = fld("median step time of each rank, by rank", "s")
    max_median_s: float = fld("the slowest rank's median: the step time", "s")
    mean_median_s: float = fld("mean of the ranks' medians", "s")
    straggler: float = fld("max / mean of the ranks' medians (1 = no straggler)")
    tokens_per_s_per_gpu: float = fld("tokens per optimizer step of one rank / the step time", "tokens/s")
    tokens_per_s_total: float = fld("all ranks' tokens per optimizer step / the step time", "tokens/s")
    bytes_sent_per_rank: list[float] | None = fld("communication micro point: bytes each rank sent", "B",
                                                  default=None)
    rows_received_per_rank: list[int] | None = fld("communication micro point: rows each rank received",
                                                   default=None)
    received_max_over_mean: float | None = fld("communication micro point: imbalance of the rows received "
                                               "(1 = even)", default=None)


@schema
class TraceFile:
    """run --trace: the PyTorch profiler's Chrome trace of one repetition (open it in ui.perfetto.dev)."""

    path: str | None = fld("the trace (null: the profiler failed)")
    summary: str | None = fld("the profiler's per-op table beside it", default=None)
    reason: str | None = fld("why the trace or its summary is missing")


@schema
class Raw:
    """What was measured, unprocessed: every timed sample, and facts of the point's run."""

    samples_s: list[float] = fld("every timed repetition, in order", "s")
    warmup: int = fld("untimed warm-up repetitions")
    l2_flushed: bool = fld("the L2 cache was overwritten before every repetition")
    timer: str = fld("cuda_event, perf_counter, or perf_counter_interleaved (a CPU layer point timed in rounds "
                     "with its other modes: one repetition of fwd, bwd and fwd_bwd per round)")
    gpu_time: GpuTime | None = fld("GPU busy/idle time; null on the CPU or when turned off", default=None)
    tokens_per_expert_max: float | None = fld("MoE: most assignments of one expert (all layers: max)", default=None)
    tokens_per_expert_mean: float | None = fld("MoE: mean assignments per expert", default=None)
    tokens_per_expert_max_over_mean: float | None = fld("MoE: load imbalance (1 = balanced)", default=None)
    tokens_per_expert_max_over_mean_per_layer: list[float] | None = fld("training step: imbalance per layer",
                                                                       default=None)
    experts_with_zero_tokens: int | None = fld("MoE layer: experts that got no assignment", default=None)
    grouped_mm_path: str | None = fld("grouped: torch._grouped_mm path (fast, fallback, unavailable)", default=None)
    dropped_fraction: float | None = fld("capacity: share of assignments dropped", "fraction", default=None)
    host_syncs: int | None = fld("GPU->CPU synchronisations in one forward (CUDA sync debug mode)", default=None)
    optimizer_samples_s: list[float] | None = fld("training step: AdamW step timed alone", "s", default=None)
    optimizer_stats: Stats | None = fld("training step: statistics of optimizer_samples_s", default=None)
    peak_memory_bytes: int | None = fld("training step: peak allocated GPU memory", "B", default=None)
    allocator: AllocatorActivity | None = fld("training step: caching-allocator activity over the timed steps",
                                              default=None)
    row_counts: RowCounts | None = fld("MoE training step: how the per-expert row counts change step to step",
                                       default=None)
    accumulation_steps: int | None = fld("training step: microbatches per optimizer step", default=None)
    compiled: bool | None = fld("training step: torch.compile was on", default=None)
    params: int | None = fld("training step: parameters of the model that ran", default=None)
    recipe: dict[str, str] | None = fld("training step of a stack other than tpsbench's: what ran (stack, MoE type, "
                                        "precision, loss, optimizer, compile)", default=None)
    trace: TraceFile | None = fld("run --trace: the Chrome trace of one repetition", default=None)
    dist: DistTiming | None = fld("training step on several ranks (run --dist under torchrun): per-rank timing",
                                  default=None)


@schema
class Derived:
    """Rates computed from the median time and the cost model's counts of what the point ran."""

    tokens_per_s: float = fld("tokens (per optimizer step for a training step) / median", "tokens/s")
    matmul_flops: float | None = fld("cost-model matmul FLOPs of the point (training step: per optimizer step)",
                                     "FLOP", default=None)
    bytes: float | None = fld("cost-model DRAM bytes (the minimum of fused elementwise chains)", "B", default=None)
    achieved_tflops: float | None = fld("matmul_flops / median", "TFLOP/s", default=None)
    achieved_gbs: float | None = fld("bytes / median", "GB/s", default=None)
    intensity: float | None = fld("arithmetic intensity: matmul_flops / bytes (where the point sits on a roofline)",
                                  "FLOP/B", default=None)
    model_flops: float | None = fld("layer: all cost-model FLOPs, elementwise included", "FLOP", default=None)
    optimizer_share: float | None = fld("training step: optimizer step time / step time", "fraction", default=None)
    flops_per_token: dict[str, float] | None = fld("training step: fwd+bwd FLOPs per token by convention "
                                                   "(6N, olmo, exact)", "FLOP/token", default=None)
    mfu: dict[str, float] | None = fld("training step: model FLOPs utilisation by convention against the datasheet "
                                       "peak; null without a GPU profile", "fraction", default=None)


@schema
class OpPrediction:
    op: str = fld("cost-model op name")
    phase: str = fld("fwd, bwd_dgrad, bwd_wgrad or optim")
    bound: str = fld("compute or memory")
    predicted_s: float = fld("roofline time of the op", "s")


@schema
class PointPrediction:
    """The roofline floor of exactly what the point timed, on the run's GPU profile."""

    profile: str = fld("GPU profile")
    ceilings: str = fld("spec, measured or calibrated")
    predicted_s: float = fld("roofline floor of the point (training step: of one optimizer step)", "s")
    memory_bound_share: float | None = fld("share of the floor in memory-bound ops", "fraction")
    achieved_fraction: float = fld("predicted_s / median: the share of the floor reached", "fraction")
    ops: list[OpPrediction] | None = fld("layer: the floor per op", default=None)
    predicted_tokens_per_s: float | None = fld("training step: tokens per optimizer step / predicted_s", "tokens/s",
                                               default=None)


@schema
class CounterWindow:
    """How the counter window ran: the point back to back after its timed repetitions (bench/timing.py)."""

    kind: str = fld("back_to_back, or none when nothing was read")
    reps: int = fld("repetitions in the window")
    elapsed_s: float | None = fld("the window's length", "s")
    per_rep_s: float | None = fld("elapsed_s / reps", "s")
    includes_setup: bool = fld("each repetition included its untimed setup")
    l2_flushed: bool = fld("always false: the window runs without flushes")


@schema
class Counters:
    """NVML/GPM counters over the point's counter window (counters/summary.py)."""

    duration_s: float = fld("sampled time", "s")
    n_basic: int = fld("NVML samples")
    n_gpm: int = fld("GPM intervals used in the means")
    n_gpm_skipped: int = fld("GPM intervals shorter than 20 ms, left out")
    n_gpm_invalid: dict[str, int] = fld("per metric: NaN, infinite or out-of-range values dropped")
    gpm_intervals: list[dict[str, float | str | None]] = fld("raw GPM intervals (start_s, length_s, metrics; NaN "
                                                             "kept as a string)")
    values: dict[str, float | None] = fld("window means and extremes by name (e.g. dram_gbs, sm_clock_mhz_min)")
    reasons: dict[str, str] = fld("why a value is null")
    clock_events: list[str] = fld("NVML clock event reasons seen in the window")
    throttled: bool = fld("a throttling clock event was seen")
    window: CounterWindow | None = fld("how the window ran", default=None)


@schema
class Point:
    """One measured workload: a layer in one mode (micro) or a whole training step (e2e)."""

    kind: PointKind = fld("a layer (micro) or a whole training step (e2e)")
    layer: str = fld("attention, mlp, moe, a bracket, or model (e2e)")
    impl: str | None = fld("MoE implementation or bracket; dense for a dense training step; null otherwise")
    tokens: int = fld("tokens per microbatch", "tokens")
    mode: str = fld("fwd, bwd, fwd_bwd, stage:<name> or train_step")
    label: str = fld("human-readable name of the point")
    routing: RoutingMode | None = fld("the router's mode (MoE models)")
    status: PointStatus = fld("skipped: a training step predicted not to fit the GPU's memory (`run --force` tries "
                              "it)")
    global_tokens: int | None = fld("e2e: tokens per optimizer step", "tokens", default=None)
    error: str | None = fld("oom/error: the exception's message", default=None)
    traceback: str | None = fld("error: the end of the traceback", default=None)
    stats: Stats | None = fld("null unless ok", default=None)
    derived: Derived | None = fld("null unless ok", default=None)
    prediction: PointPrediction | None = fld("null without a GPU profile", default=None)
    counters: Counters | None = fld("null on the CPU or with counters off", default=None)
    raw: Raw | None = fld("null unless ok", default=None)


@schema
class TimingRecord:
    warmup: int = fld("untimed repetitions first")
    min_reps: int = fld("timed repetitions at least")
    min_time_s: float = fld("timed seconds at least", "s")
    max_reps: int = fld("timed repetitions at most")
    flush_l2: bool = fld("overwrite the L2 before each repetition (GPU)", default=True)
    counter_window_s: float = fld("counter window length at least", "s", default=1.0)


@schema
class CalibrationRef:
    """The calibration whose ceilings the predictions used (``--ceilings calibrated``)."""

    path: str = fld("the calibration file")
    bf16_tflops: float | None = fld("its best bf16 matmul", "TFLOP/s", default=None)
    fp32_tflops: float | None = fld("its best fp32 matmul", "TFLOP/s", default=None)
    copy_gbs: float | None = fld("its best large-array copy", "GB/s", default=None)


@schema
class ConfigRecord:
    """What the run was asked to measure (tpsbench.bench.config.RunConfig.describe); enough to measure the same
    points again (`tpsbench check` without --current)."""

    model: str = fld("the model's name")
    model_spec: ModelRecord = fld("the model measured, every dimension (files before version 3: the zoo's)")
    gpu_profile: str | None = fld("GPU profile (null on the CPU)")
    device: str = fld("cuda or cpu")
    batches: list[int] = fld("microbatch sizes", "tokens")
    seq_len: int = fld("sequence length", "tokens")
    impls: list[str] = fld("MoE implementations and brackets asked for")
    mode: RunMode = fld("layers, training steps or both")
    routing: RoutingMode = fld("the router's mode")
    skew: float | None = fld("Zipf exponent of skewed routing")
    dtype_policy: str = fld("amp_bf16, bf16 or fp32")
    compile: bool = fld("torch.compile of training steps")
    global_batch: int | None = fld("tokens per optimizer step (null: one microbatch)", "tokens")
    micro_timing: TimingRecord = fld("timing of layer points")
    e2e_timing: TimingRecord = fld("timing of training steps")
    stages: bool = fld("per-stage MoE timings")
    seed: int = fld("random seed of weights, inputs and routing")
    layers: list[str] | None = fld("micro layers asked for (null: all)", default=None)
    counters: bool = fld("NVML/GPM counters asked for", default=False)
    counter_interval_s: float | None = fld("counter sampling interval", "s", default=None)
    ceilings: str = fld("ceilings of the predictions: spec, measured or calibrated", default="spec")
    gpu_time: bool = fld("GPU idle time asked for", default=False)
    calibration: CalibrationRef | None = fld("the calibration of calibrated ceilings", default=None)
    stack: str = fld("whose modules and training step ran: tpsbench or olmo-core", default="tpsbench")
    dist: DistMode | None = fld("run --dist: the layout (null: one process)", default=None)
    world_size: int | None = fld("run --dist: ranks", default=None)
    ep_size: int | None = fld("run --dist: ranks per expert-parallel group (null: all of them)", default=None)
    shard_size: int | None = fld("run --dist: ranks FSDP shards over, hybrid sharding (null: all of them)",
                                 default=None)
    fsdp_param_dtype: str | None = fld("run --dist: FSDP's unsharded parameters, fp32 or bf16 (mixed precision; "
                                       "null: one process)", default=None)
    recompute: Recompute = fld("activation checkpointing of training steps (full: every block)",
                               default=Recompute.NONE)


@schema
class Machine:
    """Where the run ran (bench/env.py); GPU fields are null on the CPU, NVML fields null with a reason."""

    device: str = fld("cuda or cpu")
    hostname: str = fld("host name")
    python: str = fld("Python version")
    platform: str = fld("OS platform string")
    cpu_count: int | None = fld("logical CPUs")
    torch_threads: int | None = fld("torch's intra-op threads while measuring (CPU runs: 1 unless OMP_NUM_THREADS "
                                    "is set)", default=None)
    load_average: float | None = fld("the 1-minute load average when the run started (runnable processes; above "
                                     "cpu_count the CPU was shared)", default=None)
    torch: str = fld("torch version")
    triton: str | None = fld("triton version")
    tpsbench: str = fld("tpsbench version")
    profile: str | None = fld("GPU profile matched")
    gpu_name: str | None = fld("CUDA device name")
    cuda: str | None = fld("CUDA version torch was built with")
    compute_capability: str | None = fld("major.minor", default=None)
    sm_count: int | None = fld("streaming multiprocessors", default=None)
    gpu_memory_gb: float | None = fld("device memory", "GB", default=None)
    l2_bytes: int | None = fld("L2 cache as the driver reports it", "B", default=None)
    driver: str | None = fld("NVIDIA driver version", default=None)
    sm_clock_mhz: int | None = fld("SM clock when the run started", "MHz", default=None)
    max_sm_clock_mhz: int | None = fld("maximum SM clock", "MHz", default=None)
    mem_clock_mhz: int | None = fld("memory clock when the run started", "MHz", default=None)
    max_mem_clock_mhz: int | None = fld("maximum memory clock", "MHz", default=None)
    power_limit_w: float | None = fld("enforced power limit", "W", default=None)
    nvml: str | None = fld("null when NVML could not be read", default=None)
    nvml_reason: str | None = fld("why NVML could not be read", default=None)
    sm_clock_mhz_reason: str | None = fld("why the SM clock is null", default=None)
    mem_clock_mhz_reason: str | None = fld("why the memory clock is null", default=None)
    power_limit_reason: str | None = fld("why the power limit is null", default=None)


@schema
class Provenance:
    """What code produced the file. The commit is recorded only from a clean tree (tpsbench/, kernels/ and
    pyproject.toml without changes); the content hash of the source files actually imported, always."""

    git_commit: str | None = fld("HEAD of a clean checkout (null: no git, or uncommitted changes to the code)")
    dirty: bool | None = fld("the code had uncommitted changes (null: unknown)")
    source_hash: str | None = fld("sha256 over the imported tpsbench/ and kernels/ source files, each path and "
                                  "its bytes, in path order (null: written before schema version 2)")
    source_files: dict[str, str] = fld("each imported source file (path in the repository) and its sha256, for "
                                       "`tpsbench provenance`", default_factory=dict)
    v1_git_commit: str | None = fld("version 1 files: their git_commit as written (GPU runs named the session's "
                                    "starting commit, not always the code that ran: results/README.md)", default=None)


@schema
class RunDoc:
    """One run of `tpsbench run`: rewritten atomically after every point, so an interrupted sweep keeps what it
    measured."""

    schema: str = fld(f"'{SCHEMA}'")
    tool: str = fld("'tpsbench'")
    tool_version: str = fld("tpsbench version")
    created_utc: str = fld("start, ISO 8601 UTC")
    finished_utc: str | None = fld("end, ISO 8601 UTC (null while running or after a kill)")
    status: RunStatus = fld("complete, or interrupted by the user, or running (still, or killed)")
    provenance: Provenance = fld("the code that ran")
    machine: Machine = fld("where it ran")
    config: ConfigRecord = fld("what was asked for")
    points: list[Point] = fld("the measured points, in order")


ALL_CLASSES: tuple[type, ...] = (RunDoc, Provenance, Machine, ConfigRecord, ModelRecord, MoERecord, TimingRecord,
                                 CalibrationRef, Point,
                                 Stats, Derived, PointPrediction, OpPrediction, Raw, TraceFile, GpuTime, Counters,
                                 CounterWindow, AllocatorActivity, RowCounts, DistTiming)
