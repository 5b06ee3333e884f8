"""Fused softmax top-k router step in Triton: one kernel forward, one backward.

Forward (``_router_fwd_kernel``, a block of tokens per program): softmax over the E logits of each
token, its top-k experts and their probabilities, the tokens-per-expert histogram, the per-expert sum of
probabilities (for the load-balancing loss) and the log-sum-exp (for the z-loss). The torch router does
this in about 12 launches, and its ``topk`` alone took 0.32 ms of moe_1b's 3.69 ms of GPU time per
fwd+bwd on an H100 (32,768 tokens, 256 experts, results/h100-kernels/rows/moe_1b-host-trace.log).

Backward (``_router_bwd_kernel``): the logits' gradient from the chosen weights' gradient, the
load-balancing loss (through the mean probabilities; the histogram is a constant) and the z-loss,
recomputing the softmax from the saved log-sum-exp.

Losses as in :class:`tpsbench.nn.moe.Router`: ``lb = w_lb * E * sum_e f_e P_e`` (f_e = counts_e / (T k),
P_e = mean_t p_te; Fedus et al. 2021 eq. 4) and ``z = w_z * mean_t lse_t^2`` (Zoph et al. 2022 eq. 5).

File order: private ``@triton.jit`` kernels, their launchers, the autograd.Function. Imports only torch and
triton.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .interpret import INTERPRET


# --------------------------------------------------------------------------------------------------
# kernels
# --------------------------------------------------------------------------------------------------
@triton.jit
def _logits_block(logits_ptr, T, E, stride_l, BT: tl.constexpr, BE: tl.constexpr):
    """This program's BT tokens x BE experts of the logits in fp32; -inf outside [T, E] (exp gives 0)."""
    ts = tl.program_id(0) * BT + tl.arange(0, BT)
    es = tl.arange(0, BE)
    tmask = ts < T
    emask = es < E
    mask = tmask[:, None] & emask[None, :]
    logits = tl.load(logits_ptr + ts[:, None].to(tl.int64) * stride_l + es[None, :], mask=mask,
                     other=-float("inf")).to(tl.float32)
    return ts, es, tmask, emask, mask, logits


@triton.jit
def _router_fwd_kernel(
    logits_ptr, idx_ptr, w_ptr, counts_ptr, psum_ptr, lse_ptr, lse2_ptr, T, E, stride_l,
    K: tl.constexpr, BT: tl.constexpr, BE: tl.constexpr,
):
    ts, es, tmask, emask, mask, logits = _logits_block(logits_ptr, T, E, stride_l, BT, BE)
    mx = tl.where(tmask, tl.max(logits, axis=1), 0.0)
    ex = tl.where(mask, tl.exp(logits - mx[:, None]), 0.0)
    total = tl.where(tmask, tl.sum(ex, axis=1), 1.0)
    p = ex / total[:, None]
    lse = mx + tl.log(total)
    tl.store(lse_ptr + ts, lse, mask=tmask)
    tl.atomic_add(lse2_ptr, tl.sum(tl.where(tmask, lse * lse, 0.0), axis=0))
    tl.atomic_add(psum_ptr + es, tl.sum(p, axis=0), mask=emask)
    # Top-k by repeated arg-max (k <= 8 in the zoo): probabilities are >= 0, so -1 marks taken and padding.
    cur = tl.where(mask, p, -1.0)
    hist = tl.zeros((BE,), dtype=tl.int32)
    for j in tl.static_range(K):
        best = tl.argmax(cur, axis=1)
        tl.store(idx_ptr + ts * K + j, best.to(tl.int64), mask=tmask)
        tl.store(w_ptr + ts * K + j, tl.max(cur, axis=1), mask=tmask)
        chosen = es[None, :] == best[:, None]
        hist += tl.sum((chosen & tmask[:, None]).to(tl.int32), axis=0)
        cur = tl.where(chosen, -1.0, cur)
    tl.atomic_add(counts_ptr + es, hist.to(tl.int64), mask=emask)


@triton.jit
def _router_bwd_kernel(
    logits_ptr, lse_ptr, idx_ptr, dw_ptr, counts_ptr, dlb_ptr, dz_ptr, dlogits_ptr, T, E, stride_l, stride_dl,
    lb_scale, z_scale,
    K: tl.constexpr, HAS_DW: tl.constexpr, HAS_LB: tl.constexpr, HAS_Z: tl.constexpr, BT: tl.constexpr,
    BE: tl.constexpr,
):
    """dlogits = p * (dp - sum_e p dp) + dz * z_scale * 2 lse * p, with dp[t, e] = dweight[t, j] where
    e = idx[t, j], plus dlb * lb_scale * counts[e] (lb_scale = w_lb * E / (T k T), z_scale = w_z / T)."""
    ts, es, tmask, emask, mask, logits = _logits_block(logits_ptr, T, E, stride_l, BT, BE)
    lse = tl.load(lse_ptr + ts, mask=tmask, other=0.0)
    p = tl.where(mask, tl.exp(logits - lse[:, None]), 0.0)
    dp = tl.zeros((BT, BE), dtype=tl.float32)
    if HAS_LB:
        counts = tl.load(counts_ptr + es, mask=emask, other=0).to(tl.float32)
        dp += (tl.load(dlb_ptr).to(tl.float32) * lb_scale * counts)[None, :]
    if HAS_DW:
        for j in tl.static_range(K):
            e = tl.load(idx_ptr + ts * K + j, mask=tmask, other=-1)
            g = tl.load(dw_ptr + ts * K + j, mask=tmask, other=0.0)
            dp += tl.where(es[None, :] == e[:, None], g[:, None], 0.0)
    dlogits = p * (dp - tl.sum(p * dp, axis=1)[:, None])
    if HAS_Z:
        dlogits += (tl.load(dz_ptr).to(tl.float32) * z_scale * 2.0 * lse)[:, None] * p
    tl.store(dlogits_ptr + ts[:, None].to(tl.int64) * stride_dl + es[None, :],
             dlogits.to(dlogits_ptr.dtype.element_ty), mask=mask)


# --------------------------------------------------------------------------------------------------
# launchers
# --------------------------------------------------------------------------------------------------
MAX_EXPERTS = 1024  # one token's logits sit in registers; the zoo has at most 256 experts


def _blocks(e: int) -> tuple[int, int, int]:
    """(BT tokens per program, BE, warps): about 4K logits per program."""
    be = triton.next_power_of_2(e)
    if INTERPRET:
        return 4, be, 1
    return max(1, 4096 // be), be, 4


def router_forward(logits: torch.Tensor, top_k: int):
    """indices [T, k] int64, weights [T, k] fp32, counts [E] int64, per-expert probability sums [E] fp32,
    lse [T] fp32, sum of lse^2 [1] fp32."""
    t, e = logits.shape
    if e > MAX_EXPERTS or not 1 <= top_k <= e:
        raise ValueError(f"fused router: needs 1 <= top_k <= E <= {MAX_EXPERTS} (got E={e}, top_k={top_k}); "
                         "use an implementation without the fused router")
    dev = logits.device
    idx = torch.empty(t, top_k, device=dev, dtype=torch.int64)
    w = torch.empty(t, top_k, device=dev, dtype=torch.float32)
    counts = torch.zeros(e, device=dev, dtype=torch.int64)
    sums = torch.zeros(e + 1, device=dev, dtype=torch.float32)  # probability sums, then sum of lse^2
    lse = torch.empty(t, device=dev, dtype=torch.float32)
    bt, be, warps = _blocks(e)
    _router_fwd_kernel[(triton.cdiv(t, bt),)](logits, idx, w, counts, sums, lse, sums[e:], t, e, logits.stride(0),
                                              K=top_k, BT=bt, BE=be, num_warps=warps)
    return idx, w, counts, sums[:e], lse, sums[e:]


def router_backward(logits, lse, idx, dweights, counts, dlb, dz, lb_scale: float, z_scale: float) -> torch.Tensor:
    """The logits' gradient; a ``None`` gradient (an output the loss did not use) is skipped, not zero-filled."""
    t, e = logits.shape
    dlogits = torch.empty_like(logits)
    bt, be, warps = _blocks(e)
    dw = dweights.contiguous() if dweights is not None else lse
    _router_bwd_kernel[(triton.cdiv(t, bt),)](logits, lse, idx, dw, counts, dlb if dlb is not None else lse,
                                              dz if dz is not None else lse, dlogits, t, e, logits.stride(0),
                                              dlogits.stride(0), lb_scale, z_scale, K=idx.shape[1],
                                              HAS_DW=dweights is not None, HAS_LB=dlb is not None,
                                              HAS_Z=dz is not None, BT=bt, BE=be, num_warps=warps)
    return dlogits


# --------------------------------------------------------------------------------------------------
# autograd
# --------------------------------------------------------------------------------------------------
class SoftmaxTopKRouterFunction(torch.autograd.Function):
    """logits [T, E] (any float dtype) -> (indices, weights, counts, lb_loss, z_loss); differentiable in
    the weights and both losses."""

    @staticmethod
    def forward(ctx, logits, top_k: int, lb_weight: float, z_weight: float):
        logits = logits.contiguous()
        t, e = logits.shape
        idx, w, counts, psum, lse, lse2 = router_forward(logits, top_k)
        # lb = w_lb * E * sum_e (counts_e / (T k)) (psum_e / T); z = w_z * sum_t lse_t^2 / T
        lb_scale = lb_weight * e / (t * top_k * t) if t else 0.0
        z_scale = z_weight / t if t else 0.0
        lb = (counts.to(torch.float32) * psum).sum() * lb_scale
        z = lse2[0] * z_scale
        ctx.save_for_backward(logits, lse, idx, counts)
        ctx.scales = (lb_scale, z_scale)
        ctx.mark_non_differentiable(idx, counts)
        ctx.set_materialize_grads(False)  # unused outputs' gradients stay None: no zero tensors to launch
        return idx, w, counts, lb, z

    @staticmethod
    def backward(ctx, _didx, dweights, _dcounts, dlb, dz):
        logits, lse, idx, counts = ctx.saved_tensors
        dlogits = router_backward(logits, lse, idx, dweights, counts, dlb, dz, *ctx.scales)
        return dlogits, None, None, None


def softmax_topk_router(logits: torch.Tensor, top_k: int, lb_weight: float, z_weight: float):
    """(expert_indices [T, k] int64, expert_weights [T, k] fp32, tokens_per_expert [E] int64, lb_loss, z_loss)."""
    return SoftmaxTopKRouterFunction.apply(logits, top_k, lb_weight, z_weight)
