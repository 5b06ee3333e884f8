"""Triton kernels for the MoE path (installed as ``tpsbench.kernels``). Imports only torch and triton.

One file per job, each in Liger-Kernel's order (``@triton.jit`` kernels, their launchers, the autograd
Function): ``moe_router`` (fused softmax / top-k / histogram / auxiliary losses), ``routing_plan`` (the
assignments sorted by expert and the row tiles), ``expert_gemms`` (the expert GEMM kernels with their shared
prologue), ``expert_launchers`` (tile tables, autotuning, one function per stage, the down-gradient variant),
``moe_experts`` (the autograd Function). Measurements and the history of each design decision:
kernels/NOTES.md.

The public API, for tpsbench.nn, tools/ and tests:
"""

from .expert_launchers import (
    DOWN_BWD_VARIANTS,
    down,
    down_bwd,
    down_bwd_variant,
    dx,
    forced_down_bwd,
    moe_swiglu_backward,
    moe_swiglu_forward,
    up_gate,
    wgrad_down,
    wgrad_up_gate,
)
from .moe_experts import moe_swiglu
from .moe_router import softmax_topk_router
from .routing_plan import RoutePlan, plan_block_m, route_plan

__all__ = [
    "DOWN_BWD_VARIANTS", "RoutePlan", "down", "down_bwd", "down_bwd_variant", "dx", "forced_down_bwd", "moe_swiglu",
    "moe_swiglu_backward", "moe_swiglu_forward", "plan_block_m", "route_plan", "softmax_topk_router", "up_gate",
    "wgrad_down", "wgrad_up_gate",
]
