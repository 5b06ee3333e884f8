"""Per-op cost model of one training step: FLOPs and bytes, per phase, split by kind of data.

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

from tpsbench.models import BRACKETS, ModelSpec, UnknownNameError, bracket_spec, closest_choices_message


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
    OLMO = "olmo"  # OLMo-core num_flops_per_token: 6N + 12 * layers * heads * head_dim * seq
    EXACT = "exact"  # the cost model's matmul FLOPs: causal halving and capacity padding included


# --- data types -----------------------------------------------------------------------------------
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
}
DEFAULT_POLICY = POLICIES["amp_bf16"]


def get_policy(name: str) -> DTypePolicy:
    if name not in POLICIES:
        raise UnknownNameError(closest_choices_message("dtype policy", name, list(POLICIES)))
    return POLICIES[name]


# --- MoE implementations as the cost model sees them ------------------------------------------------
MOE_IMPLS: dict[str, str] = {
    "dropless": "every routed token computed; tokens sorted by expert, one grouped GEMM per stage",
    "grouped": "same as dropless (torch._grouped_mm over expert-sorted tokens)",
    "loop": "dropless; one GEMM launch per expert per stage (same bytes and FLOPs, E times the launches)",
    "capacity": "token dropping: each expert padded to C = round_up(cf * T*k/E, 8) rows, batched GEMM",
    "triton": "dropless, fused (kernels/moe_experts.py): GEMMs gather token rows, SwiGLU in the GEMM epilogues, "
    "top-k outputs summed per token from a row buffer, weight gradients written in the parameters' dtype",
}
CAPACITY_MULTIPLE = 8  # capacity rounded up to a multiple of 8 rows (tensor-core friendly)
DEFAULT_CAPACITY_FACTOR = 1.2


# --- bytes and ops -------------------------------------------------------------------------------
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
            launches=self.launches, model_flops=self.model_flops,
        )


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

    def __post_init__(self) -> None:
        if self.tokens <= 0 or self.seq_len <= 0:
            raise ValueError(f"tokens ({self.tokens}) and seq_len ({self.seq_len}) must be positive")
        if self.tokens % self.seq_len:
            raise ValueError(f"tokens ({self.tokens}) must be a multiple of seq_len ({self.seq_len})")
        if self.impl not in MOE_IMPLS:
            raise UnknownNameError(closest_choices_message("MoE implementation", self.impl, list(MOE_IMPLS)))
        if self.attention_backend not in ("flash", "math"):
            raise ValueError(f"attention_backend must be 'flash' or 'math', got {self.attention_backend!r}")
        if self.routing != "balanced":
            raise ValueError("the cost model assumes balanced routing (tokens per expert = T*k/E)")

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


# --- routing arithmetic -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Routing:
    tokens_per_expert: float  # balanced: T*k/E
    expert_rows: int  # rows the expert GEMMs compute (T*k dropless, E*C capacity)
    kept_assignments: int  # token-expert pairs actually computed
    experts_touched: int  # experts whose weights are read
    capacity: int | None
    dropped_fraction: float


def capacity_rows(tokens: int, top_k: int, num_experts: int, capacity_factor: float) -> int:
    """Slots per expert: ``round_up(cf * T*k/E, 8)`` (the users' capacity MoE)."""
    return CAPACITY_MULTIPLE * math.ceil(capacity_factor * tokens * top_k / num_experts / CAPACITY_MULTIPLE)


def routing(w: Workload) -> Routing:
    moe = w.model.moe
    assert moe is not None
    assignments = w.tokens * moe.top_k
    per_expert = assignments / moe.num_experts
    if w.impl == "capacity":
        cap = capacity_rows(w.tokens, moe.top_k, moe.num_experts, w.effective_capacity_factor)
        kept_per_expert = min(per_expert, cap)
        kept = round(kept_per_expert * moe.num_experts)
        return Routing(
            per_expert, moe.num_experts * cap, kept, moe.num_experts, cap, 1.0 - kept / assignments
        )
    return Routing(per_expert, assignments, assignments, min(moe.num_experts, assignments), None, 0.0)


# --- op builders ----------------------------------------------------------------------------------
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
    return [
        OpCost(name=name, group=group, phase=Phase.FWD, kind=OpKind.MATMUL, flops=flops,
               traffic=Traffic(weights=wt * matrices, activations=(x + y) * matrices),
               launches=nl * matrices),
        OpCost(name=name, group=group, phase=Phase.BWD_DGRAD, kind=OpKind.MATMUL, flops=flops,
               traffic=Traffic(weights=wt * matrices, gradients=(y + x) * matrices),
               launches=nl * matrices),
        OpCost(name=name, group=group, phase=Phase.BWD_WGRAD, kind=OpKind.MATMUL, flops=flops,
               traffic=Traffic(activations=x * matrices, gradients=(y + wt) * matrices),
               launches=nl * matrices),
    ]


def _elementwise(
    name: str, group: str, *, fwd_flops: float, fwd: Traffic, bwd_flops: float, bwd: Traffic,
    kind: OpKind = OpKind.ELEMENTWISE, launches: int = 1,
) -> list[OpCost]:
    return [
        OpCost(name=name, group=group, phase=Phase.FWD, kind=kind, flops=fwd_flops, traffic=fwd,
               launches=launches),
        OpCost(name=name, group=group, phase=Phase.BWD_DGRAD, kind=kind, flops=bwd_flops, traffic=bwd,
               launches=launches),
    ]


def rmsnorm_ops(name: str, group: str, *, rows: int, width: int, in_bytes: int, pol: DTypePolicy) -> list[OpCost]:
    """RMSNorm with weight: fwd x^2, sum, rsqrt, scale, weight (4 FLOP/element); bwd about twice that."""
    n, c = rows * width, pol.compute_bytes
    return _elementwise(
        name, group,
        fwd_flops=4.0 * n,
        fwd=Traffic(weights=width * pol.param_bytes, activations=n * in_bytes + n * c),
        bwd_flops=8.0 * n,
        bwd=Traffic(weights=width * pol.param_bytes, activations=n * in_bytes,
                    gradients=n * c + n * in_bytes + width * pol.grad_bytes),
    )


def residual_ops(name: str, group: str, *, tokens: int, d: int, pol: DTypePolicy) -> list[OpCost]:
    n, rb, c = tokens * d, pol.residual_bytes, pol.compute_bytes
    return _elementwise(
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
    return _elementwise(
        name, group,
        fwd_flops=5.0 * n, fwd=Traffic(activations=3 * n * c),
        bwd_flops=10.0 * n, bwd=Traffic(activations=2 * n * c, gradients=3 * n * c),
        launches=launches,
    )


def attention_ops(w: Workload) -> list[OpCost]:
    """The attention sub-block: norm, attention layer, residual add."""
    m, pol = w.model, w.policy
    t, d, c = w.tokens, m.d_model, pol.compute_bytes
    in_bytes = c if m.reordered_norm else pol.residual_bytes
    ops: list[OpCost] = []
    if not m.reordered_norm:
        ops += rmsnorm_ops("attn.norm", "attention", rows=t, width=d, in_bytes=in_bytes, pol=pol)
    ops += attention_layer_ops(w)
    if m.reordered_norm:
        ops += rmsnorm_ops("attn.norm", "attention", rows=t, width=d, in_bytes=in_bytes, pol=pol)
    ops += residual_ops("attn.residual", "attention", tokens=t, d=d, pol=pol)
    return ops


def attention_layer_ops(w: Workload) -> list[OpCost]:
    """The attention layer alone: q/k/v projections, qk-norm, RoPE, attention core, output projection."""
    m, pol = w.model, w.policy
    t, d, c = w.tokens, m.d_model, pol.compute_bytes
    ops: list[OpCost] = []
    ops += linear_ops("attn.qkv", "attention", rows=t, k=d, n=d, pol=pol, matrices=3)
    if m.qk_norm:
        # Non-head-wise qk-norm (OLMo-core default): RMSNorm over the full q and k projections.
        ops += [op.times(2) for op in rmsnorm_ops("attn.qk_norm", "attention", rows=t, width=d, in_bytes=c, pol=pol)]
    # RoPE on q and k: x*cos + rotate(x)*sin = 3 FLOP/element; the cos/sin tables (fp32) are tiny.
    table = 2 * w.seq_len * m.head_dim * 4
    ops += _elementwise(
        "attn.rope", "attention",
        fwd_flops=3.0 * 2 * t * d, fwd=Traffic(activations=2 * t * d * c * 2 + table),
        bwd_flops=3.0 * 2 * t * d, bwd=Traffic(activations=table, gradients=2 * t * d * c * 2),
    )
    ops += attention_core_ops(w)
    ops += linear_ops("attn.out", "attention", rows=t, k=d, n=d, pol=pol)
    return ops


def attention_core_ops(w: Workload) -> list[OpCost]:
    m = w.model
    b, s, d, c = w.sequences, w.seq_len, m.d_model, w.policy.compute_bytes
    t = w.tokens
    skip = 0.5 if (w.causal and w.attention_backend == "flash") else 1.0
    fwd_flops = 4.0 * b * s * s * d * skip
    lse = t * m.n_heads * 4  # fp32 log-sum-exp per row, saved for backward
    qkvo = 4 * t * d * c
    if w.attention_backend == "flash":
        fwd = Traffic(activations=qkvo + lse)
        bwd = Traffic(activations=3 * t * d * c + t * d * c + lse, gradients=t * d * c + 3 * t * d * c)
        ops = [
            OpCost(name="attn.core", group="attention", phase=Phase.FWD, kind=OpKind.MATMUL,
                   flops=fwd_flops, traffic=fwd),
            OpCost(name="attn.core", group="attention", phase=Phase.BWD_DGRAD, kind=OpKind.MATMUL,
                   flops=2 * fwd_flops, traffic=bwd),
            OpCost(name="attn.core_recompute", group="attention", phase=Phase.BWD_DGRAD,
                   kind=OpKind.MATMUL, flops=fwd_flops / 2, traffic=Traffic(), launches=0,
                   model_flops=False),
        ]
        return ops
    # Math backend: scores and probabilities (B*H*S*S) are written and read back in each direction.
    square = b * m.n_heads * s * s * c
    return [
        OpCost(name="attn.core", group="attention", phase=Phase.FWD, kind=OpKind.MATMUL,
               flops=fwd_flops, traffic=Traffic(activations=qkvo + 4 * square), launches=5),
        OpCost(name="attn.core", group="attention", phase=Phase.BWD_DGRAD, kind=OpKind.MATMUL,
               flops=2 * fwd_flops, traffic=Traffic(activations=4 * t * d * c + 2 * square,
                                                     gradients=4 * t * d * c + 4 * square), launches=6),
    ]


def dense_mlp_ops(w: Workload, hidden: int, *, prefix: str = "mlp", group: str = "mlp") -> list[OpCost]:
    t, d, pol = w.tokens, w.model.d_model, w.policy
    return [
        *linear_ops(f"{prefix}.up_gate", group, rows=t, k=d, n=hidden, pol=pol, matrices=2),
        *swiglu_act_ops(f"{prefix}.act", group, rows=t, hidden=hidden, pol=pol),
        *linear_ops(f"{prefix}.down", group, rows=t, k=hidden, n=d, pol=pol),
    ]


def moe_ops(w: Workload) -> list[OpCost]:
    """The MoE FFN: router, top-k, permute, expert GEMMs, activation, unpermute, shared expert."""
    m, pol = w.model, w.policy
    moe = m.moe
    assert moe is not None
    t, d, c, k, e = w.tokens, m.d_model, pol.compute_bytes, moe.top_k, moe.num_experts
    ops: list[OpCost] = []
    ops += linear_ops("moe.router", "moe", rows=t, k=d, n=e, pol=pol)
    # Softmax (5/elem), top-k selection (~1), z-loss logsumexp (3), load-balance statistics (1).
    idx_bytes = t * k * (4 + 8)  # fp32 weights + int64 indices
    ops += _elementwise(
        "moe.router_topk", "moe",
        fwd_flops=10.0 * t * e, fwd=Traffic(activations=t * e * c + idx_bytes + e * 8),
        bwd_flops=6.0 * t * e, bwd=Traffic(activations=t * e * 4, gradients=t * k * 4 + t * e * c),
    )
    ops += fused_expert_ops(w) if w.impl == "triton" else unfused_expert_ops(w)
    if moe.shared_hidden:
        ops += dense_mlp_ops(w, moe.shared_hidden, prefix="moe.shared", group="moe")
        # out = shared / (k+1) + routed * k / (k+1)
        n = t * d
        ops += _elementwise(
            "moe.mix", "moe",
            fwd_flops=3.0 * n, fwd=Traffic(activations=3 * n * c),
            bwd_flops=2.0 * n, bwd=Traffic(gradients=3 * n * c),
        )
    return ops


def unfused_expert_ops(w: Workload) -> list[OpCost]:
    """The routed experts as separate ops (dropless, grouped, loop, capacity): permute, up/gate GEMM,
    SwiGLU, down GEMM, unpermute, each reading and writing its operands in DRAM."""
    m, pol = w.model, w.policy
    moe = m.moe
    assert moe is not None
    t, d, c, k, h = w.tokens, m.d_model, pol.compute_bytes, moe.top_k, moe.expert_hidden
    r = routing(w)
    per_expert = r.experts_touched if w.impl == "loop" else 1
    ops: list[OpCost] = []
    # Permute: sort assignments by expert (T*k int64 keys) and gather token rows into expert order.
    # Capacity writes the whole padded E*C buffer (zeros included).
    gathered = r.kept_assignments * d * c
    written = r.expert_rows * d * c
    sort = 3 * t * k * 8
    ops += _elementwise(
        "moe.permute", "moe", kind=OpKind.MEMORY,
        fwd_flops=0.0, fwd=Traffic(activations=gathered + written + sort),
        bwd_flops=1.0 * r.kept_assignments * d,
        bwd=Traffic(gradients=r.kept_assignments * d * c + t * d * c), launches=per_expert,
    )
    ops += linear_ops("moe.expert_up_gate", "moe", rows=r.expert_rows, k=d, n=h, pol=pol, matrices=2,
                      weight_sets=r.experts_touched, launches=per_expert)
    ops += swiglu_act_ops("moe.expert_act", "moe", rows=r.expert_rows, hidden=h, pol=pol, launches=per_expert)
    ops += linear_ops("moe.expert_down", "moe", rows=r.expert_rows, k=h, n=d, pol=pol,
                      weight_sets=r.experts_touched, launches=per_expert)
    # Unpermute: weight each expert output by its router probability and sum the k rows per token.
    ops += _elementwise(
        "moe.unpermute", "moe", kind=OpKind.MEMORY,
        fwd_flops=2.0 * r.kept_assignments * d,
        fwd=Traffic(activations=r.kept_assignments * d * c + t * k * 4 + t * d * c),
        bwd_flops=4.0 * r.kept_assignments * d,
        bwd=Traffic(activations=r.kept_assignments * d * c,
                    gradients=t * d * c + r.expert_rows * d * c + t * k * 4),
        launches=per_expert,
    )
    return ops


def fused_expert_ops(w: Workload) -> list[OpCost]:
    """The routed experts of ``--impl triton`` (kernels/moe_experts.py) as its kernels move data, each
    operand read once and each output written once (the floor of that design; re-reads from DRAM are the
    kernels' inefficiency, not part of it). Names match the unfused ops so tables line up:

    fwd:  routing plan (``moe.permute``); up/gate GEMM reading x's rows through the plan, writing a and b
          once for both matrices; ``h = gate*silu(a)*b`` (scaled by the router weight) written by its
          epilogue (``moe.expert_act``); down GEMM reading h, its rows written to the token's output row
          (top-1) or to a row buffer that a gather-sum adds per token (``moe.unpermute``, top-k > 1).
    bwd:  down data-gradient reading dOut's rows through the plan, with the SwiGLU backward (a, b read,
          da, db written: ``moe.expert_act``) and the router-weight gradient in its epilogue (dH never
          written); dX from da and db in one GEMM, rows summed like the forward (``moe.permute``, top-k > 1);
          weight gradients dW1 and dW3 in one pass over x's rows, dW2 from h, written in the parameters'
          dtype (no separate cast of the experts' weight gradients: see cast_ops).
    The kernels also have a split down data-gradient (dH written by the GEMM, read back by a SwiGLU-backward
    kernel: 2 x rows x h more elements), picked per shape when it is faster (olmoe_1b_7b on the H100:
    2.70 vs 4.76 ms). It is not counted: the count stays the design's lower bound.
    """
    m, pol = w.model, w.policy
    moe = m.moe
    assert moe is not None
    t, d, c, k, e, h = w.tokens, m.d_model, pol.compute_bytes, moe.top_k, moe.num_experts, moe.expert_hidden
    rows = t * k
    nd, nh = rows * d, rows * h
    gemm = 2.0 * rows * d * h
    weights = e * d * h * c  # one matrix of every expert, in the compute dtype
    dw = e * d * h * pol.grad_bytes
    # top-1: rows go straight to the token's row; top-k: a row buffer, read back by the gather-sum
    row_out = t * d * c if k == 1 else nd * c
    plan = rows * (8 + 4) + rows * 4 * 4  # int64 indices and fp32 weights in; tok, src, row_of, gate out
    index = rows * 4 * 2  # tok and gate per row, read by each row kernel

    def op(name: str, phase: Phase, kind: OpKind, flops: float, traffic: Traffic, launches: int = 1) -> OpCost:
        return OpCost(name=name, group="moe", phase=phase, kind=kind, flops=flops, traffic=traffic,
                      launches=launches)

    fwd, dgrad, wgrad = Phase.FWD, Phase.BWD_DGRAD, Phase.BWD_WGRAD
    mm, mem, ew = OpKind.MATMUL, OpKind.MEMORY, OpKind.ELEMENTWISE
    # Elementwise FLOPs as the unfused ops count them, where the kernels do the same math: the SwiGLU
    # (5 fwd, 10 bwd per element), the router-weight scaling and the k-row sum (2 per output element). The
    # fused backward takes the router-weight gradient in h-space, <dOut[tok] W2^T, h> (2 per element of h)
    # plus the scaling of dH (1), instead of the unfused <dOut, y> path. Epilogue work moves no bytes of
    # its own: those ops have no launches and no traffic.
    ops = [
        op("moe.permute", fwd, mem, 0.0, Traffic(activations=plan)),
        op("moe.expert_up_gate", fwd, mm, 2 * gemm,
           Traffic(weights=2 * weights, activations=nd * c + 2 * nh * c + index)),
        op("moe.expert_act", fwd, ew, 5.0 * nh, Traffic(activations=nh * c), launches=0),
        op("moe.expert_down", fwd, mm, gemm, Traffic(weights=weights, activations=nh * c + row_out + index)),
        op("moe.unpermute", fwd, mem, 2.0 * nd if k > 1 else float(nd),
           Traffic(activations=rows * 4 + nd * c + t * d * c) if k > 1 else Traffic(), launches=int(k > 1)),
        op("moe.expert_down", dgrad, mm, gemm, Traffic(weights=weights, activations=index,
                                                       gradients=nd * c + rows * 4)),
        op("moe.expert_act", dgrad, ew, 10.0 * nh, Traffic(activations=2 * nh * c, gradients=2 * nh * c),
           launches=0),
        op("moe.unpermute", dgrad, ew, 3.0 * nh, Traffic(), launches=0),
        op("moe.expert_up_gate", dgrad, mm, 2 * gemm,
           Traffic(weights=2 * weights, activations=rows * 4, gradients=2 * nh * c + row_out)),
        op("moe.expert_up_gate", wgrad, mm, 2 * gemm,
           Traffic(activations=nd * c + rows * 4, gradients=2 * nh * c + 2 * dw)),
        op("moe.expert_down", wgrad, mm, gemm, Traffic(activations=nh * c + index, gradients=nd * c + dw)),
    ]
    if k > 1:  # the gather-sum of dX's rows per token
        ops.append(op("moe.permute", dgrad, mem, float(nd),
                      Traffic(activations=rows * 4, gradients=nd * c + t * d * c)))
    return ops


def ffn_ops(w: Workload) -> list[OpCost]:
    m, pol = w.model, w.policy
    group = "moe" if m.is_moe else "mlp"
    in_bytes = pol.compute_bytes if m.reordered_norm else pol.residual_bytes
    ops: list[OpCost] = []
    if not m.reordered_norm:
        ops += rmsnorm_ops(f"{group}.norm", group, rows=w.tokens, width=m.d_model, in_bytes=in_bytes, pol=pol)
    if m.moe is not None:
        ops += moe_ops(w)
    else:
        assert m.ffn_hidden is not None
        ops += dense_mlp_ops(w, m.ffn_hidden)
    if m.reordered_norm:
        ops += rmsnorm_ops(f"{group}.norm", group, rows=w.tokens, width=m.d_model, in_bytes=in_bytes, pol=pol)
    ops += residual_ops(f"{group}.residual", group, tokens=w.tokens, d=m.d_model, pol=pol)
    return ops


def matmul_params(m: ModelSpec) -> dict[str, int]:
    """Parameters read by matmuls, per group (what autocast casts to bf16 every forward)."""
    d = m.d_model
    out = {"attention": m.n_layers * 4 * d * d, "head": d * m.vocab_size}
    if m.moe is None:
        assert m.ffn_hidden is not None
        out["mlp"] = m.n_layers * 3 * d * m.ffn_hidden
    else:
        moe = m.moe
        shared = 3 * d * moe.shared_hidden if moe.shared_hidden else 0
        out["moe"] = m.n_layers * (d * moe.num_experts + 3 * d * moe.expert_hidden * moe.num_experts + shared)
    return out


def cast_ops(group: str, params: int, pol: DTypePolicy, grad_cast_params: int | None = None) -> list[OpCost]:
    """Under autocast: ``params`` fp32 master weights cast to bf16 once per forward (all experts, used
    or not), and the bf16 weight gradients of ``grad_cast_params`` of them (default: all) cast back to
    fp32 in backward. Nothing otherwise."""
    if not pol.autocast:
        return []
    grads = params if grad_cast_params is None else grad_cast_params
    ops = [OpCost(name=f"{group}.weight_cast", group=group, phase=Phase.FWD, kind=OpKind.MEMORY,
                  flops=0.0, traffic=Traffic(weights=params * (pol.param_bytes + pol.compute_bytes)))]
    if grads:
        ops.append(OpCost(name=f"{group}.grad_cast", group=group, phase=Phase.BWD_WGRAD, kind=OpKind.MEMORY,
                          flops=0.0, traffic=Traffic(gradients=grads * (pol.compute_bytes + pol.grad_bytes))))
    return ops


def expert_params_without_grad_cast(m: ModelSpec, impl: str) -> int:
    """Routed-expert parameters per MoE layer whose gradients need no cast: the triton kernels write them
    in the parameters' own dtype (fused_expert_ops)."""
    if impl != "triton" or m.moe is None:
        return 0
    return 3 * m.d_model * m.moe.expert_hidden * m.moe.num_experts


def autocast_ops(w: Workload) -> list[OpCost]:
    m = w.model
    ops: list[OpCost] = []
    for group, params in matmul_params(m).items():
        uncast = m.n_layers * expert_params_without_grad_cast(m, w.impl) if group == "moe" else 0
        ops += cast_ops(group, params, w.policy, grad_cast_params=params - uncast)
    return ops


def embedding_ops(w: Workload) -> list[OpCost]:
    m, pol = w.model, w.policy
    t, d = w.tokens, m.d_model
    return [
        OpCost(name="embed.lookup", group="embedding", phase=Phase.FWD, kind=OpKind.MEMORY, flops=0.0,
               traffic=Traffic(weights=t * d * pol.param_bytes, activations=t * 8 + t * d * pol.residual_bytes)),
        # Dense embedding backward: zero a V x d gradient, then index-add T rows into it.
        OpCost(name="embed.lookup", group="embedding", phase=Phase.BWD_WGRAD, kind=OpKind.MEMORY,
               flops=float(t * d),
               traffic=Traffic(activations=t * 8,
                               gradients=m.vocab_size * d * pol.grad_bytes + t * d * pol.residual_bytes
                               + 2 * t * d * pol.grad_bytes), launches=2),
    ]


def head_ops(w: Workload) -> list[OpCost]:
    m, pol = w.model, w.policy
    t, d, v, c = w.tokens, m.d_model, m.vocab_size, pol.compute_bytes
    return [
        *rmsnorm_ops("head.norm", "head", rows=t, width=d, in_bytes=pol.residual_bytes, pol=pol),
        *linear_ops("head.lm_head", "head", rows=t, k=d, n=v, pol=pol),
        # Cross-entropy over the vocabulary: max, exp-sum, log (4/elem); backward softmax - onehot (3/elem).
        *_elementwise(
            "head.cross_entropy", "head",
            fwd_flops=4.0 * t * v, fwd=Traffic(activations=t * v * c + t * 8 + t * 4),
            bwd_flops=3.0 * t * v, bwd=Traffic(activations=t * v * c + t * 8, gradients=t * v * c),
        ),
    ]


# torch.optim.AdamW, per element: decay (1 mul), m lerp (3), v update (4), sqrt + eps + scale (3),
# p -= lr * m / denom (3) = 14 FLOPs. Reads p, g, m, v; writes p, m, v.
ADAMW_FLOPS_PER_PARAM = 14


def adamw_op(name: str, group: str, params: int, pol: DTypePolicy) -> OpCost:
    return OpCost(
        name=name, group=group, phase=Phase.OPTIM, kind=OpKind.ELEMENTWISE,
        flops=float(ADAMW_FLOPS_PER_PARAM * params),
        traffic=Traffic(weights=2 * params * pol.param_bytes, gradients=params * pol.grad_bytes,
                        optimizer=4 * params * pol.optim_state_bytes),
    )


def optimizer_ops(w: Workload) -> list[OpCost]:
    m, pol = w.model, w.policy
    if m.moe is None:
        return [adamw_op("optim.adamw", "optimizer", m.total_params, pol)]
    moe = m.moe
    experts = m.n_layers * 3 * m.d_model * moe.expert_hidden * moe.num_experts
    # Split so the table shows the share of optimizer traffic spent on routed experts.
    return [
        adamw_op("optim.adamw_experts", "optimizer", experts, pol),
        adamw_op("optim.adamw_rest", "optimizer", m.total_params - experts, pol),
    ]


def step_ops(w: Workload) -> list[OpCost]:
    """Every op of one training step on one microbatch, block ops multiplied by the layer count."""
    layers = w.model.n_layers
    block = [op.times(layers) for op in (*attention_ops(w), *ffn_ops(w))]
    return [*embedding_ops(w), *block, *head_ops(w), *autocast_ops(w), *optimizer_ops(w)]


# --- totals and FLOP conventions -------------------------------------------------------------------
def total_flops(ops: Iterable[OpCost], *, phases: Iterable[Phase] | None = None,
                kinds: Iterable[OpKind] | None = (OpKind.MATMUL,), model_only: bool = True) -> float:
    ph = set(phases) if phases is not None else None
    kd = set(kinds) if kinds is not None else None
    return sum(
        op.flops for op in ops
        if (ph is None or op.phase in ph) and (kd is None or op.kind in kd) and (op.model_flops or not model_only)
    )


def total_traffic(ops: Iterable[OpCost], *, phases: Iterable[Phase] | None = None) -> Traffic:
    ph = set(phases) if phases is not None else None
    out = Traffic()
    for op in ops:
        if ph is None or op.phase in ph:
            out = out + op.traffic
    return out


FWD_BWD = (Phase.FWD, Phase.BWD_DGRAD, Phase.BWD_WGRAD)


def train_workload(spec: ModelSpec, impl: str, tokens: int, policy: DTypePolicy,
                   capacity_factor: float | None = None) -> Workload:
    """The workload of an end-to-end point: ``impl`` is an MoE implementation, a dense bracket (the MoE
    FFN replaced by a dense SwiGLU of that width) or "dense" for a dense model."""
    s = bracket_spec(spec, impl) if impl in BRACKETS else spec
    return Workload(model=s, tokens=tokens, seq_len=min(s.seq_len, tokens),
                    impl=impl if s.moe is not None else "dropless", capacity_factor=capacity_factor, policy=policy)


def grad_accumulation_bytes(w: Workload, accumulation_steps: int) -> float:
    """Adding each later microbatch's gradients into the existing .grad: read both, write one."""
    return (accumulation_steps - 1) * 3 * w.model.total_params * w.policy.grad_bytes


def global_step_bytes(w: Workload, accumulation_steps: int) -> float:
    """DRAM bytes of one optimizer step over ``accumulation_steps`` microbatches."""
    ops = step_ops(w)
    per_micro = sum(op.bytes for op in ops if op.phase in FWD_BWD)
    optim = sum(op.bytes for op in ops if op.phase is Phase.OPTIM)
    return accumulation_steps * per_micro + grad_accumulation_bytes(w, accumulation_steps) + optim


def flops_per_token(w: Workload, convention: FlopConvention | str) -> float:
    """Training (fwd + bwd) FLOPs per token under a named convention."""
    conv = FlopConvention(convention)
    m = w.model
    six_n = 6.0 * m.active_non_embedding_params
    if conv is FlopConvention.SIX_N:
        return six_n
    if conv is FlopConvention.OLMO:
        return six_n + 12.0 * m.n_layers * m.n_heads * m.head_dim * w.seq_len
    return total_flops(step_ops(w), phases=FWD_BWD) / w.tokens
