"""Once-per-step costs: the autocast casts of the matmul weights (and of their gradients), the AdamW step over
every parameter, and adding each later microbatch's gradients under gradient accumulation."""

from __future__ import annotations

from tpsbench.costmodel.ops import DTypePolicy, OpCost, OpKind, Phase, Traffic, Workload
from tpsbench.impls import get_impl
from tpsbench.models import ModelSpec


def matmul_params(m: ModelSpec) -> dict[str, int]:
    """Parameters read by matmuls, per group (what autocast casts to bf16 every forward)."""
    return {"attention": m.n_layers * m.attention_matmul_params, "head": m.d_model * m.vocab_size,
            "moe" if m.is_moe else "mlp": m.n_layers * m.ffn_params()}


def matmul_tensors(m: ModelSpec) -> dict[str, int]:
    """Weight tensors read by matmuls, per group: autocast casts each in a kernel of its own."""
    moe = m.moe
    ffn = 3 if moe is None else 3 + 1 + (3 if moe.shared_hidden else 0)  # experts' w1 w3 w2, router, shared
    return {"attention": 4 * m.n_layers, "head": 1, "moe" if m.is_moe else "mlp": ffn * m.n_layers}


def cast_ops(group: str, params: int, pol: DTypePolicy, grad_cast_params: int | None = None,
             tensors: int = 1) -> list[OpCost]:
    """Under autocast: ``params`` fp32 master weights cast to bf16 once per forward (all experts, used
    or not), and the bf16 weight gradients of ``grad_cast_params`` of them (default: all) cast back to
    fp32 in backward. Nothing otherwise."""
    if not pol.autocast:
        return []
    grads = params if grad_cast_params is None else grad_cast_params
    cast = Traffic(weights=params * (pol.param_bytes + pol.compute_bytes))
    ops = [OpCost(name=f"{group}.weight_cast", group=group, phase=Phase.FWD, kind=OpKind.MEMORY, flops=0.0,
                  traffic=cast, launches=tensors)]
    if pol.recast_params_in_backward:  # FSDP unshards (casts) the parameters again for the backward
        ops.append(OpCost(name=f"{group}.weight_cast", group=group, phase=Phase.BWD_DGRAD, kind=OpKind.MEMORY,
                          flops=0.0, traffic=cast, launches=tensors))
    if grads:
        ops.append(OpCost(name=f"{group}.grad_cast", group=group, phase=Phase.BWD_WGRAD, kind=OpKind.MEMORY,
                          flops=0.0, traffic=Traffic(gradients=grads * (pol.compute_bytes + pol.grad_bytes)),
                          launches=tensors))
    return ops


def expert_params_without_grad_cast(m: ModelSpec, impl: str) -> int:
    """Routed-expert parameters per MoE layer whose gradients need no cast: an implementation that writes them
    in the parameters' own dtype (the triton kernels: fused_expert_ops)."""
    if m.moe is None or get_impl(impl).casts_expert_grads:
        return 0
    return m.moe.routed_expert_params(m.d_model)


def autocast_ops(w: Workload) -> list[OpCost]:
    m = w.model
    ops: list[OpCost] = []
    tensors = matmul_tensors(m)
    for group, params in matmul_params(m).items():
        uncast = m.n_layers * expert_params_without_grad_cast(m, w.impl) if group == "moe" else 0
        ops += cast_ops(group, params, w.policy, grad_cast_params=params - uncast, tensors=tensors[group])
    # FSDP unshards every parameter in bf16, the embedding too (tied, it is the head's weight, cast above)
    if w.policy.recast_params_in_backward and not m.tie_embeddings:
        ops += cast_ops("embedding", m.embedding_params, w.policy)
    return ops


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


def grad_clip_op(params: int, pol: DTypePolicy) -> OpCost:
    """Clipping the gradient norm: one pass reads every gradient for the norm (square, add: 2 FLOP/element),
    a second reads and writes each scaled (1 FLOP/element)."""
    return OpCost(name="optim.grad_clip", group="optimizer", phase=Phase.OPTIM, kind=OpKind.ELEMENTWISE,
                  flops=3.0 * params, traffic=Traffic(gradients=3 * params * pol.grad_bytes), launches=2)


def optimizer_ops(w: Workload) -> list[OpCost]:
    m, pol = w.model, w.policy
    clip = [grad_clip_op(m.total_params, pol)] if pol.grad_clip else []
    if m.moe is None:
        return [*clip, adamw_op("optim.adamw", "optimizer", m.total_params, pol)]
    moe = m.moe
    experts = m.n_layers * moe.routed_expert_params(m.d_model)
    # Split so the table shows the share of optimizer traffic spent on routed experts.
    return [
        *clip,
        adamw_op("optim.adamw_experts", "optimizer", experts, pol),
        adamw_op("optim.adamw_rest", "optimizer", m.total_params - experts, pol),
    ]


def grad_accumulation_bytes(w: Workload, accumulation_steps: int) -> float:
    """Adding each later microbatch's gradients into the existing .grad: read both, write one."""
    return (accumulation_steps - 1) * 3 * w.model.total_params * w.policy.grad_bytes
