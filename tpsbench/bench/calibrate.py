"""`tpsbench calibrate`: the present GPU's own ceilings, measured.

* Matmul TFLOP/s for bf16, fp16, tf32 and fp32 over a sweep of shapes (``torch.matmul``, random inputs, L2
  flushed); the best rate and the shape that reached it are reported per dtype.
* Memory bandwidth for copy (``b = a``, 2 N words) and triad (``a = b + s*c``, 3 N words), counting bytes
  read plus written, with torch and with CuPy raw kernels (16-byte vector accesses, grid-stride loop), at
  1 GiB per array (far above any L2) and separately at an L2-resident size (4 MiB per array, no flush).
* The counter sampler's overhead: the same matmul timed with and without sampling, interleaved.

Results go to ``results/calibration/<time>-<gpu>.json`` and feed ``--ceilings calibrated``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from tpsbench.bench.stats import summarize
from tpsbench.bench.timing import TimingConfig, time_fn
from tpsbench.counters.sampler import Sampler, open_source

SCHEMA = "tpsbench.calibration/1"
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


class CalibrationError(ValueError):
    """A calibration file that cannot be used."""


def matmul_tflops(m: int, n: int, k: int, seconds: float) -> float:
    return 2.0 * m * n * k / seconds / 1e12


def stream_gbs(words: int, word_bytes: int, arrays_touched: int, seconds: float) -> float:
    """GB/s counting bytes read plus written: copy touches 2 arrays, triad 3."""
    return words * word_bytes * arrays_touched / seconds / 1e9


def _median(timed_samples: list[float]) -> float:
    return summarize(timed_samples).median


def calibrate_matmul(device: torch.device, timing: TimingConfig, shapes: list[tuple[int, int, int]],
                     dtypes: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
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
                points.append({"shape": [m, n, k], "median_s": med, "tflops": matmul_tflops(m, n, k, med),
                               "samples_s": timed.samples_s})
                del a, b
            best = max(points, key=lambda p: p["tflops"])
            out[name] = {"best_tflops": best["tflops"], "best_shape": best["shape"], "points": points}
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
    stream = cupy.cuda.ExternalStream(torch.cuda.current_stream(a.device).cuda_stream)

    def copy() -> None:
        with stream:
            copy4(grid, block, (ca, cb, n4))

    def triad() -> None:
        with stream:
            triad4(grid, block, (ca, cb, cc, cupy.float32(3.0), n4))

    return {"copy": copy, "triad": triad}


def calibrate_bandwidth(device: torch.device, timing: TimingConfig, large_bytes: int = LARGE_ARRAY_BYTES,
                        l2_bytes: int = L2_ARRAY_BYTES) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for size_name, nbytes, flush in (("large", large_bytes, True), ("l2_resident", l2_bytes, False)):
        words = nbytes // 4
        a, b, c = (torch.rand(words, device=device) + 1.0 for _ in range(3))
        cfg = TimingConfig(timing.warmup, timing.min_reps, timing.min_time_s, timing.max_reps, flush_l2=flush)
        results: dict[str, Any] = {"array_bytes": nbytes}
        for lib, factory in (("torch", _torch_kernels), ("cupy", _cupy_kernels)):
            try:
                kernels = factory(a, b, c)
            except Exception as exc:  # ImportError, or a CuPy/CUDA version mismatch: recorded, never guessed
                results[lib] = {"copy": None, "triad": None, "reason": f"{type(exc).__name__}: {exc}"[:300]}
                continue
            entry: dict[str, Any] = {}
            for kind, touched in (("copy", 2), ("triad", 3)):
                timed = time_fn(kernels[kind], device=device, config=cfg)
                med = _median(timed.samples_s)
                entry[kind] = {"gbs": stream_gbs(words, 4, touched, med), "median_s": med,
                               "samples_s": timed.samples_s}
            results[lib] = entry
        out[size_name] = results
        del a, b, c
    return out


def sampler_overhead(device: torch.device, timing: TimingConfig, interval_s: float, rounds: int = 3) -> dict[str, Any]:
    """Median time of an 8192^3 bf16 matmul with and without the sampler, A/B interleaved ``rounds`` times."""
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    source = open_source()
    sampler = Sampler(source, interval_s=interval_s)
    with_s, without_s = [], []
    try:
        for _ in range(rounds):
            without_s.append(_median(time_fn(lambda: a @ b, device=device, config=timing).samples_s))
            with_s.append(_median(time_fn(lambda: a @ b, device=device, config=timing, window=sampler).samples_s))
    finally:
        source.close()
    off, on = summarize(without_s).median, summarize(with_s).median
    return {"workload": "bf16 matmul 8192^3", "interval_s": interval_s, "median_without_s": off,
            "median_with_s": on, "overhead_fraction": on / off - 1.0, "rounds": rounds,
            "without_s": without_s, "with_s": with_s, "source_unavailable": dict(source.unavailable)}


def best_ceilings(doc: dict[str, Any]) -> dict[str, float | None]:
    """The ceilings a roofline uses from a calibration document: best matmul per dtype, best large-array
    copy GB/s over torch and CuPy (copy, the bytes-read-plus-written convention of the profiles)."""
    if doc.get("schema") != SCHEMA:
        raise CalibrationError(f"not a calibration file (schema {doc.get('schema')!r}, expected '{SCHEMA}')")
    mm = {name: (entry or {}).get("best_tflops") for name, entry in doc.get("matmul", {}).items()}
    copies = []
    for lib in ("torch", "cupy"):
        entry = doc.get("bandwidth", {}).get("large", {}).get(lib) or {}
        if entry.get("copy"):
            copies.append(entry["copy"]["gbs"])
    return {"bf16_tflops": mm.get("bf16"), "fp32_tflops": mm.get("fp32"), "copy_gbs": max(copies) if copies else None}


def load_calibration(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CalibrationError(f"{p}: cannot read a calibration file ({exc}); run `tpsbench calibrate` first") from exc
    best_ceilings(doc)  # validates the schema
    doc["_path"] = str(p)
    return doc


def latest_calibration(results_dir: Path, profile_name: str) -> Path | None:
    files = sorted((results_dir / "calibration").glob(f"*-{profile_name}.json"))
    return files[-1] if files else None


def default_calibration_path(results_dir: Path, profile_name: str) -> Path:
    import datetime as dt

    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return results_dir / "calibration" / f"{stamp}-{profile_name}.json"


def run_calibration(profile: Any, *, quick: bool, interval_s: float,
                    log: Callable[[str], object] = lambda _m: None) -> dict[str, Any]:
    """Everything `tpsbench calibrate` measures, as one document."""
    from tpsbench import __version__
    from tpsbench.bench.env import git_commit, machine_info
    from tpsbench.results import utc_now

    device = torch.device("cuda")
    timing = TimingConfig(warmup=3, min_reps=10, min_time_s=0.3, max_reps=100)
    log("matmul sweep (bf16, fp16, tf32, fp32)...")
    matmul = calibrate_matmul(device, timing, QUICK_SHAPES if quick else MATMUL_SHAPES, list(MATMUL_DTYPES))
    log("memory bandwidth (copy, triad; torch and CuPy)...")
    bandwidth = calibrate_bandwidth(device, timing)
    log("counter sampler overhead...")
    overhead = sampler_overhead(device, timing, interval_s)
    doc = {
        "schema": SCHEMA, "tool_version": __version__, "created_utc": utc_now(), "git_commit": git_commit(),
        "machine": machine_info("cuda", profile), "profile": profile.name, "timing": {
            "warmup": timing.warmup, "min_reps": timing.min_reps, "min_time_s": timing.min_time_s},
        "matmul": matmul, "bandwidth": bandwidth, "sampler_overhead": overhead,
    }
    doc["best"] = best_ceilings(doc)
    return doc
