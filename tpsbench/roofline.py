"""Roofline: each op's time on a GPU profile, its bound, and the predicted step time and tokens/s.

``time(op) = max(FLOPs / compute ceiling, bytes / bandwidth ceiling)`` (Williams, Waterman and
Patterson, "Roofline", CACM 2009). Matmuls use the tensor-core ceiling of the dtype policy, other
ops the FP32 CUDA-core ceiling. The prediction is a floor: ops are assumed to run back to back at
their ceiling with no launch gaps, so a measured time far above it points at overhead or at kernels
far below roofline, and one close to it at the bound named here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from tpsbench.costmodel import (
    FWD_BWD,
    FlopConvention,
    OpCost,
    OpKind,
    Phase,
    Workload,
    flops_per_token,
    grad_accumulation_bytes,
    routing,
    step_ops,
    total_flops,
)
from tpsbench.errors import InputError
from tpsbench.profiles import GPUProfile
from tpsbench.results.schema import CalibrationRef
from tpsbench.results.typed import JsonObject


class Bound(StrEnum):
    COMPUTE = "compute"
    MEMORY = "memory"


class CeilingSource(StrEnum):
    SPEC = "spec"  # datasheet peaks
    MEASURED = "measured"  # the profile's cited measured achievable matmul TFLOP/s and copy GB/s
    CALIBRATED = "calibrated"  # this GPU's own, from `tpsbench calibrate`

    @classmethod
    def parse(cls, text: str) -> CeilingSource:
        """``--ceilings``'s value, or a one-line error with the choices (`run` and `predict` both use it)."""
        try:
            return cls(text)
        except ValueError:
            raise CeilingError(f"--ceilings '{text}': choose one of {', '.join(c.value for c in cls)}") from None


@dataclass(frozen=True, slots=True)
class Ceilings:
    matmul_flops: float  # FLOP/s
    vector_flops: float  # FLOP/s, CUDA cores
    bandwidth: float  # bytes/s
    source: str
    notes: str

    @property
    def ridge(self) -> float:
        return self.matmul_flops / self.bandwidth


class CeilingError(InputError):
    """Measured ceilings asked for but the profile has none."""


def ceilings_for(profile: GPUProfile, matmul_math: str, source: CeilingSource | str = CeilingSource.SPEC,
                 calibration: CalibrationRef | None = None) -> Ceilings:
    """``calibration``: the best ceilings of a `tpsbench calibrate` file, needed for ``calibrated``."""
    src = CeilingSource(source)
    vector = profile.fp32_tflops.value * 1e12
    peak = profile.matmul_peak(matmul_math).value
    if src is CeilingSource.CALIBRATED:
        if calibration is None:
            raise CeilingError(f"no calibration of '{profile.name}' found: run `tpsbench calibrate` on that GPU, "
                               "or pass --calibration FILE, or use --ceilings spec")
        mm = calibration.bf16_tflops if matmul_math == "bf16" else calibration.fp32_tflops
        bw = calibration.copy_gbs
        if not mm or not bw:
            raise CeilingError(f"calibration {calibration.path} lacks a {matmul_math} matmul or copy "
                               "bandwidth; rerun `tpsbench calibrate` or use --ceilings spec")
        return Ceilings(mm * 1e12, vector, bw * 1e9, "calibrated",
                        f"{matmul_math} matmul {mm:.1f} TFLOP/s, copy {bw:.0f} GB/s (calibrated: "
                        f"{calibration.path})")
    if src is CeilingSource.SPEC:
        mm, bw = profile.matmul_ceiling(matmul_math), profile.bandwidth_ceiling()
        if mm.value == peak and bw is profile.mem_bandwidth_gbs:
            notes = f"{matmul_math} tensor peak {peak:g} TFLOP/s, DRAM {bw.value:g} GB/s (datasheet)"
        else:  # a cited measurement beats the datasheet: the floor must not be beaten by a real run
            mm_from = "datasheet" if mm.value == peak else "measured"
            bw_from = "datasheet" if bw is profile.mem_bandwidth_gbs else "measured"
            notes = f"{matmul_math} matmul ceiling {mm.value:g} TFLOP/s ({mm_from}), DRAM {bw.value:g} GB/s ({bw_from})"
        return Ceilings(mm.value * 1e12, vector, bw.value * 1e9, "spec", notes)
    missing = [k for k in ("measured_matmul_tflops", "measured_copy_gbs") if getattr(profile, k) is None]
    if missing:
        raise CeilingError(
            f"profile '{profile.name}' has no {' or '.join(missing)}; use --ceilings spec "
            "(or add measured values with their source to its TOML file)"
        )
    if matmul_math != "bf16":
        raise CeilingError("measured ceilings are bf16 matmul rates; use --ceilings spec for the fp32 policy")
    mm, bw = profile.measured_matmul_tflops, profile.measured_copy_gbs
    assert mm is not None and bw is not None
    return Ceilings(mm.value * 1e12, vector, bw.value * 1e9, "measured",
                    f"matmul {mm.value:g} TFLOP/s ({mm.source}); copy {bw.value:g} GB/s ({bw.source})")


@dataclass(frozen=True, slots=True)
class OpTime:
    op: OpCost
    compute_s: float
    memory_s: float

    @property
    def seconds(self) -> float:
        return max(self.compute_s, self.memory_s)

    @property
    def bound(self) -> Bound:
        return Bound.COMPUTE if self.compute_s >= self.memory_s else Bound.MEMORY


def op_time(op: OpCost, ceil: Ceilings) -> OpTime:
    peak = ceil.matmul_flops if op.kind is OpKind.MATMUL and not op.fp32_matmul else ceil.vector_flops
    return OpTime(op, op.flops / peak, op.bytes / ceil.bandwidth)


@dataclass(frozen=True, slots=True)
class Prediction:
    workload: Workload
    profile: GPUProfile
    ceilings: Ceilings
    rows: tuple[OpTime, ...]
    global_batch_tokens: int

    # --- phase sums ---
    def seconds(self, *phases: Phase) -> float:
        return sum(r.seconds for r in self.rows if r.op.phase in phases)

    @property
    def fwd_bwd_s(self) -> float:
        return self.seconds(*FWD_BWD)

    @property
    def optimizer_s(self) -> float:
        return self.seconds(Phase.OPTIM)

    @property
    def microbatch_step_s(self) -> float:
        """One optimizer step per microbatch (no gradient accumulation)."""
        return self.fwd_bwd_s + self.optimizer_s

    @property
    def accumulation_steps(self) -> int:
        return self.global_batch_tokens // self.workload.tokens

    @property
    def grad_accumulation_s(self) -> float:
        """Adding each later microbatch's gradients into the fp32 .grad: read both, write one."""
        return grad_accumulation_bytes(self.workload, self.accumulation_steps) / self.ceilings.bandwidth

    @property
    def global_step_s(self) -> float:
        return self.accumulation_steps * self.fwd_bwd_s + self.grad_accumulation_s + self.optimizer_s

    @property
    def tokens_per_s(self) -> float:
        return self.workload.tokens / self.microbatch_step_s

    @property
    def global_tokens_per_s(self) -> float:
        return self.global_batch_tokens / self.global_step_s

    def mfu(self, convention: FlopConvention | str, *, global_batch: bool = True) -> float:
        """Model FLOPs utilisation against the bf16 (or fp32) peak, as MFU is usually quoted: the datasheet's, or a
        cited measurement above it (the roofline's ceiling), so that no step, floor or measured, passes 100%."""
        pol = self.workload.policy
        peak = self.profile.matmul_ceiling(pol.matmul_math).value * 1e12
        rate = self.global_tokens_per_s if global_batch else self.tokens_per_s
        return flops_per_token(self.workload, convention) * rate / peak

    @property
    def memory_bound_share(self) -> float:
        """Share of predicted fwd+bwd time spent in memory-bound ops."""
        rows = [r for r in self.rows if r.op.phase in FWD_BWD]
        total = sum(r.seconds for r in rows)
        return sum(r.seconds for r in rows if r.bound is Bound.MEMORY) / total if total else 0.0

    def to_dict(self) -> JsonObject:
        w = self.workload
        moe = w.model.moe
        route = routing(w) if moe is not None else None
        return {
            "gpu": self.profile.name,
            "model": w.model.name,
            "tokens": w.tokens,
            "seq_len": w.seq_len,
            "impl": w.impl if moe is not None else None,
            "dtype_policy": w.policy.name,
            "attention_backend": w.attention_backend,
            "routing": w.routing if moe is not None else None,
            "capacity": None if route is None else route.capacity,
            "tokens_per_expert": None if route is None else route.tokens_per_expert,
            "ceilings": {
                "source": self.ceilings.source,
                "matmul_tflops": self.ceilings.matmul_flops / 1e12,
                "vector_tflops": self.ceilings.vector_flops / 1e12,
                "bandwidth_gbs": self.ceilings.bandwidth / 1e9,
                "ridge_flop_per_byte": self.ceilings.ridge,
                "notes": self.ceilings.notes,
            },
            "ops": [
                {
                    "op": r.op.name, "group": r.op.group, "phase": str(r.op.phase), "kind": str(r.op.kind),
                    "count": r.op.count, "launches_per_instance": r.op.launches,
                    "model_flops": r.op.model_flops, "flops": r.op.flops,
                    "bytes": {"weights": r.op.traffic.weights, "activations": r.op.traffic.activations,
                              "gradients": r.op.traffic.gradients, "optimizer": r.op.traffic.optimizer,
                              "total": r.op.bytes},
                    "intensity": r.op.intensity, "bound": str(r.bound),
                    "compute_ms": r.compute_s * 1e3, "memory_ms": r.memory_s * 1e3,
                    "predicted_ms": r.seconds * 1e3,
                }
                for r in self.rows
            ],
            "totals": {
                "fwd_ms": self.seconds(Phase.FWD) * 1e3,
                "bwd_dgrad_ms": self.seconds(Phase.BWD_DGRAD) * 1e3,
                "bwd_wgrad_ms": self.seconds(Phase.BWD_WGRAD) * 1e3,
                "optimizer_ms": self.optimizer_s * 1e3,
                "microbatch_step_ms": self.microbatch_step_s * 1e3,
                "tokens_per_s": self.tokens_per_s,
                "global_batch_tokens": self.global_batch_tokens,
                "accumulation_steps": self.accumulation_steps,
                "global_step_ms": self.global_step_s * 1e3,
                "global_tokens_per_s": self.global_tokens_per_s,
                "memory_bound_share": self.memory_bound_share,
                "matmul_flops_fwd_bwd": total_flops((r.op for r in self.rows), phases=FWD_BWD),
                "flops_per_token": {str(c): flops_per_token(w, c) for c in FlopConvention},
                "mfu": {str(c): self.mfu(c) for c in FlopConvention},
                "mfu_microbatch_step": {str(c): self.mfu(c, global_batch=False) for c in FlopConvention},
            },
        }


def predict(
    workload: Workload,
    profile: GPUProfile,
    *,
    ceilings: CeilingSource | str = CeilingSource.SPEC,
    global_batch_tokens: int | None = None,
    calibration: CalibrationRef | None = None,
) -> Prediction:
    """Roofline prediction of one training step; ``global_batch_tokens`` (a multiple of the
    microbatch) adds gradient accumulation, default one microbatch per step."""
    gbt = workload.tokens if global_batch_tokens is None else global_batch_tokens
    if gbt <= 0 or gbt % workload.tokens:
        raise ValueError(f"global batch {gbt} must be a positive multiple of the microbatch {workload.tokens}")
    ceil = ceilings_for(profile, workload.policy.matmul_math, ceilings, calibration)
    rows = tuple(op_time(op, ceil) for op in step_ops(workload))
    return Prediction(workload, profile, ceil, rows, gbt)
