"""Synthetic `tpsbench calibrate` documents (JSON data of the current schema) with chosen ceilings."""

from __future__ import annotations

from tpsbench.results.calibration import SCHEMA

MACHINE = {"device": "cuda", "hostname": "test", "python": "3.11.7", "platform": "Linux", "cpu_count": 2,
           "torch": "2.13.0", "triton": "3.9.0", "tpsbench": "0.1.0", "profile": "h100_sxm",
           "gpu_name": "NVIDIA H100 80GB HBM3", "cuda": "12.8"}
PROVENANCE = {"git_commit": None, "dirty": None, "source_hash": None, "source_files": {}}


def _stream(gbs: float, launch: str = "python") -> dict:
    return {"gbs": gbs, "median_s": 1e-3, "samples_s": [1e-3, 1e-3], "launch": launch}


def _matmul(tflops: float, shape: list[int]) -> dict:
    return {"best_tflops": tflops, "best_shape": shape,
            "points": [{"shape": shape, "median_s": 1e-3, "tflops": tflops, "samples_s": [1e-3]}]}


def calibration_doc(bf16: float = 780.0, fp32: float = 51.0, torch_copy: float = 2950.0,
                    cupy_copy: float | None = 3010.0, profile: str = "h100_sxm") -> dict:
    no_cupy = {"copy": None, "triad": None, "reason": "ImportError: no cupy"}
    copies = [c for c in (torch_copy, cupy_copy) if c is not None]
    return {
        "schema": SCHEMA, "tool_version": "test", "created_utc": "2026-12-01T00:00:00+00:00",
        "provenance": PROVENANCE, "machine": {**MACHINE, "profile": profile}, "profile": profile,
        "timing": {"warmup": 3, "min_reps": 10, "min_time_s": 0.3},
        "matmul": {"bf16": _matmul(bf16, [8192, 8192, 8192]), "fp16": _matmul(bf16, [8192, 8192, 8192]),
                   "tf32": _matmul(400.0, [8192, 8192, 8192]), "fp32": _matmul(fp32, [4096, 4096, 4096])},
        "bandwidth": {
            "large": {"array_bytes": 1 << 30, "calls_per_sample": 1,
                      "torch": {"copy": _stream(torch_copy), "triad": _stream(3000.0)},
                      "cupy": ({"copy": _stream(cupy_copy), "triad": _stream(3050.0)} if cupy_copy else no_cupy)},
            "l2_resident": {"array_bytes": 4 << 20, "calls_per_sample": 100,
                            "torch": {"copy": _stream(9000.0, "cuda_graph"), "triad": _stream(9500.0, "cuda_graph")},
                            "cupy": no_cupy},
        },
        "sampler_overhead": {"interval_s": 0.1, "window_s": 1.0, "pairs": 4, "workload": "bf16 matmul 8192^3",
                             "overhead_fraction": 0.003, "source_unavailable": {},
                             "workloads": {"bf16 matmul 8192^3": {
                                 "overhead_fraction": 0.003, "min_fraction": 0.001, "max_fraction": 0.005,
                                 "without_s": [1e-3] * 4, "with_s": [1.003e-3] * 4}}},
        "best": {"bf16_tflops": bf16, "fp32_tflops": fp32, "copy_gbs": max(copies)},
    }
