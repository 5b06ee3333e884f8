"""A whole training step: every op of one microbatch (block ops times the layers), its FLOPs under each named
convention, and the bytes of one optimizer step over several microbatches."""

from __future__ import annotations

from dataclasses import replace

from tpsbench.costmodel.attention import attention_ops
from tpsbench.costmodel.ffn import dense_mlp_ops, moe_ops
from tpsbench.costmodel.head import embedding_ops, head_ops
from tpsbench.costmodel.ops import (
    FWD_BWD,
    DTypePolicy,
    FlopConvention,
    OpCost,
    Phase,
    Workload,
    residual_ops,
    rmsnorm_ops,
    total_flops,
)
from tpsbench.costmodel.optimizer import autocast_ops, grad_accumulation_bytes, optimizer_ops
from tpsbench.impls import bracket_spec, is_bracket
from tpsbench.models import ModelSpec


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


def step_ops(w: Workload) -> list[OpCost]:
    """Every op of one training step on one microbatch, block ops multiplied by the layer count; with full
    activation checkpointing each block's forward ops again in the backward (recomputation: not model FLOPs)."""
    layers = w.model.n_layers
    block = [op.times(layers) for op in (*attention_ops(w), *ffn_ops(w))]
    if w.recompute == "full":
        block += recompute_ops(block, w.model)
    return [*embedding_ops(w), *block, *head_ops(w), *autocast_ops(w), *optimizer_ops(w)]


def recompute_ops(block: list[OpCost], m: ModelSpec) -> list[OpCost]:
    """The forward ops of the blocks, run again in the backward before each block's gradients. torch's
    non-reentrant checkpoint stops recomputing once every tensor the backward saved is back, so a block's trailing
    ops whose outputs no backward keeps are not run again: the FFN's residual add, and in a pre-norm dense block
    the down projection that feeds only it (FlopCounterMode on tpsbench's checkpointed blocks counts exactly this:
    tests/test_costmodel.py)."""
    group = "moe" if m.is_moe else "mlp"
    trailing = {f"{group}.residual"} | ({"mlp.down"} if not m.is_moe and not m.reordered_norm else set())
    return [replace(op, name=f"{op.name}.recompute", phase=Phase.BWD_DGRAD, model_flops=False)
            for op in block if op.phase is Phase.FWD and op.name not in trailing]


def train_workload(spec: ModelSpec, impl: str, tokens: int, policy: DTypePolicy,
                   capacity_factor: float | None = None, recompute: str = "none") -> Workload:
    """The workload of an end-to-end point: ``impl`` is an MoE implementation, a dense bracket (the MoE
    FFN replaced by a dense SwiGLU of that width) or "dense" for a dense model."""
    s = bracket_spec(spec, impl) if is_bracket(impl) else spec
    return Workload(model=s, tokens=tokens, seq_len=min(s.seq_len, tokens),
                    impl=impl if s.moe is not None else "dropless", capacity_factor=capacity_factor, policy=policy,
                    recompute=recompute)


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
        return float(olmo_flops_per_token(m, w.seq_len))
    return total_flops(step_ops(w), phases=FWD_BWD) / w.tokens


def olmo_pre3_flops_per_token(m: ModelSpec, seq_len: int) -> int:
    """OLMo-core before 3.0: the same sum with the attention core over the full S x S square of (query, key)
    pairs, ``12 * heads * head_dim * S`` per layer (about 12 x layers x d x S / 2 more per token than 3.0 counts)."""
    per_layer = 6 * (m.block_params(active=True) - 2 * m.d_model)
    return m.n_layers * (per_layer + 12 * m.n_heads * m.head_dim * seq_len) + 6 * m.lm_head_params


def olmo_flops_per_token(m: ModelSpec, seq_len: int) -> int:
    """OLMo-core 3's ``Transformer.num_flops_per_token(seq_len)``, term by term (tests/test_olmo_core.py checks
    it to the FLOP): summed per module, 6 x the parameters of each block's attention and feed-forward (active
    experts only; the two block norms are left out) and of the LM head with its norm, plus per layer the
    attention core over the causal (query, key) pairs, ``12 * heads * head_dim * (S(S+1)/2) // S`` (integer
    division, as OLMo-core does; it counted the full S x S square before its 3.0 release)."""
    per_layer = 6 * (m.block_params(active=True) - 2 * m.d_model)
    pairs = seq_len * (seq_len + 1) // 2
    attention = 12 * m.n_heads * m.head_dim * pairs // seq_len
    return m.n_layers * (per_layer + attention) + 6 * m.lm_head_params
