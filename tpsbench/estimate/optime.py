"""The expected GPU time and the kernel launches of one instance of a cost-model op on one GPU.

A floor (tpsbench.roofline) divides FLOPs and bytes by the ceilings; here each is divided by the efficiency
the op's kind and size reach (tpsbench.estimate.table):

* a GEMM with a shape runs at ``peak * gemm_peak_fraction * waves(M, N, groups) * K^p / (K^p + k_half^p)``, where
  ``waves`` is the fraction of SM-slots its output tiles fill (wave quantisation: 256 experts of 128 rows on
  132 SMs fill few tiles per wave) after the split-K that cuBLAS picks for small outputs with a long reduction;
* the flash attention core at its own fractions of the peak (forward, backward);
* memory-bound ops at ``bandwidth * dram_fraction``; in eager mode (no torch.compile) with the bytes and
  kernels of the chain of aten kernels the cost model counts for them (``OpCost.eager_bytes``,
  ``eager_launches``), compiled with those of the fused graph;
* every kernel takes at least ``kernel_floor_s``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tpsbench.costmodel import GemmShape, OpCost, OpKind, Phase
from tpsbench.estimate.table import GEMM_TILE, EfficiencyTable
from tpsbench.profiles import GPUProfile

# Split-K: cuBLAS splits a long reduction when the output has too few tiles to fill the SMs (the "splitK"
# kernels of results/h100-kernels/rows/moe_1b-host-trace.log); each split keeps at least this much of K.
MIN_SPLIT_K = 1024


@dataclass(frozen=True, slots=True)
class Rates:
    """The ceilings an expected time divides by: datasheet peaks times the table's fractions."""

    matmul_flops: float
    vector_flops: float
    bandwidth: float
    sm_count: int

    @classmethod
    def of(cls, profile: GPUProfile, matmul_math: str, table: EfficiencyTable) -> Rates:
        peak = profile.matmul_peak(matmul_math).value * 1e12
        return cls(matmul_flops=peak * table.gemm_peak_fraction.value,
                   vector_flops=profile.fp32_tflops.value * 1e12 * table.gemm_peak_fraction.value,
                   bandwidth=profile.mem_bandwidth_gbs.value * 1e9 * table.dram_fraction.value,
                   sm_count=int(profile.sm_count.value))


def wave_fraction(shape: GemmShape, groups_per_launch: int, sm_count: int) -> tuple[float, int]:
    """Useful fraction of the SM-tile slots a launch occupies, and the split-K factor it runs with."""
    tm, tn = math.ceil(shape.m / GEMM_TILE), math.ceil(shape.n / GEMM_TILE)
    tiles = tm * tn * groups_per_launch
    split = 1
    if tiles < sm_count and shape.k >= 2 * MIN_SPLIT_K:
        split = max(1, min(sm_count // tiles, shape.k // MIN_SPLIT_K))
    slots = tiles * split
    waves = math.ceil(slots / sm_count)
    fill = (shape.m * shape.n) / (tm * GEMM_TILE * tn * GEMM_TILE)
    return fill * slots / (waves * sm_count), split


@dataclass(frozen=True, slots=True)
class KernelCost:
    """One op instance: its kernels and the GPU time they take together."""

    gpu_s: float
    launches: int
    bound: str  # "compute", "memory" or "floor": what sets its time


def op_instance_cost(op: OpCost, rates: Rates, table: EfficiencyTable, *, compiled: bool) -> KernelCost:
    """Expected GPU time of one instance (one layer) of ``op``."""
    inst = max(op.count, 1)
    flops, nbytes = op.flops / inst, op.bytes / inst
    launches = op.launches
    floor = table.kernel_floor_s.value
    if op.kind is OpKind.MATMUL and launches == 0:  # recomputation inside another kernel: already timed there
        return KernelCost(0.0, 0, "compute")
    if op.kind is OpKind.MATMUL and op.fp32_matmul:
        compute = flops / rates.vector_flops
    elif op.kind is OpKind.MATMUL and op.gemm is not None:
        per_launch = max(1, op.gemm.groups // max(launches, 1))
        fill, split = wave_fraction(op.gemm, per_launch, rates.sm_count)
        k = op.gemm.k / split
        grouped = table.grouped_gemm_fraction.value if per_launch > 1 else 1.0
        p, k_half = table.gemm_k_exponent.value, table.gemm_k_half.value
        compute = flops / (rates.matmul_flops * fill * grouped * k ** p / (k ** p + k_half ** p))
    elif op.kind is OpKind.MATMUL:  # the attention core
        frac = table.attention_fwd_fraction if op.phase is Phase.FWD else table.attention_bwd_fraction
        compute = flops / (rates.matmul_flops / table.gemm_peak_fraction.value * frac.value)
    else:
        compute = 0.0
        if not compiled and op.eager_bytes is not None:
            nbytes = op.eager_bytes / inst
        if not compiled and op.eager_launches is not None:
            launches = op.eager_launches
    memory = nbytes / rates.bandwidth + op.atomic_elements / inst / table.atomic_add_per_s.value
    busy = max(compute, memory)
    total = busy + launches * floor
    bound = "floor" if launches * floor > busy else ("compute" if compute >= memory else "memory")
    return KernelCost(total, launches, bound)
