"""The ends of the model: the embedding lookup (and its dense backward) and the head (final norm, LM head,
cross-entropy over the vocabulary)."""

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
    rmsnorm_ops,
)


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
    ops = [
        *rmsnorm_ops("head.norm", "head", rows=t, width=d, in_bytes=pol.residual_bytes, pol=pol),
        *input_cast_ops("head.input_cast", "head", rows=t, width=d, casts=1, pol=pol),
        *linear_ops("head.lm_head", "head", rows=t, k=d, n=v, pol=pol),
    ]
    lc = c  # the bytes of a logit the loss reads
    if pol.loss_fp32_upcast:  # logits.float(): bf16 read, fp32 written, and their gradient cast back
        lc = 4
        ops += elementwise_ops("head.logits_upcast", "head", kind=OpKind.MEMORY,
                               fwd_flops=0.0, fwd=Traffic(activations=t * v * (c + 4)),
                               bwd_flops=0.0, bwd=Traffic(gradients=t * v * (4 + c)))
        # the z-loss, logsumexp(logits)^2: one more pass over the fp32 logits (max, exp-sum, log: 4/elem);
        # its gradient (2 z softmax) adds into the cross-entropy's in the same backward pass
        ops.append(OpCost(name="head.z_loss", group="head", phase=Phase.FWD, kind=OpKind.ELEMENTWISE,
                          flops=4.0 * t * v, traffic=Traffic(activations=t * v * 4 + t * 4)))
    # Cross-entropy over the vocabulary: max, exp-sum, log (4/elem); backward softmax - onehot (3/elem).
    # Eager under autocast: the logits cast to fp32, log_softmax, nll_loss (3 kernels); backward: the nll
    # gradient (zeros + scatter), log_softmax's backward, the cast back to bf16 (4 kernels).
    tv = t * v
    ce_eager = Eager(fwd_bytes=tv * (c + 4 + 4 + 4), fwd_launches=3, bwd_bytes=tv * (4 + 4 + 4 + 4 + c),
                     bwd_launches=4)
    ops += elementwise_ops(
        "head.cross_entropy", "head", eager=None if pol.loss_fp32_upcast or not pol.autocast else ce_eager,
        fwd_flops=4.0 * t * v, fwd=Traffic(activations=t * v * lc + t * 8 + t * 4),
        bwd_flops=3.0 * t * v, bwd=Traffic(activations=t * v * lc + t * 8, gradients=t * v * lc),
    )
    return ops
