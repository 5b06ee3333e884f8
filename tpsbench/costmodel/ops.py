"""The cost model's conventions and shared parts: phases, kinds of op and data, dtype policies, the workload,
and the builders of linear, norm, residual and SwiGLU ops that every concern uses.

Pure functions of a :class:`Workload` (model spec, tokens per microbatch, sequence length, dtype
policy, MoE implementation, routing assumption). Each op is counted per phase:

* ``fwd``, ``bwd_dgrad`` (gradients w.r.t. activations), ``bwd_wgrad`` (gradients w.r.t. weights),
  ``optim`` (the AdamW step, once per global batch),

with FLOPs and bytes of DRAM traffic split into weights / activations / gradients / optimizer state.
Counts describe the *fewest bytes each op must move* (each input read once, each output written once)
in a graph where chains of elementwise ops are fused, as ``torch.compile`` (which the users train
with) does. A real eager run moves more; the measurement layer reports how much more.

Conventions (stated once, used everywhere):

* A matmul ``[M,K] @ [K,N]`` is ``2*M*K*N`` FLOPs; its backward is one dgrad and one wgrad matmul of
  the same size.
* Attention core: ``QK^T`` and ``PV`` are ``4*S*S*d`` FLOPs per sequence (all heads). With the flash
  backend and a causal mask half of the tiles are skipped (factor 0.5); the math backend computes the
  full square. Backward is 4 matmuls (dQ, dK, dV, dP); flash also recomputes ``QK^T``, listed as its
  own op and excluded from model FLOPs (MFU convention: recomputation is not useful work).
* Routing: ``balanced`` (default) sends ``T*k/E`` tokens to each expert; dropless FLOPs do not depend
  on routing, capacity FLOPs do (padding to ``E*C`` rows).
* Elementwise FLOP counts (norms, SwiGLU, softmax, AdamW) count one FLOP per arithmetic operation
  and one per transcendental; they run on CUDA cores and are never added to matmul FLOPs for MFU.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from tpsbench.errors import InputError, UnknownNameError, closest_choices_message
from tpsbench.impls import get_impl
from tpsbench.models import ModelSpec


class Phase(StrEnum):
    FWD = "fwd"
    BWD_DGRAD = "bwd_dgrad"
    BWD_WGRAD = "bwd_wgrad"
    OPTIM = "optim"


class OpKind(StrEnum):
    MATMUL = "matmul"  # tensor cores
    ELEMENTWISE = "elementwise"  # CUDA cores, usually memory-bound
    MEMORY = "memory"  # data movement only (gather, scatter, casts)


class FlopConvention(StrEnum):
    SIX_N = "6N"  # Kaplan et al. 2020: 6 x (active, non-embedding) parameters per token
    OLMO = "olmo"  # OLMo-core 3's num_flops_per_token: per module, block norms left out, causal attention pairs
    EXACT = "exact"  # the cost model's matmul FLOPs: causal halving and capacity padding included


# --- data types -----------------------------------------------------------------------------------
class WorkloadError(InputError):
    """A workload the cost model cannot count (bad sizes, an unknown implementation, a capacity factor out of
    range); printed as one line."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DTypePolicy:
    """Bytes per element of each kind of data, and which tensor-core rate matmuls run at."""

    name: str
    compute_bytes: int  # matmul operands and activations
    residual_bytes: int  # the residual stream between blocks
    param_bytes: int  # stored (master) parameters
    grad_bytes: int  # accumulated .grad
    optim_state_bytes: int  # each of AdamW's two moments
    autocast: bool  # parameters are cast to the compute dtype once per forward
    matmul_math: str  # "bf16" or "fp32": which profile peak a matmul uses
    description: str
    # What OLMo-core executes beyond that (the olmo_core policy): router logits computed in fp32 on the CUDA
    # cores, the parameters cast again when FSDP unshards them for the backward, the logits upcast to fp32 for
    # the loss (and a z-loss pass over them), and the gradient-norm clipping of the optimizer step.
    router_fp32: bool = False
    recast_params_in_backward: bool = False
    loss_fp32_upcast: bool = False
    grad_clip: bool = False


POLICIES: dict[str, DTypePolicy] = {
    # The users' setup: bf16 autocast, fp32 master weights, fp32 grads and AdamW state. Under autocast
    # the embedding output and so the residual stream stay fp32.
    "amp_bf16": DTypePolicy(
        name="amp_bf16", compute_bytes=2, residual_bytes=4, param_bytes=4, grad_bytes=4,
        optim_state_bytes=4, autocast=True, matmul_math="bf16",
        description="bf16 autocast compute, fp32 master weights, fp32 grads and AdamW state",
    ),
    "bf16": DTypePolicy(
        name="bf16", compute_bytes=2, residual_bytes=2, param_bytes=2, grad_bytes=2,
        optim_state_bytes=4, autocast=False, matmul_math="bf16",
        description="bf16 parameters, activations and grads; fp32 AdamW state",
    ),
    "fp32": DTypePolicy(
        name="fp32", compute_bytes=4, residual_bytes=4, param_bytes=4, grad_bytes=4,
        optim_state_bytes=4, autocast=False, matmul_math="fp32",
        description="everything fp32 (matmuls on CUDA cores, no TF32)",
    ),
    # OLMo-core's single-GPU recipe (FSDP mixed precision at world size 1: fp32 sharded parameters, bf16 when
    # unsharded for the forward and again for the backward, gradients reduced in fp32), its router
    # (``F.linear(x.float(), W.float())``), its loss (logits upcast to fp32, cross-entropy plus a z-loss pass)
    # and AdamW with the gradient norm clipped at 1.0. The residual stream is bf16 (the blocks' parameters are).
    "olmo_core": DTypePolicy(
        name="olmo_core", compute_bytes=2, residual_bytes=2, param_bytes=4, grad_bytes=4,
        optim_state_bytes=4, autocast=True, matmul_math="bf16", router_fp32=True, recast_params_in_backward=True,
        loss_fp32_upcast=True, grad_clip=True,
        description="OLMo-core's: bf16 unsharded parameters cast in forward and backward, fp32 gradients, fp32 "
        "router, fp32 loss with z-loss, gradient clipping",
    ),
}
DEFAULT_POLICY = POLICIES["amp_bf16"]


def get_policy(name: str) -> DTypePolicy:
    if name not in POLICIES:
        raise UnknownNameError(closest_choices_message("dtype policy", name, list(POLICIES)))
    return POLICIES[name]


CAPACITY_MULTIPLE = 8  # capacity rounded up to a multiple of 8 rows (tensor-core friendly)
DEFAULT_CAPACITY_FACTOR = 1.2


FWD_BWD = (Phase.FWD, Phase.BWD_DGRAD, Phase.BWD_WGRAD)


@dataclass(frozen=True, slots=True)
class Traffic:
    """Bytes of DRAM traffic by kind of data."""

    weights: float = 0.0
    activations: float = 0.0
    gradients: float = 0.0
    optimizer: float = 0.0

    @property
    def total(self) -> float:
        return self.weights + self.activations + self.gradients + self.optimizer

    def __add__(self, other: Traffic) -> Traffic:
        return Traffic(
            self.weights + other.weights,
            self.activations + other.activations,
            self.gradients + other.gradients,
            self.optimizer + other.optimizer,
        )

    def scaled(self, k: float) -> Traffic:
        return Traffic(self.weights * k, self.activations * k, self.gradients * k, self.optimizer * k)


@dataclass(frozen=True, slots=True)
class GemmShape:
    """The problem one launch of a matmul op computes: ``groups`` independent ``[m,k] @ [k,n]`` products
    (experts, or matrices sharing an input). What the expected-time model's GEMM efficiency depends on
    (tiles per SM, the length of the reduction), per instance (layer)."""

    m: int
    n: int
    k: int
    groups: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class OpCost:
    """One op in one phase, totalled over its ``count`` instances (layers) in a step."""

    name: str
    group: str  # embedding, attention, mlp, moe, head, optimizer
    phase: Phase
    kind: OpKind
    flops: float
    traffic: Traffic
    count: int = 1
    launches: int = 1  # kernel launches per instance (per layer)
    model_flops: bool = True  # False for recomputation (excluded from MFU)
    fp32_matmul: bool = False  # a matmul in fp32 without TF32: the CUDA cores' rate, not the tensor cores'
    gemm: GemmShape | None = None  # a matmul's problem shape per instance (None: not a plain GEMM)
    # Eager PyTorch (tpsbench's own modules, no torch.compile) runs an elementwise op as a chain of aten kernels,
    # each reading and writing its tensors in DRAM: bytes over all instances and kernels per instance there
    # (None: as the fused graph above).
    eager_bytes: float | None = None
    eager_launches: int | None = None
    # Elements added into rows that other rows also add into (index_add / index_put with accumulate): atomics,
    # far slower than a stream of the same bytes. Over all instances.
    atomic_elements: float = 0.0

    @property
    def bytes(self) -> float:
        return self.traffic.total

    @property
    def intensity(self) -> float | None:
        """FLOP per byte; None for an op that moves no bytes."""
        return self.flops / self.bytes if self.bytes else None

    def times(self, count: int) -> OpCost:
        return OpCost(
            name=self.name, group=self.group, phase=self.phase, kind=self.kind,
            flops=self.flops * count, traffic=self.traffic.scaled(count), count=self.count * count,
            launches=self.launches, model_flops=self.model_flops, fp32_matmul=self.fp32_matmul, gemm=self.gemm,
            eager_bytes=None if self.eager_bytes is None else self.eager_bytes * count,
            eager_launches=self.eager_launches, atomic_elements=self.atomic_elements * count,
        )


RECOMPUTE_MODES = ("none", "full")


@dataclass(frozen=True, slots=True, kw_only=True)
class Workload:
    """What is costed: one microbatch of ``tokens`` tokens in sequences of ``seq_len``."""

    model: ModelSpec
    tokens: int
    seq_len: int
    impl: str = "dropless"
    capacity_factor: float | None = None  # None: the model's own, else 1.2
    policy: DTypePolicy = field(default=DEFAULT_POLICY)
    causal: bool = True
    attention_backend: str = "flash"  # "flash" (GPU) or "math" (explicit S x S matrices)
    routing: str = "balanced"
    # Activation checkpointing: "none", or "full" (every block's forward is run again in the backward, its
    # input the only tensor it saves: torchtitan's ``activation_checkpoint.mode = "full"``)
    recompute: str = "none"

    def __post_init__(self) -> None:
        if self.tokens <= 0 or self.seq_len <= 0:
            raise WorkloadError(f"tokens ({self.tokens}) and seq_len ({self.seq_len}) must be positive")
        if self.tokens % self.seq_len:
            raise WorkloadError(f"tokens ({self.tokens}) must be a multiple of seq_len ({self.seq_len})")
        get_impl(self.impl)  # an unknown implementation gets the closest choices
        if self.attention_backend not in ("flash", "math"):
            raise WorkloadError(f"attention_backend must be 'flash' or 'math', got {self.attention_backend!r}")
        if self.recompute not in RECOMPUTE_MODES:
            raise WorkloadError(f"recompute must be one of {', '.join(RECOMPUTE_MODES)}, got {self.recompute!r}")
        if self.routing != "balanced":
            raise WorkloadError("the cost model assumes balanced routing (tokens per expert = T*k/E)")
        moe = self.model.moe
        if self.capacity_factor is not None and moe is not None:
            most = moe.num_experts / moe.top_k  # C = cf * T*k/E reaches T: room for every token in every expert
            if not (math.isfinite(self.capacity_factor) and 0 < self.capacity_factor <= most):
                raise WorkloadError(
                    f"capacity factor {self.capacity_factor:g} for {self.model.name} ({moe.num_experts} experts, "
                    f"top-{moe.top_k}) must be in (0, {most:g}]: at {most:g} every expert has room for every token")

    @property
    def sequences(self) -> int:
        return self.tokens // self.seq_len

    @property
    def effective_capacity_factor(self) -> float:
        if self.capacity_factor is not None:
            return self.capacity_factor
        moe = self.model.moe
        if moe is not None and moe.capacity_factor is not None:
            return moe.capacity_factor
        return DEFAULT_CAPACITY_FACTOR


def linear_ops(
    name: str, group: str, *, rows: int, k: int, n: int, pol: DTypePolicy, matrices: int = 1,
    weight_sets: int = 1, launches: int | None = None,
) -> list[OpCost]:
    """``matrices`` independent linears ``[rows,k] @ [k,n]`` sharing one input (e.g. w_q, w_k, w_v),
    over ``weight_sets`` weight copies (experts) whose rows add up to ``rows``.

    Each input, weight and output is read or written once per matmul launch.
    """
    c = pol.compute_bytes
    flops = 2.0 * rows * k * n * matrices
    x, y, wt = rows * k * c, rows * n * c, weight_sets * k * n * c
    nl = launches if launches is not None else 1
    per_set = max(1, round(rows / weight_sets))  # rows of one weight set (balanced)
    groups = weight_sets * matrices
    return [
        OpCost(name=name, group=group, phase=Phase.FWD, kind=OpKind.MATMUL, flops=flops,
               traffic=Traffic(weights=wt * matrices, activations=(x + y) * matrices),
               launches=nl * matrices, gemm=GemmShape(per_set, n, k, groups)),
        OpCost(name=name, group=group, phase=Phase.BWD_DGRAD, kind=OpKind.MATMUL, flops=flops,
               traffic=Traffic(weights=wt * matrices, gradients=(y + x) * matrices),
               launches=nl * matrices, gemm=GemmShape(per_set, k, n, groups)),
        OpCost(name=name, group=group, phase=Phase.BWD_WGRAD, kind=OpKind.MATMUL, flops=flops,
               traffic=Traffic(activations=x * matrices, gradients=(y + wt) * matrices),
               launches=nl * matrices, gemm=GemmShape(k, n, per_set, groups)),
    ]


@dataclass(frozen=True, slots=True)
class Eager:
    """How eager PyTorch runs an elementwise op (tpsbench/nn's code, one aten kernel per op that launches one):
    bytes and kernels of the forward and of the backward."""

    fwd_bytes: float
    fwd_launches: int
    bwd_bytes: float
    bwd_launches: int


def elementwise_ops(
    name: str, group: str, *, fwd_flops: float, fwd: Traffic, bwd_flops: float, bwd: Traffic,
    kind: OpKind = OpKind.ELEMENTWISE, launches: int = 1, eager: Eager | None = None,
) -> list[OpCost]:
    e = eager
    return [
        OpCost(name=name, group=group, phase=Phase.FWD, kind=kind, flops=fwd_flops, traffic=fwd,
               launches=launches, eager_bytes=None if e is None else e.fwd_bytes,
               eager_launches=None if e is None else e.fwd_launches),
        OpCost(name=name, group=group, phase=Phase.BWD_DGRAD, kind=kind, flops=bwd_flops, traffic=bwd,
               launches=launches, eager_bytes=None if e is None else e.bwd_bytes,
               eager_launches=None if e is None else e.bwd_launches),
    ]


def input_cast_ops(name: str, group: str, *, rows: int, width: int, casts: int, pol: DTypePolicy) -> list[OpCost]:
    """Eager autocast with an fp32 residual stream (``amp_bf16``): each matmul reading a fp32 activation casts it
    to bf16 itself (``casts`` of one ``[rows, width]`` tensor: read 4, write 2 bytes per element); backward casts
    each gradient back to fp32 and sums the ``casts`` gradients of the shared input in fp32. A compiled graph
    fuses the casts into the producing kernel: no bytes and no kernels of their own there (the fused counts
    are zero). Seen on the H100: bf16 and fp32 copy and fp32 add kernels are 36% of moe_1b's MoE layer's GPU
    time (results/h100-kernels/rows/moe_1b-host-trace.log)."""
    if not (pol.autocast and pol.residual_bytes > pol.compute_bytes) or casts <= 0:
        return []
    n, c, r = rows * width, pol.compute_bytes, pol.residual_bytes
    eager = Eager(fwd_bytes=casts * n * (r + c), fwd_launches=casts,
                  bwd_bytes=casts * n * (c + r) + (casts - 1) * n * 3 * r, bwd_launches=2 * casts - 1)
    return elementwise_ops(name, group, kind=OpKind.MEMORY, fwd_flops=0.0, fwd=Traffic(), bwd_flops=0.0,
                           bwd=Traffic(), launches=0, eager=eager)


def rmsnorm_ops(name: str, group: str, *, rows: int, width: int, in_bytes: int, pol: DTypePolicy) -> list[OpCost]:
    """RMSNorm with weight: fwd x^2, sum, rsqrt, scale, weight (4 FLOP/element); bwd about twice that."""
    n, c = rows * width, pol.compute_bytes
    # Eager (tpsbench.nn.layers.RMSNorm, in fp32): x.float(), pow, mean, add, rsqrt, mul, mul by the weight,
    # cast back: 7 kernels over fp32 rows; its backward about twice the kernels and bytes.
    up = 0 if in_bytes == 4 else n * (in_bytes + 4)
    eager = Eager(fwd_bytes=up + n * 4 * 8 + n * (4 + c), fwd_launches=7 + (in_bytes != 4),
                  bwd_bytes=n * 4 * 16 + n * (c + 4 + in_bytes), bwd_launches=14)
    return elementwise_ops(
        name, group, eager=eager,
        fwd_flops=4.0 * n,
        fwd=Traffic(weights=width * pol.param_bytes, activations=n * in_bytes + n * c),
        bwd_flops=8.0 * n,
        bwd=Traffic(weights=width * pol.param_bytes, activations=n * in_bytes,
                    gradients=n * c + n * in_bytes + width * pol.grad_bytes),
    )


def residual_ops(name: str, group: str, *, tokens: int, d: int, pol: DTypePolicy) -> list[OpCost]:
    n, rb, c = tokens * d, pol.residual_bytes, pol.compute_bytes
    return elementwise_ops(
        name, group,
        fwd_flops=1.0 * n, fwd=Traffic(activations=n * (rb + c + rb)),
        # Backward: autograd sums the gradients of the two paths that read the residual.
        bwd_flops=1.0 * n, bwd=Traffic(gradients=n * 3 * rb),
    )


def swiglu_act_ops(
    name: str, group: str, *, rows: int, hidden: int, pol: DTypePolicy, launches: int = 1
) -> list[OpCost]:
    """silu(a) * b: sigmoid (exp, add, div) + 2 mul = 5 FLOP/element fwd, ~10 bwd."""
    n, c = rows * hidden, pol.compute_bytes
    # Eager: silu(a), then * b (2 kernels, s written and read back); backward: g*b, g*s, silu_backward.
    eager = Eager(fwd_bytes=5 * n * c, fwd_launches=2 * launches, bwd_bytes=9 * n * c, bwd_launches=3 * launches)
    return elementwise_ops(
        name, group, eager=eager,
        fwd_flops=5.0 * n, fwd=Traffic(activations=3 * n * c),
        bwd_flops=10.0 * n, bwd=Traffic(activations=2 * n * c, gradients=3 * n * c),
        launches=launches,
    )


def total_flops(ops: Iterable[OpCost], *, phases: Iterable[Phase] | None = None,
                kinds: Iterable[OpKind] | None = (OpKind.MATMUL,), model_only: bool = True) -> float:
    ph = set(phases) if phases is not None else None
    kd = set(kinds) if kinds is not None else None
    return sum(
        op.flops for op in ops
        if (ph is None or op.phase in ph) and (kd is None or op.kind in kd) and (op.model_flops or not model_only)
    )
