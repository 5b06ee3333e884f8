"""Fitting an efficiency table to measured points: least squares on the log of expected / measured time
(scipy.optimize.least_squares, bounded), training steps weighted above layer and stage points (the training
step is what users run; the layers and stages pin the per-kind parameters). Also leave-one-model-out: the
table fitted without one model's points, then used to predict them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tpsbench.estimate.points import estimate_point
from tpsbench.estimate.table import EfficiencyTable, Sourced
from tpsbench.options import Scope
from tpsbench.points import MeasuredPoint

# (lower, upper, start) of each fitted parameter: physical ranges, not tuned values.
BOUNDS: dict[str, tuple[float, float, float]] = {
    "gemm_peak_fraction": (0.3, 1.0, 0.75),
    "gemm_k_half": (0.0, 1024.0, 64.0),
    "gemm_k_exponent": (0.5, 4.0, 1.0),
    "grouped_gemm_fraction": (0.2, 1.0, 0.7),
    "dram_fraction": (0.3, 1.0, 0.85),
    "kernel_floor_s": (0.0, 20e-6, 3e-6),
    "atomic_add_per_s": (1e9, 1e12, 5e10),
    "attention_fwd_fraction": (0.05, 1.0, 0.35),
    "attention_bwd_fraction": (0.05, 1.0, 0.25),
    "host_launch_eager_s": (1e-6, 60e-6, 10e-6),
    "host_autograd_s": (0.0, 60e-6, 10e-6),
    "host_gemm_s": (0.0, 60e-6, 5e-6),
    "host_launch_compiled_s": (1e-6, 40e-6, 8e-6),
    "host_sync_s": (0.0, 2e-3, 20e-6),
}
# measured with the simplest ops (a stream of tiny adds, muls, matmuls): floors of what module code costs per kernel
LOWER_BOUND_ONLY = ("host_launch_eager_s", "host_autograd_s", "host_gemm_s")
WEIGHTS = {Scope.STEP: 10.0, Scope.LAYER: 1.0, Scope.STAGE: 1.0, Scope.GEMM: 1.0}


@dataclass(frozen=True, slots=True)
class FitResult:
    table: EfficiencyTable
    names: tuple[str, ...]  # the parameters fitted
    points: int
    rms_log_error: float


def _start_table(gpu: str, host: str, basis: str, fixed: dict[str, Sourced]) -> EfficiencyTable:
    s = {k: Sourced(v[2], "start value of the fit") for k, v in BOUNDS.items()}
    s["step_uncertainty"] = Sourced(1.0, "not fitted yet")
    s.update(fixed)
    return EfficiencyTable(gpu=gpu, host=host, basis=basis, **s)  # type: ignore[arg-type]


def fit_table(points: Sequence[MeasuredPoint], *, gpu: str, host: str, source: str,
              fixed: dict[str, Sourced]) -> FitResult:
    """The table minimising the weighted squared log errors of ``points`` (all on GPU ``gpu``); the parameters
    in ``fixed`` (measured independently, e.g. by `tpsbench calibrate`) are held at their values."""
    from scipy.optimize import least_squares

    pts = [p for p in points if p.gpu == gpu and p.median_s]
    if not pts:
        raise ValueError(f"no measured points of {gpu} to fit")
    # a measured host cost of the simplest eager op (calibrate's tiny-add stream) is a lower bound of the eager
    # host cost per kernel, not its value: module code adds Python between the launches
    floors = {n: fixed[n].value for n in LOWER_BOUND_ONLY if n in fixed}
    fixed = {n: v for n, v in fixed.items() if n not in floors}
    names = tuple(n for n in BOUNDS if n not in fixed)
    base = _start_table(gpu, host, "fitted", fixed)
    lo = np.array([max(BOUNDS[n][0], floors.get(n, 0.0)) for n in names])
    hi = np.array([BOUNDS[n][1] for n in names])
    scale = np.maximum(hi, 1e-12)  # optimise in [0, 1]-ish units: parameters span 1e-6 .. 2e3
    w = np.sqrt(np.array([WEIGHTS[p.key.scope] for p in pts]))
    measured = np.array([p.median_s for p in pts])

    def table_of(x: np.ndarray) -> EfficiencyTable:
        return base.with_values(dict(zip(names, (x * scale).tolist(), strict=True)), "fit")

    def residuals(x: np.ndarray) -> np.ndarray:
        t = table_of(x)
        est = np.array([estimate_point(p, t).seconds for p in pts])
        return w * np.log(est / measured)

    x0 = np.clip(np.array([BOUNDS[n][2] for n in names]), lo, hi) / scale
    sol = least_squares(residuals, x0, bounds=(lo / scale, hi / scale), x_scale="jac", diff_step=1e-3,
                        max_nfev=400)
    # 1-sigma relative uncertainty of each parameter from the Jacobian (Gauss-Newton covariance)
    res = sol.fun
    dof = max(1, len(res) - len(names))
    sigma2 = float(res @ res) / dof
    try:
        cov = np.linalg.pinv(sol.jac.T @ sol.jac) * sigma2
        sd = np.sqrt(np.clip(np.diag(cov), 0, None)) * scale
    except np.linalg.LinAlgError:
        sd = np.full(len(names), math.nan)
    values = (sol.x * scale).tolist()
    fitted: dict[str, Sourced] = {}
    for n, v, s, low, high in zip(names, values, sd, lo, hi, strict=True):
        rel = float(s / v) if v > 0 and math.isfinite(s) else 1.0
        pinned = min(abs(v - low), abs(v - high)) <= 1e-6 * max(abs(high), 1e-12)
        note = f" (at the {'lower' if abs(v - low) <= abs(v - high) else 'upper'} bound of its range "\
               f"[{low:g}, {high:g}]: these points do not determine it)" if pinned else ""
        fitted[n] = Sourced(v, source + note, round(min(rel, 10.0), 3))
    steps = [i for i, p in enumerate(pts) if p.key.scope is Scope.STEP]
    rel = [math.exp(float(res[i] / w[i])) - 1.0 for i in steps]
    spread = math.sqrt(sum(r * r for r in rel) / len(rel)) if rel else 1.0
    fitted["step_uncertainty"] = Sourced(round(spread, 3), f"RMS relative error of the fit on its {len(rel)} "
                                         "training-step points", 0.0)
    table = EfficiencyTable(gpu=gpu, host=host, basis="fitted", **{**fixed, **fitted})  # type: ignore[arg-type]
    rms = math.sqrt(float(np.mean((res / w) ** 2)))
    return FitResult(table, names, len(pts), rms)
