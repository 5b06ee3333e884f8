"""The fused MoE expert MLP (SwiGLU) as an autograd Function: the routing plan (kernels/routing_plan.py) once in
the forward, reused by the backward, and the GEMM kernels through their launchers (kernels/expert_launchers.py).
``moe_swiglu`` is what ``--impl triton`` calls. Imports only torch and triton.
"""

from __future__ import annotations

import torch

from .expert_launchers import moe_swiglu_backward, moe_swiglu_forward
from .routing_plan import RoutePlan, route_plan


class MoESwiGLUFunction(torch.autograd.Function):
    """``out[t] = sum_j weights[t, j] * SwiGLU_{indices[t, j]}(x[t])``; the routing plan is computed once
    in the forward and reused by the backward."""

    @staticmethod
    def forward(ctx, x, expert_indices, expert_weights, counts, w1, w3, w2, compute_dtype, grad):
        # The casts to the compute dtype happen here, outside autograd: the gradients come back in the
        # inputs' own dtypes straight from the kernels (fp32 master weights: fp32 dW, no cast kernels).
        dt = compute_dtype or x.dtype
        ctx.grad_dtypes = (x.dtype, w1.dtype, w3.dtype, w2.dtype, expert_weights.dtype)
        x, w1, w3, w2 = (t.to(dt).contiguous() for t in (x, w1, w3, w2))
        plan = route_plan(expert_indices, expert_weights, counts)
        # grad False (no backward can follow): a and b are neither written nor kept, only h.
        out, a, b, hid = moe_swiglu_forward(x, plan, w1, w3, w2, save_for_backward=grad)
        if grad:
            ctx.save_for_backward(x, w1, w3, w2, a, b, hid, *plan[:7])
        ctx.plan_sizes = plan[7:]
        ctx.weights_shape = expert_weights.shape
        return out

    @staticmethod
    def backward(ctx, dout):
        x, w1, w3, w2, a, b, hid, *plan_tensors = ctx.saved_tensors
        plan = RoutePlan(*plan_tensors, *ctx.plan_sizes)
        x_dt, w1_dt, w3_dt, w2_dt, gate_dt = ctx.grad_dtypes
        dx, dgate, dw1, dw3, dw2 = moe_swiglu_backward(dout.to(x.dtype), x, plan, w1, w3, w2, a, b, hid,
                                                       dx_dtype=x_dt, dw_dtype=w1_dt)
        return (dx, None, dgate.view(ctx.weights_shape).to(gate_dt), None, dw1, dw3.to(w3_dt), dw2.to(w2_dt),
                None, None)


def moe_swiglu(x, expert_indices, expert_weights, counts, w1, w3, w2, compute_dtype: torch.dtype | None = None):
    """The routed SwiGLU experts of a MoE layer: ``x`` [T, d]; the router's ``expert_indices`` [T, k],
    ``expert_weights`` [T, k] (differentiable) and ``counts`` [E] (its tokens-per-expert histogram);
    ``w1, w3`` [E, d, h], ``w2`` [E, h, d]. ``compute_dtype`` (default x's): the dtype of the GEMM operands
    and of the output, e.g. bf16 under autocast; gradients come back in each input's own dtype."""
    # ctx.needs_input_grad is True under torch.no_grad() too: grad mode is read here, outside the Function.
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in (x, expert_weights, w1, w3, w2))
    return MoESwiGLUFunction.apply(x, expert_indices, expert_weights, counts, w1, w3, w2, compute_dtype, grad)
