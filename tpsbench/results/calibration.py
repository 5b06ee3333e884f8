"""`tpsbench calibrate` files, typed and versioned like results files (torch-free, so that the analyses read them
without loading torch): the schema, reading any version, the best ceilings a roofline or a cross-GPU comparison
uses, and finding the calibration that ``--ceilings calibrated`` asks for.

Version 1 files (every file before 2026-12) record a top-level ``git_commit`` (kept as
``provenance.v1_git_commit``, as results files do) and have no GEMM, launch or new-shape sweeps."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING

from tpsbench.errors import InputError
from tpsbench.results.io import read_json
from tpsbench.results.schema import CalibrationRef, Machine, Provenance
from tpsbench.results.typed import SchemaError, fld, from_dict, schema

if TYPE_CHECKING:
    from tpsbench.profiles import GPUProfile

SCHEMA = "tpsbench.calibration/2"
SCHEMA_V1 = "tpsbench.calibration/1"


class CalibrationError(InputError):
    """A calibration file that cannot be used."""


@schema
class MatmulPoint:
    shape: list[int] = fld("m, n, k")
    median_s: float = fld("median time of one matmul", "s")
    tflops: float = fld("2 m n k / median", "TFLOP/s")
    samples_s: list[float] = fld("every timed repetition", "s")


@schema
class MatmulCeiling:
    """One dtype's matmul sweep and its best rate."""

    best_tflops: float = fld("the fastest shape's rate", "TFLOP/s")
    best_shape: list[int] = fld("that shape: m, n, k")
    points: list[MatmulPoint] = fld("every shape")


@schema
class StreamResult:
    gbs: float = fld("bytes read plus written / median", "GB/s")
    median_s: float = fld("median time of one kernel", "s")
    samples_s: list[float] = fld("every timed repetition (of all the launches of a sample)", "s")
    launch: str = fld("python, cuda_graph, or python with why capture failed", default="python")


@schema
class StreamLibrary:
    """Copy and triad of one library (torch or CuPy raw kernels); null with a reason where it could not run."""

    copy: StreamResult | None = fld("b = a", default=None)
    triad: StreamResult | None = fld("a = b + s c", default=None)
    reason: str | None = fld("why the library's kernels did not run", default=None)


@schema
class BandwidthSize:
    array_bytes: int = fld("bytes per array", "B")
    torch: StreamLibrary = fld("torch's kernels")
    cupy: StreamLibrary = fld("CuPy raw kernels")
    calls_per_sample: int = fld("kernel launches per timed sample (L2-resident arrays: many)", default=1)


@schema
class OverheadPairs:
    overhead_fraction: float = fld("median of the paired ratios with / without sampling, less 1", "fraction")
    min_fraction: float = fld("smallest paired ratio less 1", "fraction")
    max_fraction: float = fld("largest paired ratio less 1", "fraction")
    without_s: list[float] = fld("per-repetition time of each window without sampling", "s")
    with_s: list[float] = fld("per-repetition time of each window with sampling", "s")


@schema
class SamplerOverhead:
    """The counter sampler's cost on three workloads, windows with and without it in A-B-B-A order."""

    interval_s: float = fld("sampling interval", "s")
    window_s: float = fld("counter window length", "s")
    pairs: int = fld("window pairs per workload")
    workloads: dict[str, OverheadPairs] = fld("each workload's pairs")
    workload: str = fld("the workload with the largest overhead")
    overhead_fraction: float = fld("its overhead", "fraction")
    source_unavailable: dict[str, str] = fld("counters the source could not read, and why")


@schema
class GemmPoint:
    m: int = fld("rows")
    n: int = fld("columns")
    k: int = fld("reduction length")
    groups: int = fld("batched GEMMs (experts); 1 for a plain matmul")
    median_s: float = fld("median time, L2 flushed", "s")
    tflops: float = fld("2 m n k groups / median", "TFLOP/s")
    samples_s: list[float] = fld("every timed repetition", "s")


@schema
class LaunchSweep:
    """Host time per kernel launch (eager, autograd, matmul) and the GPU time of a tiny kernel."""

    launches: int = fld("tiny kernels per host-time sample")
    eager_samples_s: list[float] = fld("host time per eager aten op, per sample", "s")
    matmul_samples_s: list[float] = fld("host time per tiny matmul, per sample", "s")
    autograd_samples_s: list[float] = fld("host time per kernel of an autograd forward and backward", "s")
    host_per_launch_s: float = fld("median eager host time per op", "s")
    host_gemm_extra_s: float = fld("a matmul's extra host time per launch", "s")
    host_autograd_extra_s: float = fld("autograd's extra host time per kernel", "s")
    kernel_floor_s: float | None = fld("GPU time per tiny kernel replayed from a CUDA graph", "s")
    kernel_floor_reason: str | None = fld("why kernel_floor_s is null", default=None)


@schema
class ShapeChurnRecord:
    """Host time of matmuls of shapes the process has not run before against the same matmul repeated."""

    k: int = fld("reduction length")
    n: int = fld("columns")
    calls: int = fld("calls per arm")
    same_rows: int = fld("rows of the repeated arm")
    new_rows: list[int] = fld("first and last new row count, and how many")
    same_samples_s: dict[str, list[float]] = fld("per layout: host seconds per call, repeated shape", "s")
    new_samples_s: dict[str, list[float]] = fld("per layout: host seconds per call, new shapes", "s")
    host_same_shape_s: dict[str, float] = fld("per layout: median host time of a repeated-shape call", "s")
    host_new_shape_extra_s: dict[str, float] = fld("per layout: a new shape's extra host time (may be < 0: noise)",
                                                   "s")


@schema
class BestCeilings:
    bf16_tflops: float | None = fld("best bf16 matmul", "TFLOP/s")
    fp32_tflops: float | None = fld("best fp32 matmul", "TFLOP/s")
    copy_gbs: float | None = fld("best large-array copy, torch or CuPy (bytes read + written)", "GB/s")


@schema
class CalibrationTiming:
    warmup: int = fld("untimed repetitions first")
    min_reps: int = fld("timed repetitions at least")
    min_time_s: float = fld("timed seconds at least", "s")


@schema
class CalibrationDoc:
    """One run of `tpsbench calibrate` on one GPU."""

    schema: str = fld(f"'{SCHEMA}'")
    tool_version: str = fld("tpsbench version")
    created_utc: str = fld("ISO 8601 UTC")
    provenance: Provenance = fld("the code that ran")
    machine: Machine = fld("where it ran")
    profile: str = fld("the GPU profile calibrated")
    timing: CalibrationTiming = fld("timing of the matmul and bandwidth points")
    matmul: dict[str, MatmulCeiling] = fld("per dtype (bf16, fp16, tf32, fp32)")
    bandwidth: dict[str, BandwidthSize] = fld("per array size (large, l2_resident)")
    sampler_overhead: SamplerOverhead = fld("the counter sampler's cost")
    best: BestCeilings = fld("what --ceilings calibrated uses")
    gemm_sweep: list[GemmPoint] | None = fld("the expected-time model's GEMM shapes (null: version 1)", default=None)
    launch_sweep: LaunchSweep | None = fld("host and kernel costs per launch (null: version 1)", default=None)
    shape_churn: ShapeChurnRecord | None = fld("new-shape host cost (null: not measured)", default=None)


def best_ceilings(matmul: dict[str, MatmulCeiling], bandwidth: dict[str, BandwidthSize]) -> BestCeilings:
    """The ceilings a roofline uses: the best matmul per dtype, the best large-array copy over torch and CuPy (the
    bytes-read-plus-written convention of the profiles)."""
    large = bandwidth.get("large")
    copies = [] if large is None else [lib.copy.gbs for lib in (large.torch, large.cupy) if lib.copy is not None]
    bf16, fp32 = matmul.get("bf16"), matmul.get("fp32")
    return BestCeilings(bf16_tflops=None if bf16 is None else bf16.best_tflops,
                        fp32_tflops=None if fp32 is None else fp32.best_tflops,
                        copy_gbs=max(copies) if copies else None)


def _upgrade(data: dict, source: str) -> dict:
    version = data.get("schema")
    if version == SCHEMA:
        return data
    if version != SCHEMA_V1:
        raise CalibrationError(f"{source}: not a calibration file (schema {version!r}, expected '{SCHEMA}'); run "
                               "`tpsbench calibrate` first")
    out = {k: v for k, v in data.items() if k != "git_commit"}
    recorded = data.get("git_commit")
    out["schema"] = SCHEMA
    out["provenance"] = {"git_commit": None, "dirty": None, "source_hash": None, "source_files": {},
                         "v1_git_commit": recorded if isinstance(recorded, str) else None}
    return out


def parse_calibration(data: object, source: str) -> CalibrationDoc:
    if not isinstance(data, dict):
        raise CalibrationError(f"{source}: not a calibration file (a JSON object with a 'schema' field)")
    try:
        return from_dict(CalibrationDoc, _upgrade(data, source))
    except SchemaError as exc:
        raise CalibrationError(f"{source}: {exc}") from None


def load_calibration(path: str | Path) -> CalibrationDoc:
    if not Path(path).is_file():
        raise CalibrationError(f"{path}: no such calibration file; run `tpsbench calibrate` first on that GPU")
    return parse_calibration(read_json(path, "calibration", error=CalibrationError), str(path))


def calibration_ref(doc: CalibrationDoc, path: str | Path) -> CalibrationRef:
    best = doc.best
    return CalibrationRef(path=str(path), bf16_tflops=best.bf16_tflops, fp32_tflops=best.fp32_tflops,
                          copy_gbs=best.copy_gbs)


def calibration_for(ceilings: str, path: str | None, profile: GPUProfile | None,
                    results_dir: Path = Path("results")) -> CalibrationRef | None:
    """The best ceilings (and the path) of the calibration that ``--ceilings calibrated`` asks for: ``path``, else
    the newest ``results/calibration/*-GPU.json`` of ``profile``; None for other ceilings or without a GPU."""
    if ceilings != "calibrated" or profile is None:
        return None
    found = Path(path) if path else latest_calibration(results_dir, profile.name)
    if found is None:
        raise CalibrationError(f"no {results_dir}/calibration/*-{profile.name}.json: run `tpsbench calibrate` on that "
                               "GPU, pass --calibration FILE, or use --ceilings spec")
    doc = load_calibration(found)
    if doc.profile != profile.name:  # another GPU's ceilings would give that GPU's floors to this one
        raise CalibrationError(f"{found} calibrates {doc.profile!r}, not {profile.name}: give a calibration of "
                               f"{profile.name} (`tpsbench calibrate` on it), or use --ceilings spec")
    return calibration_ref(doc, found)


def latest_calibration(results_dir: Path, profile_name: str) -> Path | None:
    files = sorted((results_dir / "calibration").glob(f"*-{profile_name}.json"))
    return files[-1] if files else None


def default_calibration_path(results_dir: Path, profile_name: str) -> Path:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return results_dir / "calibration" / f"{stamp}-{profile_name}.json"
