"""`tpsbench calibrate`: the present GPU's own ceilings, measured.

* Matmul TFLOP/s for bf16, fp16, tf32 and fp32 over a sweep of shapes (``torch.matmul``, random inputs, L2
  flushed); the best rate and the shape that reached it are reported per dtype.
* Memory bandwidth for copy (``b = a``, 2 N words) and triad (``a = b + s*c``, 3 N words), counting bytes
  read plus written, with torch and with CuPy raw kernels (16-byte vector accesses, grid-stride loop), at
  1 GiB per array (far above any L2) and separately at an L2-resident size (4 MiB per array, no flush, the
  kernel launched L2_CALLS_PER_SAMPLE times from one CUDA graph between the events: one small copy alone times
  the launch, not the copy; docs/measuring.md).
* The counter sampler's overhead: the counter window (timing.counter_window) of three workloads (a
  compute-bound matmul, a DRAM-bound copy, a launch-bound stream of tiny kernels) with and without sampling,
  in A-B-B-A order so a drift in clocks or temperature cancels; the overhead is the median of the paired
  ratios.

Results go to ``results/calibration/<time>-<gpu>.json`` and feed ``--ceilings calibrated``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from tpsbench.bench.calibrate_sweeps import gemm_sweep, launch_sweep
from tpsbench.bench.shape_churn import shape_churn
from tpsbench.bench.stats import summarize
from tpsbench.bench.timing import TimingConfig, time_fn
from tpsbench.counters.sampler import Sampler, open_source
from tpsbench.profiles import GPUProfile
from tpsbench.results.calibration import (
    SCHEMA,
    BandwidthSize,
    CalibrationDoc,
    CalibrationTiming,
    MatmulCeiling,
    MatmulPoint,
    OverheadPairs,
    SamplerOverhead,
    StreamLibrary,
    StreamResult,
    best_ceilings,
)

MATMUL_DTYPES: dict[str, tuple[torch.dtype, bool]] = {  # name -> (dtype, allow TF32)
    "bf16": (torch.bfloat16, False),
    "fp16": (torch.float16, False),
    "tf32": (torch.float32, True),
    "fp32": (torch.float32, False),
}
MATMUL_SHAPES = [(4096, 4096, 4096), (8192, 8192, 8192), (16384, 8192, 8192), (8192, 8192, 16384),
                 (16384, 16384, 16384)]
QUICK_SHAPES = [(4096, 4096, 4096), (8192, 8192, 8192)]
LARGE_ARRAY_BYTES = 1 << 30
L2_ARRAY_BYTES = 4 << 20
L2_CALLS_PER_SAMPLE = 100
OVERHEAD_PAIRS = 4


def matmul_tflops(m: int, n: int, k: int, seconds: float) -> float:
    return 2.0 * m * n * k / seconds / 1e12


def stream_gbs(words: int, word_bytes: int, arrays_touched: int, seconds: float) -> float:
    """GB/s counting bytes read plus written: copy touches 2 arrays, triad 3."""
    return words * word_bytes * arrays_touched / seconds / 1e9


def _median(timed_samples: list[float]) -> float:
    return summarize(timed_samples).median


def calibrate_matmul(device: torch.device, timing: TimingConfig, shapes: list[tuple[int, int, int]],
                     dtypes: list[str]) -> dict[str, MatmulCeiling]:
    out: dict[str, MatmulCeiling] = {}
    previous_tf32 = torch.backends.cuda.matmul.allow_tf32
    try:
        for name in dtypes:
            dtype, tf32 = MATMUL_DTYPES[name]
            torch.backends.cuda.matmul.allow_tf32 = tf32
            points = []
            for m, n, k in shapes:
                if name == "fp32" and m * n * k > 8192 ** 3:
                    continue  # CUDA-core fp32 at 16k^3 takes seconds per repetition; the rate is flat by 8k
                a = torch.randn(m, k, device=device, dtype=dtype)
                b = torch.randn(k, n, device=device, dtype=dtype)
                timed = time_fn(lambda a=a, b=b: torch.matmul(a, b), device=device, config=timing)
                med = _median(timed.samples_s)
                points.append(MatmulPoint(shape=[m, n, k], median_s=med, tflops=matmul_tflops(m, n, k, med),
                                          samples_s=timed.samples_s))
                del a, b
            best = max(points, key=lambda p: p.tflops)
            out[name] = MatmulCeiling(best_tflops=best.tflops, best_shape=best.shape, points=points)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous_tf32
    return out


def _torch_kernels(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> dict[str, Callable[[], object]]:
    return {"copy": lambda: b.copy_(a), "triad": lambda: torch.add(b, c, alpha=3.0, out=a)}


_CUPY_SOURCE = r"""
extern "C" __global__ void copy4(const float4* __restrict__ src, float4* __restrict__ dst, long long n4) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n4;
         i += (long long)gridDim.x * blockDim.x) {
        dst[i] = src[i];
    }
}
extern "C" __global__ void triad4(float4* __restrict__ a, const float4* __restrict__ b,
                                  const float4* __restrict__ c, float s, long long n4) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n4;
         i += (long long)gridDim.x * blockDim.x) {
        float4 x = b[i], y = c[i];
        a[i] = make_float4(x.x + s * y.x, x.y + s * y.y, x.z + s * y.z, x.w + s * y.w);
    }
}
"""


def _cupy_kernels(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> dict[str, Callable[[], object]]:
    import cupy  # optional: pip install "tpsbench[gpu]"

    module = cupy.RawModule(code=_CUPY_SOURCE)
    copy4, triad4 = module.get_function("copy4"), module.get_function("triad4")
    ca, cb, cc = (cupy.from_dlpack(t) for t in (a, b, c))
    n4 = cupy.int64(a.numel() // 4)
    sms = torch.cuda.get_device_properties(a.device).multi_processor_count
    grid, block = (sms * 8,), (256,)

    def stream() -> Any:  # torch's current stream at call time (a graph capture has its own)
        return cupy.cuda.ExternalStream(torch.cuda.current_stream(a.device).cuda_stream)

    def copy() -> None:
        with stream():
            copy4(grid, block, (ca, cb, n4))

    def triad() -> None:
        with stream():
            triad4(grid, block, (ca, cb, cc, cupy.float32(3.0), n4))

    return {"copy": copy, "triad": triad}


def calibrate_bandwidth(device: torch.device, timing: TimingConfig, large_bytes: int = LARGE_ARRAY_BYTES,
                        l2_bytes: int = L2_ARRAY_BYTES) -> dict[str, BandwidthSize]:
    out: dict[str, BandwidthSize] = {}
    for size_name, nbytes, flush, calls in (("large", large_bytes, True, 1),
                                            ("l2_resident", l2_bytes, False, L2_CALLS_PER_SAMPLE)):
        words = nbytes // 4
        a, b, c = (torch.rand(words, device=device) + 1.0 for _ in range(3))
        cfg = TimingConfig(timing.warmup, timing.min_reps, timing.min_time_s, timing.max_reps, flush_l2=flush)
        libraries: dict[str, StreamLibrary] = {}
        for lib, factory in (("torch", _torch_kernels), ("cupy", _cupy_kernels)):
            try:
                kernels = factory(a, b, c)
            except Exception as exc:  # ImportError, or a CuPy/CUDA version mismatch: recorded, never guessed
                libraries[lib] = StreamLibrary(reason=f"{type(exc).__name__}: {exc}"[:300])
                continue
            results: dict[str, StreamResult] = {}
            for kind, touched in (("copy", 2), ("triad", 3)):
                fn, launch = (kernels[kind], "python") if calls == 1 else _graphed(kernels[kind], calls, device)
                timed = time_fn(fn, device=device, config=cfg)
                med = _median(timed.samples_s) / calls
                results[kind] = StreamResult(gbs=stream_gbs(words, 4, touched, med), median_s=med, launch=launch,
                                             samples_s=timed.samples_s)
            libraries[lib] = StreamLibrary(copy=results["copy"], triad=results["triad"])
        out[size_name] = BandwidthSize(array_bytes=nbytes, calls_per_sample=calls, **libraries)
        del a, b, c
    return out


def _repeated(fn: Callable[[], object], calls: int) -> Callable[[], None]:
    if calls == 1:
        return fn  # type: ignore[return-value]

    def many() -> None:
        for _ in range(calls):
            fn()
    return many


def _graphed(fn: Callable[[], object], calls: int, device: torch.device) -> tuple[Callable[[], object], str]:
    """``calls`` launches of ``fn`` replayed from one CUDA graph, or from Python when capture fails."""
    try:
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            fn()  # warm-up outside the capture (lazy initialisation, module loading)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(calls):
                fn()
        return graph.replay, "cuda_graph"
    except Exception as exc:  # capture unsupported for this kernel or library: Python launches, said so in the file
        return _repeated(fn, calls), f"python (graph capture failed: {str(exc)[:120]})"


class _NoCounters:
    """The counter window without a sampler: the same repetitions, nothing read."""

    measures = True

    def start(self) -> None:
        pass

    def stop(self) -> None:
        return None


def overhead_from_pairs(without_s: list[float], with_s: list[float]) -> OverheadPairs:
    """Per-repetition times of paired windows -> the overhead as the median paired ratio, with its range."""
    if len(without_s) != len(with_s) or not without_s:
        raise ValueError("need the same number (>0) of windows with and without sampling")
    ratios = [on / off - 1.0 for off, on in zip(without_s, with_s, strict=True)]
    return OverheadPairs(overhead_fraction=summarize(ratios).median, min_fraction=min(ratios),
                         max_fraction=max(ratios), without_s=list(without_s), with_s=list(with_s))


def _overhead_workloads(device: torch.device) -> dict[str, Callable[[], object]]:
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    src = torch.rand(LARGE_ARRAY_BYTES // 4, device=device)
    dst = torch.empty_like(src)
    tiny = torch.rand(1024, device=device)
    return {"bf16 matmul 8192^3": lambda: a @ b, "copy 1 GiB": lambda: dst.copy_(src),
            "tiny add x100 (launch-bound)": _repeated(lambda: tiny.add_(1.0), 100)}


def sampler_overhead(device: torch.device, timing: TimingConfig, interval_s: float,
                     pairs: int = OVERHEAD_PAIRS) -> SamplerOverhead:
    """Each workload's counter window with and without the sampler, ``pairs`` times in A-B-B-A order."""
    source = open_source()
    sampler = Sampler(source, interval_s=interval_s)
    quiet = _NoCounters()
    cfg = TimingConfig(warmup=timing.warmup, min_reps=5, min_time_s=0.1, max_reps=50, flush_l2=False,
                       counter_window_s=timing.counter_window_s)
    workloads: dict[str, OverheadPairs] = {}
    try:
        for name, fn in _overhead_workloads(device).items():
            with_s: list[float] = []
            without_s: list[float] = []
            for i in range(pairs):
                order = ((quiet, without_s), (sampler, with_s))
                for hook, sink in order if i % 2 == 0 else order[::-1]:
                    window = time_fn(fn, device=device, config=cfg, window=hook).window_info
                    assert window is not None and window.per_rep_s is not None
                    sink.append(window.per_rep_s)
            workloads[name] = overhead_from_pairs(without_s, with_s)
    finally:
        source.close()
    worst = max(workloads, key=lambda n: workloads[n].overhead_fraction)
    return SamplerOverhead(interval_s=interval_s, window_s=cfg.counter_window_s, pairs=pairs, workloads=workloads,
                           workload=worst, overhead_fraction=workloads[worst].overhead_fraction,
                           source_unavailable=dict(source.unavailable))


def run_calibration(profile: GPUProfile, *, quick: bool, interval_s: float,
                    log: Callable[[str], object] = lambda _m: None) -> CalibrationDoc:
    """Everything `tpsbench calibrate` measures, as one document."""
    from tpsbench import __version__
    from tpsbench.bench.env import machine_info
    from tpsbench.results import utc_now
    from tpsbench.results.io import current_provenance

    device = torch.device("cuda")
    timing = TimingConfig(warmup=3, min_reps=10, min_time_s=0.3, max_reps=100)
    log("matmul sweep (bf16, fp16, tf32, fp32)...")
    matmul = calibrate_matmul(device, timing, QUICK_SHAPES if quick else MATMUL_SHAPES, list(MATMUL_DTYPES))
    log("memory bandwidth (copy, triad; torch and CuPy)...")
    bandwidth = calibrate_bandwidth(device, timing)
    log("counter sampler overhead...")
    overhead = sampler_overhead(device, timing, interval_s)
    log("GEMM shape sweep and launch sweep (the expected-time model's inputs)...")
    sweep_timing = TimingConfig(warmup=2, min_reps=10, min_time_s=0.05, max_reps=100)
    gemms = gemm_sweep(device, sweep_timing)
    launches = launch_sweep(device)
    log("host time of matmuls of new shapes against repeated ones...")
    churn = shape_churn(device)
    return CalibrationDoc(
        schema=SCHEMA, tool_version=__version__, created_utc=utc_now(), provenance=current_provenance(),
        machine=machine_info("cuda", profile), profile=profile.name,
        timing=CalibrationTiming(warmup=timing.warmup, min_reps=timing.min_reps, min_time_s=timing.min_time_s),
        matmul=matmul, bandwidth=bandwidth, sampler_overhead=overhead, best=best_ceilings(matmul, bandwidth),
        gemm_sweep=gemms, launch_sweep=launches, shape_churn=churn.record())
