"""Synthetic results documents (JSON data of schema version 1, read through the upgrade like every committed
file) with chosen numbers, for the analysis tests."""

from __future__ import annotations

from tpsbench.points import MeasuredPoint
from tpsbench.results.io import parse_results
from tpsbench.results.points import points_from_doc
from tpsbench.results.schema import SCHEMA_V1 as SCHEMA

H100_PEAK = 989.4e12  # profiles/h100_sxm.toml bf16 dense
H100_BW = 3350e9  # profiles/h100_sxm.toml
TIMING = {"warmup": 3, "min_reps": 10, "min_time_s": 0.5, "max_reps": 200, "flush_l2": True, "counter_window_s": 1.0}


def point(*, kind: str = "e2e", layer: str = "model", impl: str | None = "dense", mode: str = "train_step",
          tokens: int = 32768, median: float = 0.1, iqr_rel: float = 0.01, n: int = 20,
          matmul_flops: float | None = None, nbytes: float | None = None, predicted_s: float | None = None,
          memory_share: float | None = None, dram_pct: float | None = None, dram_gbs: float | None = None,
          idle: float | None = None, status: str = "ok", throttled: bool = False,
          samples: list[float] | None = None) -> dict:
    if status != "ok":
        return {"kind": kind, "layer": layer, "impl": impl, "mode": mode, "tokens": tokens, "status": status,
                "error": "CUDA out of memory" if status == "oom" else "boom", "stats": None, "derived": None,
                "prediction": None, "counters": None, "raw": None, "label": f"{layer}/{impl}", "routing": None,
                **({"global_tokens": tokens} if kind == "e2e" else {})}
    if samples is None:  # evenly spaced: IQR = iqr_rel * median
        samples = [median * (1 + iqr_rel * (i / (n - 1) - 0.5) * 2) for i in range(n)]
    n = len(samples)
    stats = {"median": median, "iqr": iqr_rel * median, "q1": median * (1 - iqr_rel / 2),
             "q3": median * (1 + iqr_rel / 2), "min": min(samples), "max": max(samples), "n": n, "outliers": [],
             "mean": sum(samples) / n, "stdev": None, "mad": iqr_rel * median / 2}
    derived = {"tokens_per_s": tokens / median, "matmul_flops": matmul_flops, "bytes": nbytes,
               "achieved_tflops": None if matmul_flops is None else matmul_flops / median / 1e12}
    prediction = None
    if predicted_s is not None:
        prediction = {"profile": "h100_sxm", "ceilings": "spec", "predicted_s": predicted_s,
                      "memory_bound_share": memory_share, "achieved_fraction": predicted_s / median}
    counters = None
    if dram_pct is not None or throttled:
        counters = {"values": {"dram_bw_util_pct_mean": dram_pct, "dram_gbs": dram_gbs}, "reasons": {},
                    "throttled": throttled, "clock_events": ["sw_thermal_slowdown"] if throttled else [],
                    "duration_s": 1.0, "n_basic": 11, "n_gpm": 10, "n_gpm_skipped": 0, "n_gpm_invalid": {},
                    "gpm_intervals": []}
    raw = {"samples_s": samples, "warmup": 3, "l2_flushed": kind == "micro", "timer": "cuda_event",
           "gpu_time": {"busy_s": None if idle is None else median * (1 - idle), "idle_share": idle,
                        "kernels_per_call": None if idle is None else 100.0, "profiled_calls": 3,
                        "reason": None if idle is not None else "not measured"}}
    p = {"kind": kind, "layer": layer, "impl": impl, "mode": mode, "tokens": tokens, "status": "ok",
         "stats": stats, "derived": derived, "prediction": prediction, "counters": counters, "raw": raw,
         "label": f"{layer}/{impl}", "routing": None}
    if kind == "e2e":
        p["global_tokens"] = tokens
    return p


def doc(model: str, points: list[dict], *, gpu: str | None = "h100_sxm", device: str = "cuda",
        compile_model: bool = False) -> dict:
    return {
        "schema": SCHEMA, "tool": "tpsbench", "tool_version": "test", "created_utc": "2026-11-22T00:00:00+00:00",
        "finished_utc": "2026-11-22T00:01:00+00:00", "status": "complete", "git_commit": None,
        "machine": {"device": device, "profile": gpu, "gpu_name": None if gpu is None else f"GPU {gpu}",
                    "hostname": "test", "python": "3.11.7", "platform": "Linux", "cpu_count": 2, "torch": "2.13.0",
                    "triton": "3.9.0", "tpsbench": "0.1.0", "cuda": None},
        "config": {"model": model, "gpu_profile": gpu, "device": device, "batches": [32768], "seq_len": 2048,
                   "impls": ["capacity"], "mode": "all", "dtype_policy": "amp_bf16", "compile": compile_model,
                   "routing": "learned", "skew": None, "global_batch": None, "stages": True, "seed": 0,
                   "micro_timing": TIMING, "e2e_timing": TIMING},
        "points": points,
    }


def utilisation_point(*, tensor: float, bw: float, idle: float | None, dram_pct: float | None = None,
                      median: float = 0.01, **kw: object) -> dict:
    """An e2e point whose exact matmul FLOPs and cost-model bytes give the wanted utilisations of the H100
    datasheet ceilings over the whole measured time."""
    return point(median=median, matmul_flops=tensor * H100_PEAK * median, nbytes=bw * H100_BW * median,
                 idle=idle, dram_pct=dram_pct, **kw)  # type: ignore[arg-type]


def noisy_samples(median: float, iqr_rel: float, n: int, seed: int) -> list[float]:
    """``n`` normal samples (seeded) shifted and scaled to exactly this median and relative IQR."""
    import numpy as np

    x = np.random.default_rng(seed).standard_normal(n)
    q1, med, q3 = np.quantile(x, [0.25, 0.5, 0.75])
    return [float(median * (1 + iqr_rel * (v - med) / (q3 - q1))) for v in x]


def entries(data: dict, source: str = "") -> list[MeasuredPoint]:
    """The measured points of a synthetic document, read through the schema as a file would be."""
    return points_from_doc(parse_results(data, source or "synthetic"), source)
