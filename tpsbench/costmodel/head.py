"""The ends of the model: the embedding lookup (and its dense backward) and the head (final norm, LM head,
cross-entropy over the vocabulary)."""

from __future__ import annotations

from tpsbench.costmodel.ops import OpCost, OpKind, Phase, Traffic, Workload, elementwise_ops, linear_ops, rmsnorm_ops


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
        *elementwise_ops(
            "head.cross_entropy", "head",
            fwd_flops=4.0 * t * v, fwd=Traffic(activations=t * v * c + t * 8 + t * 4),
            bwd_flops=3.0 * t * v, bwd=Traffic(activations=t * v * c + t * 8, gradients=t * v * c),
        ),
    ]
