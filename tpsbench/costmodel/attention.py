"""Attention: the sub-block (norm, layer, residual), the layer (projections, qk-norm, RoPE, core, output) and
the attention core per backend (flash with causal halving and recomputation, or the math backend's S x S)."""

from __future__ import annotations

from tpsbench.costmodel.ops import (
    Eager,
    OpCost,
    OpKind,
    Phase,
    Traffic,
    Workload,
    elementwise_ops,
    input_cast_ops,
    linear_ops,
    residual_ops,
    rmsnorm_ops,
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
    """The attention layer alone: q/k/v projections, qk-norm, RoPE, attention core, output projection. With
    grouped-query attention the query projection is ``q = heads x head_dim`` wide and the key and value projections
    ``kv = kv_heads x head_dim`` each (multi-head attention: both d)."""
    m, pol = w.model, w.policy
    t, d, c = w.tokens, m.d_model, pol.compute_bytes
    q, kv = m.q_width, m.kv_width
    ops: list[OpCost] = input_cast_ops("attn.input_cast", "attention", rows=t, width=d, casts=3, pol=pol)
    if m.is_mha:
        ops += linear_ops("attn.qkv", "attention", rows=t, k=d, n=d, pol=pol, matrices=3)
    else:
        ops += linear_ops("attn.q", "attention", rows=t, k=d, n=q, pol=pol)
        ops += linear_ops("attn.kv", "attention", rows=t, k=d, n=kv, pol=pol, matrices=2)
    if m.qk_norm:
        # Non-head-wise qk-norm (OLMo-core default): RMSNorm over the full q and k projections; head-wise (Qwen3):
        # over each head's head_dim. The same elements either way, in rows of a different width.
        hd = m.head_dim
        shapes = ([(t * m.n_heads, hd), (t * m.kv_heads, hd)] if m.qk_norm_per_head else [(t, q), (t, kv)])
        if shapes[0] == shapes[1]:
            ops += [op.times(2) for op in rmsnorm_ops("attn.qk_norm", "attention", rows=shapes[0][0],
                                                       width=shapes[0][1], in_bytes=c, pol=pol)]
        else:
            for rows, width in shapes:
                ops += rmsnorm_ops("attn.qk_norm", "attention", rows=rows, width=width, in_bytes=c, pol=pol)
    # RoPE on q and k: x*cos + rotate(x)*sin = 3 FLOP/element; the cos/sin tables (fp32) are tiny.
    table = 2 * w.seq_len * m.head_dim * 4
    # Eager (tpsbench.nn.layers.apply_rope) per q and k: neg, cat, two table casts, two muls, add: 7 kernels
    # moving about 8 elements' bytes each per element; its backward about as many.
    n = t * (q + kv)
    eager = Eager(fwd_bytes=8 * n * c + table, fwd_launches=14, bwd_bytes=8 * n * c + table, bwd_launches=16)
    ops += elementwise_ops(
        "attn.rope", "attention", eager=eager,
        fwd_flops=3.0 * n, fwd=Traffic(activations=n * c * 2 + table),
        bwd_flops=3.0 * n, bwd=Traffic(activations=table, gradients=n * c * 2),
    )
    ops += attention_core_ops(w)
    ops += linear_ops("attn.out", "attention", rows=t, k=q, n=d, pol=pol)
    return ops


def attention_core_ops(w: Workload) -> list[OpCost]:
    """QK^T and PV over every query head (``4*S*S*q`` FLOPs per sequence; key/value heads shared by a group of
    query heads are read once per group)."""
    m = w.model
    b, s, c = w.sequences, w.seq_len, w.policy.compute_bytes
    q, kv = m.q_width, m.kv_width
    t = w.tokens
    skip = 0.5 if (w.causal and w.attention_backend == "flash") else 1.0
    fwd_flops = 4.0 * b * s * s * q * skip
    lse = t * m.n_heads * 4  # fp32 log-sum-exp per row, saved for backward
    qkvo = t * (2 * q + 2 * kv) * c
    if w.attention_backend == "flash":
        fwd = Traffic(activations=qkvo + lse)
        # reads q, k, v, o and dO; writes dq, dk, dv
        bwd = Traffic(activations=t * (q + 2 * kv) * c + t * q * c + lse, gradients=t * q * c + t * (q + 2 * kv) * c)
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
               flops=2 * fwd_flops, traffic=Traffic(activations=qkvo + 2 * square,
                                                     gradients=qkvo + 4 * square), launches=6),
    ]
