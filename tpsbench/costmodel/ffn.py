"""The feed-forward: the dense SwiGLU, and the MoE layer (router, top-k, routed experts as the implementation's
counting says, shared expert, mix), with the routing arithmetic of balanced routing and capacity padding."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from tpsbench.costmodel.ops import (
    CAPACITY_MULTIPLE,
    POLICIES,
    Eager,
    GemmShape,
    OpCost,
    OpKind,
    Phase,
    Traffic,
    Workload,
    elementwise_ops,
    input_cast_ops,
    linear_ops,
    swiglu_act_ops,
)
from tpsbench.impls import Counting, get_impl

# Kernels eager PyTorch runs for tpsbench's MoE stages (forward), as the profiler counted them on the H100: the
# stages router (27, one of them the router GEMM), permute (29 dropless, 44 capacity) and unpermute (5, 8) of
# results/h100-counters/validated/counters-moe_1b.json (raw.gpu_time.kernels_per_call).
ROUTER_TOPK_KERNELS = 26
PERMUTE_KERNELS = {"dropless": 29, "capacity": 44}
UNPERMUTE_KERNELS = {"dropless": 5, "capacity": 8}


@dataclass(frozen=True, slots=True)
class Routing:
    tokens_per_expert: float  # balanced: T*k/E
    expert_rows: int  # rows the expert GEMMs compute (T*k dropless, E*C capacity)
    kept_assignments: int  # token-expert pairs actually computed
    experts_touched: int  # experts whose weights are read
    capacity: int | None
    dropped_fraction: float


def capacity_rows(tokens: int, top_k: int, num_experts: int, capacity_factor: float) -> int:
    """Slots per expert as the users' capacity MoE (OLMo-core's ``ParallelMLP.expert_capacity``) sizes them:
    ``int(cf * T*k/E)`` rounded up to a multiple of 8."""
    ideal = top_k * tokens / num_experts  # in OLMo-core's order of operations: the same float, the same int()
    return CAPACITY_MULTIPLE * math.ceil(int(capacity_factor * ideal) / CAPACITY_MULTIPLE)


def routing(w: Workload) -> Routing:
    moe = w.model.moe
    assert moe is not None
    assignments = w.tokens * moe.top_k
    per_expert = assignments / moe.num_experts
    if get_impl(w.impl).pads_to_capacity:
        cap = capacity_rows(w.tokens, moe.top_k, moe.num_experts, w.effective_capacity_factor)
        kept_per_expert = min(per_expert, cap)
        kept = round(kept_per_expert * moe.num_experts)
        return Routing(
            per_expert, moe.num_experts * cap, kept, moe.num_experts, cap, 1.0 - kept / assignments
        )
    return Routing(per_expert, assignments, assignments, min(moe.num_experts, assignments), None, 0.0)


def dense_mlp_ops(w: Workload, hidden: int, *, prefix: str = "mlp", group: str = "mlp") -> list[OpCost]:
    t, d, pol = w.tokens, w.model.d_model, w.policy
    return [
        *input_cast_ops(f"{prefix}.input_cast", group, rows=t, width=d, casts=2, pol=pol),
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
    # the router's input and the gathered expert rows are cast by autocast (the shared expert casts its own): the
    # rows once per up/gate GEMM call (x W1 and x W3 cast them separately); the loop's per-expert casts are counted
    # with its per-expert launches
    ops: list[OpCost] = input_cast_ops("moe.router_input_cast", "moe", rows=t, width=d, casts=1, pol=pol)
    impl = get_impl(w.impl)
    if impl.counting is not Counting.FUSED and not impl.launches_per_expert:
        ops += input_cast_ops("moe.expert_input_cast", "moe", rows=routing(w).expert_rows, width=d, casts=2,
                              pol=pol)
    ops += router_ops(w)
    # Softmax (5/elem), top-k selection (~1), z-loss logsumexp (3), load-balance statistics (1).
    idx_bytes = t * k * (4 + 8)  # fp32 weights + int64 indices
    # Eager (tpsbench.nn.moe.Router): logits.float(), softmax, topk, gather, the expert histogram (zeros,
    # ones_like, scatter_add, cast, divide), the load-balancing loss (mean over tokens, mul, sum, 2 scalar muls),
    # the z-loss (logsumexp, pow, mean, mul) and their sum: about 22 kernels, 5 passes over the fp32 logits;
    # backward about 14 kernels, 6 passes.
    te = t * e
    router_eager = Eager(fwd_bytes=te * (c + 4 * 6) + idx_bytes, fwd_launches=ROUTER_TOPK_KERNELS,
                         bwd_bytes=te * (4 * 7 + c), bwd_launches=16)
    ops += elementwise_ops(
        "moe.router_topk", "moe", eager=router_eager,
        fwd_flops=10.0 * t * e, fwd=Traffic(activations=t * e * c + idx_bytes + e * 8),
        bwd_flops=6.0 * t * e, bwd=Traffic(activations=t * e * 4, gradients=t * k * 4 + t * e * c),
    )
    fused = get_impl(w.impl).counting is Counting.FUSED
    ops += fused_expert_ops(w) if fused else unfused_expert_ops(w)
    if moe.shared_hidden:
        ops += dense_mlp_ops(w, moe.shared_hidden, prefix="moe.shared", group="moe")
        # out = shared / (k+1) + routed * k / (k+1)
        n = t * d
        ops += elementwise_ops(
            "moe.mix", "moe", eager=Eager(fwd_bytes=7 * n * c, fwd_launches=3, bwd_bytes=4 * n * c, bwd_launches=2),
            fwd_flops=3.0 * n, fwd=Traffic(activations=3 * n * c),
            bwd_flops=2.0 * n, bwd=Traffic(gradients=3 * n * c),
        )
    return ops


def router_ops(w: Workload) -> list[OpCost]:
    """The router's d x E linear; under the olmo_core policy in fp32 (``F.linear(x.float(), W.float())``): x's
    rows upcast (bf16 read, fp32 written), then an fp32 GEMM on the CUDA cores with fp32 operands, its
    gradients too."""
    m, pol = w.model, w.policy
    moe = m.moe
    assert moe is not None
    t, d, e = w.tokens, m.d_model, moe.num_experts
    if not pol.router_fp32:
        return linear_ops("moe.router", "moe", rows=t, k=d, n=e, pol=pol)
    fp32 = POLICIES["fp32"]
    upcast = elementwise_ops("moe.router_upcast", "moe", kind=OpKind.MEMORY, fwd_flops=0.0,
                             fwd=Traffic(activations=t * d * (pol.compute_bytes + 4)), bwd_flops=0.0,
                             bwd=Traffic(gradients=t * d * (4 + pol.compute_bytes)))
    gemm = [replace(op, fp32_matmul=True) for op in linear_ops("moe.router", "moe", rows=t, k=d, n=e, pol=fp32)]
    return [*upcast, *gemm]


def unfused_expert_ops(w: Workload) -> list[OpCost]:
    """The routed experts as separate ops (``Counting.UNFUSED``: grouped, loop, capacity): permute, up/gate GEMM,
    SwiGLU, down GEMM, unpermute, each reading and writing its operands in DRAM."""
    moe, r = w.model.moe, routing(w)
    assert moe is not None
    return [*_permute_ops(w, r), *_expert_gemm_ops(w, r, "up_gate"),
            *swiglu_act_ops("moe.expert_act", "moe", rows=r.expert_rows, hidden=moe.expert_hidden, pol=w.policy),
            *_expert_gemm_ops(w, r, "down"), *_unpermute_ops(w, r)]


def _expert_gemm_ops(w: Workload, r: Routing, which: str) -> list[OpCost]:
    """The up/gate or down GEMMs with the launches each implementation makes of them: the loop one per expert
    (and, under autocast, the casts of the expert's weight and of the fp32 rows: an ``unbind()`` view is not a
    leaf, so autocast's cache does not keep it), torch._grouped_mm two kernels per call (docs/cost-model.md)."""
    m, pol = w.model, w.policy
    assert m.moe is not None
    d, h, impl = m.d_model, m.moe.expert_hidden, get_impl(w.impl)
    if which == "up_gate":
        ops = linear_ops("moe.expert_up_gate", "moe", rows=r.expert_rows, k=d, n=h, pol=pol, matrices=2,
                         weight_sets=r.experts_touched)
    else:
        ops = linear_ops("moe.expert_down", "moe", rows=r.expert_rows, k=h, n=d, pol=pol,
                         weight_sets=r.experts_touched)
    if not impl.launches_per_expert:
        return [replace(op, launches=op.launches * (2 if impl.grouped_mm else 1)) for op in ops]
    ac = 1 if pol.autocast else 0
    launches = {("up_gate", Phase.FWD): 1 + 2 * ac, ("up_gate", Phase.BWD_DGRAD): 1 + ac,
                ("up_gate", Phase.BWD_WGRAD): 1 + ac, ("down", Phase.FWD): 1 + ac, ("down", Phase.BWD_DGRAD): 1,
                ("down", Phase.BWD_WGRAD): 1 + ac}
    return [replace(op, launches=op.launches * r.experts_touched * launches[which, op.phase]) for op in ops]


def _permute_ops(w: Workload, r: Routing) -> list[OpCost]:
    """Sort the assignments by expert (T*k int64 keys) and gather the token rows into expert order; capacity
    writes its whole padded E*C buffer (zeros included). The backward adds the rows' gradients into x's rows with
    atomics."""
    m, pol = w.model, w.policy
    assert m.moe is not None
    t, d, c, k = w.tokens, m.d_model, pol.compute_bytes, m.moe.top_k
    gathered, written, sort = r.kept_assignments * d * c, r.expert_rows * d * c, 3 * t * k * 8
    capacity = get_impl(w.impl).pads_to_capacity
    eager = Eager(fwd_bytes=gathered + written + sort + (written if capacity else 0),
                  fwd_launches=PERMUTE_KERNELS["capacity" if capacity else "dropless"],
                  bwd_bytes=r.kept_assignments * d * c + t * d * (4 + 4 + c), bwd_launches=8)
    ops = elementwise_ops("moe.permute", "moe", kind=OpKind.MEMORY, eager=eager, fwd_flops=0.0,
                          fwd=Traffic(activations=gathered + written + sort), bwd_flops=1.0 * r.kept_assignments * d,
                          bwd=Traffic(gradients=r.kept_assignments * d * c + t * d * c))
    return [replace(op, atomic_elements=float(r.kept_assignments * d) if op.phase is Phase.BWD_DGRAD else 0.0)
            for op in ops]


def _unpermute_ops(w: Workload, r: Routing) -> list[OpCost]:
    """Weight each expert output by its router probability and sum the k rows of each token (the forward's
    index_add accumulates with atomics)."""
    m, pol = w.model, w.policy
    assert m.moe is not None
    t, d, c, k = w.tokens, m.d_model, pol.compute_bytes, m.moe.top_k
    a_bytes = r.kept_assignments * d * c
    capacity = get_impl(w.impl).pads_to_capacity
    eager = Eager(fwd_bytes=3 * a_bytes + 3 * t * d * c,
                  fwd_launches=UNPERMUTE_KERNELS["capacity" if capacity else "dropless"],
                  bwd_bytes=5 * a_bytes + t * d * c + r.expert_rows * d * c, bwd_launches=7)
    ops = elementwise_ops("moe.unpermute", "moe", kind=OpKind.MEMORY, eager=eager,
                          fwd_flops=2.0 * r.kept_assignments * d,
                          fwd=Traffic(activations=r.kept_assignments * d * c + t * k * 4 + t * d * c),
                          bwd_flops=4.0 * r.kept_assignments * d,
                          bwd=Traffic(activations=r.kept_assignments * d * c,
                                      gradients=t * d * c + r.expert_rows * d * c + t * k * 4))
    return [replace(op, atomic_elements=float(r.kept_assignments * d) if op.phase is Phase.FWD else 0.0)
            for op in ops]


def fused_expert_ops(w: Workload) -> list[OpCost]:
    """The routed experts of ``Counting.FUSED`` (``--impl triton``, kernels/) as its kernels move data, each
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

    def op(name: str, phase: Phase, kind: OpKind, flops: float, traffic: Traffic, launches: int = 1,
           gemm: tuple[int, int, int] | None = None) -> OpCost:
        shape = None if gemm is None else GemmShape(*gemm, groups=e)
        return OpCost(name=name, group="moe", phase=phase, kind=kind, flops=flops, traffic=traffic,
                      launches=launches, gemm=shape)

    per = max(1, round(rows / e))  # rows per expert (balanced)

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
           Traffic(weights=2 * weights, activations=nd * c + 2 * nh * c + index), gemm=(per, 2 * h, d)),
        op("moe.expert_act", fwd, ew, 5.0 * nh, Traffic(activations=nh * c), launches=0),
        op("moe.expert_down", fwd, mm, gemm, Traffic(weights=weights, activations=nh * c + row_out + index),
           gemm=(per, d, h)),
        op("moe.unpermute", fwd, mem, 2.0 * nd if k > 1 else float(nd),
           Traffic(activations=rows * 4 + nd * c + t * d * c) if k > 1 else Traffic(), launches=int(k > 1)),
        op("moe.expert_down", dgrad, mm, gemm, Traffic(weights=weights, activations=index,
                                                       gradients=nd * c + rows * 4), gemm=(per, h, d)),
        op("moe.expert_act", dgrad, ew, 10.0 * nh, Traffic(activations=2 * nh * c, gradients=2 * nh * c),
           launches=0),
        op("moe.unpermute", dgrad, ew, 3.0 * nh, Traffic(), launches=0),
        op("moe.expert_up_gate", dgrad, mm, 2 * gemm,
           Traffic(weights=2 * weights, activations=rows * 4, gradients=2 * nh * c + row_out), gemm=(per, d, 2 * h)),
        op("moe.expert_up_gate", wgrad, mm, 2 * gemm,
           Traffic(activations=nd * c + rows * 4, gradients=2 * nh * c + 2 * dw), gemm=(d, 2 * h, per)),
        op("moe.expert_down", wgrad, mm, gemm, Traffic(activations=nh * c + index, gradients=nd * c + dw),
           gemm=(h, d, per)),
    ]
    if k > 1:  # the gather-sum of dX's rows per token
        ops.append(op("moe.permute", dgrad, mem, float(nd),
                      Traffic(activations=rows * 4, gradients=nd * c + t * d * c)))
    return ops
