"""Launchers of the MoE expert GEMM kernels (kernels/expert_gemms.py): tile configurations and their autotune
tables, one function per stage of the forward and backward, the choice between the two down-gradient
variants, and the forward and backward they make up. Imports only torch and triton.

The stage functions (``up_gate``, ``down``, ``down_bwd``, ``dx``, ``wgrad_up_gate``, ``wgrad_down``) are the
public API that tools/profile_moe_kernels.py times one by one; ``moe_swiglu_forward`` and
``moe_swiglu_backward`` chain them as the autograd Function (kernels/moe_experts.py) does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

import torch
import triton

from .expert_gemms import (
    down_bwd_kernel,
    down_scatter_kernel,
    dx_kernel,
    gather_sum_kernel,
    swiglu_bwd_kernel,
    up_gate_kernel,
    wgrad_kernel,
)
from .interpret import INTERPRET
from .routing_plan import RoutePlan

# GPU tile candidates, tried once per (D, H, BM) by triton.autotune; BM is not tuned, the routing plan's tiles
# depend on it. A kernel that adds into its output with atomics resets it before every trial (kernels/NOTES.md).
_ROW_CONFIGS = [
    triton.Config({"BN": bn, "BK": bk}, num_warps=w, num_stages=s)
    for bn, bk, w, s in [(128, 64, 8, 3), (128, 64, 4, 3), (64, 64, 4, 3), (128, 32, 4, 4)]
]
# Kernels with one accumulator (down, down_bwd) also try a 256-wide tile: 85 FLOP/B from L2 instead of 64, the
# intensity up_gate's two accumulators already have (kernels/NOTES.md).
_WIDE_ROW_CONFIGS = [*_ROW_CONFIGS, triton.Config({"BN": 256, "BK": 64}, num_warps=8, num_stages=3)]
_WGRAD_CONFIGS = [
    triton.Config({"BKO": bko, "BN": bn, "BR": br}, num_warps=w, num_stages=s)
    for bko, bn, br, w, s in [(128, 128, 64, 8, 3), (128, 128, 32, 8, 3), (64, 128, 64, 4, 3), (128, 64, 64, 4, 3)]
]
_TUNED: dict = {}
if not INTERPRET:
    _TUNED = {
        up_gate_kernel: triton.autotune(_ROW_CONFIGS, key=["D", "H", "BM"])(up_gate_kernel),
        down_scatter_kernel: triton.autotune(_WIDE_ROW_CONFIGS, key=["D", "H", "BM", "SCATTER"])(down_scatter_kernel),
        down_bwd_kernel: triton.autotune(_WIDE_ROW_CONFIGS, key=["D", "H", "BM", "FUSE_SWIGLU"],
                                         reset_to_zero=["dgate_ptr"])(down_bwd_kernel),
        dx_kernel: triton.autotune(_ROW_CONFIGS, key=["D", "H", "BM", "SCATTER"])(dx_kernel),
        wgrad_kernel: triton.autotune(_WGRAD_CONFIGS, key=["K", "N", "X_MODE", "Y_MODE", "DUAL"])(wgrad_kernel),
    }


def row_config(n: int, k: int) -> dict[str, int]:
    """Tiles of a row kernel that is not autotuned. Interpreter: the smallest tiles tl.dot accepts."""
    if INTERPRET:
        return {"BN": 16, "BK": 16, "num_warps": 4, "num_stages": 1}
    return {"BN": 128 if n >= 128 else 64, "BK": 64 if k >= 64 else 32, "num_warps": 4, "num_stages": 3}


def wgrad_config(k: int, n: int) -> dict[str, int]:
    if INTERPRET:
        return {"BKO": 16, "BN": 16, "BR": 16, "num_warps": 4, "num_stages": 1}
    return {"BKO": 128 if k >= 128 else 64, "BN": 128 if n >= 128 else 64, "BR": 64, "num_warps": 8,
            "num_stages": 3}


def _launch_rows(kernel, args: tuple, n: int, k: int, plan: RoutePlan, **flags) -> None:
    """A row kernel over the plan's tiles: ``args`` holds the kernel's pointers before the tile schedule
    and, last, its scalars."""
    tiles = (plan.tile_e, plan.tile_r, plan.offsets)
    if kernel in _TUNED:
        _TUNED[kernel][lambda meta: (plan.bound * triton.cdiv(n, meta["BN"]),)](
            *args[:-1], *tiles, *args[-1], **flags, BM=plan.block_m)
        return
    cfg = row_config(n, k)
    grid = (plan.bound * triton.cdiv(n, cfg["BN"]),)
    kernel[grid](*args[:-1], *tiles, *args[-1], **flags, BM=plan.block_m, BN=cfg["BN"], BK=cfg["BK"],
                 num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])


def _token_rows(kernel, args: tuple, out: torch.Tensor, n: int, k: int, plan: RoutePlan,
                buffer_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Run a row kernel whose rows add up per token into ``out`` [T, n]: straight into out with top-1,
    else into a row buffer (``buffer_dtype``, default out's) summed in fp32 by gather_sum_kernel. ``args``
    holds everything before the output pointer and, last, the scalars with the output's stride last."""
    t = out.shape[0]
    rows = plan.tok.numel()
    top_k = rows // t if t else 1
    if top_k == 1:
        _launch_rows(kernel, (*args[:-1], out, (*args[-1], out.stride(0))), n, k, plan, SCATTER=True)
        return out
    y = torch.empty(rows, n, device=out.device, dtype=buffer_dtype or out.dtype)
    _launch_rows(kernel, (*args[:-1], y, (*args[-1], y.stride(0))), n, k, plan, SCATTER=False)
    bt, bd = (16, 16) if INTERPRET else (16, min(256, triton.next_power_of_2(n)))
    gather_sum_kernel[(triton.cdiv(t, bt), triton.cdiv(n, bd))](y, plan.row_of, out, t, n, y.stride(0),
                                                                out.stride(0), K=top_k, BT=bt, BD=bd, num_warps=4)
    return out


def _wgrad(x, y, y2, plan: RoutePlan, k: int, n: int, e: int, x_mode: int, y_mode: int,
           out_dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-expert ``X^T Y`` (and ``X^T Y2`` sharing the X loads when ``y2`` is given)."""
    dw = torch.empty(e, k, n, device=x.device, dtype=out_dtype)
    dw2 = torch.empty_like(dw) if y2 is not None else None
    args = (x, plan.tok, y, y2 if y2 is not None else y, dw,
            dw2 if dw2 is not None else dw, plan.offsets, k, n, x.stride(0), y.stride(0), dw.stride(0))
    flags = {"X_MODE": x_mode, "Y_MODE": y_mode, "DUAL": y2 is not None}
    if wgrad_kernel in _TUNED:
        _TUNED[wgrad_kernel][lambda meta: (triton.cdiv(k, meta["BKO"]) * triton.cdiv(n, meta["BN"]), e)](
            *args, **flags)
        return dw, dw2
    cfg = wgrad_config(k, n)
    grid = (triton.cdiv(k, cfg["BKO"]) * triton.cdiv(n, cfg["BN"]), e)
    wgrad_kernel[grid](*args, **flags, BKO=cfg["BKO"], BN=cfg["BN"], BR=cfg["BR"], num_warps=cfg["num_warps"],
                       num_stages=cfg["num_stages"])
    return dw, dw2


# --- the stages ------------------------------------------------------------------------------------------
def up_gate(x, plan: RoutePlan, w1, w3, *, save_for_backward: bool = True):
    """``a = x[tok] W1``, ``b = x[tok] W3`` (None unless ``save_for_backward``) and ``hg = gate * silu(a) * b``,
    [A, h] each in x's dtype."""
    _, d = x.shape
    e, _, h = w1.shape
    hid = torch.empty(plan.tok.numel(), h, device=x.device, dtype=x.dtype)
    a, b = (torch.empty_like(hid) for _ in range(2)) if save_for_backward else (hid, hid)
    _launch_rows(up_gate_kernel, (x, plan.tok, plan.gate, w1, w3, a, b, hid,
                                  (e, d, h, x.stride(0), w1.stride(0), hid.stride(0))), h, d, plan,
                 STORE_AB=save_for_backward)
    return (a, b, hid) if save_for_backward else (None, None, hid)


def down(hid, plan: RoutePlan, w2, tokens: int) -> torch.Tensor:
    """``out[t] = sum over t's rows of hg W2[e]``: [tokens, d] in hg's dtype."""
    e, h, d = w2.shape
    out = torch.empty(tokens, d, device=hid.device, dtype=hid.dtype)
    return _token_rows(down_scatter_kernel, (hid, w2, plan.tok, (e, h, d, hid.stride(0), w2.stride(0))), out, d, h,
                       plan)


DOWN_BWD_VARIANTS = ("fused", "split")


def down_bwd(dout, plan: RoutePlan, w2, a, b, variant: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """da, db ([A, h], a's dtype) and dgate ([A] fp32, assignment order) from dOut [T, d]. ``variant``
    "fused": one kernel, the SwiGLU backward in the GEMM's epilogue; "split": the GEMM stores dH and
    swiglu_bwd_kernel finishes (dH written and read once more: 2 x A x h elements)."""
    if variant not in DOWN_BWD_VARIANTS:
        raise ValueError(f"down_bwd variant {variant!r}: use one of {DOWN_BWD_VARIANTS}")
    e, h, d = w2.shape
    rows = plan.tok.numel()
    da, db = torch.empty_like(a), torch.empty_like(b)
    dgate = torch.zeros(rows, device=a.device, dtype=torch.float32)
    fused = variant == "fused"
    _launch_rows(down_bwd_kernel, (dout, plan.tok, plan.gate, plan.src, w2, a, b, da, db, dgate,
                                   (e, d, h, dout.stride(0), w2.stride(0), a.stride(0))), h, d, plan,
                 FUSE_SWIGLU=fused)
    if not fused:
        br, bh = (16, 16) if INTERPRET else (32, 128)
        swiglu_bwd_kernel[(triton.cdiv(rows, br),)](da, a, b, plan.gate, plan.src, da, db, dgate, rows, h,
                                                    a.stride(0), BR=br, BH=bh, num_warps=4)
    return da, db, dgate


def dx(da, db, plan: RoutePlan, w1, w3, tokens: int, out_dtype: torch.dtype) -> torch.Tensor:
    """``dX[t] = sum over t's rows of da W1[e]^T + db W3[e]^T``: [tokens, d] in ``out_dtype`` (top-k rows are
    summed from a buffer in da's dtype)."""
    e, d, h = w1.shape
    out = torch.empty(tokens, d, device=da.device, dtype=out_dtype)
    return _token_rows(dx_kernel, (da, db, w1, w3, plan.tok, (e, h, d, da.stride(0), w1.stride(0))), out, d, h, plan,
                       buffer_dtype=da.dtype)


def wgrad_up_gate(x, da, db, plan: RoutePlan, out_dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """dW1, dW3 [E, d, h] in one pass over the gathered token rows."""
    d, (e, h) = x.shape[1], (plan.offsets.numel() - 1, da.shape[1])
    dw1, dw3 = _wgrad(x, da, db, plan, d, h, e, 1, 0, out_dtype)
    assert dw3 is not None
    return dw1, dw3


def wgrad_down(hid, dout, plan: RoutePlan, out_dtype) -> torch.Tensor:
    """dW2 [E, h, d] from hg and the gathered dOut rows."""
    h, d, e = hid.shape[1], dout.shape[1], plan.offsets.numel() - 1
    return _wgrad(hid, dout, None, plan, h, d, e, 0, 1, out_dtype)[0]


# --- which down-gradient variant ---------------------------------------------------------------------------
# Which variant is faster depends on the shape and the GPU (the fused epilogue holds the fp32 accumulator, a,
# b and the SwiGLU terms at once; split pays 2 x A x h more bytes): timed once per shape, like
# triton.autotune, on the first backward, and remembered like autotune's cache.
_DOWN_BWD_CHOICE: dict[tuple, str] = {}
_FORCED_DOWN_BWD: ContextVar[str | None] = ContextVar("forced_down_bwd", default=None)


@contextlib.contextmanager
def forced_down_bwd(variant: str | None) -> Iterator[None]:
    """Within the block, every backward runs this down-gradient variant (None: the timed choice). Tests use it
    to check both variants."""
    if variant is not None and variant not in DOWN_BWD_VARIANTS:
        raise ValueError(f"down_bwd variant {variant!r}: use one of {DOWN_BWD_VARIANTS}")
    token = _FORCED_DOWN_BWD.set(variant)
    try:
        yield
    finally:
        _FORCED_DOWN_BWD.reset(token)


def down_bwd_variant(dout, plan: RoutePlan, w2, a, b) -> str:
    """The variant down_bwd runs for this shape: a forced one, else the faster one (timed on the first call per
    shape with triton.testing.do_bench, a fraction of a second once per shape; "fused" in the interpreter)."""
    forced = _FORCED_DOWN_BWD.get()
    if forced is not None:
        return forced
    if INTERPRET:
        return "fused"
    key = (tuple(w2.shape), plan.block_m, a.dtype, dout.dtype, a.device)
    if key not in _DOWN_BWD_CHOICE:
        times = {v: triton.testing.do_bench(lambda v=v: down_bwd(dout, plan, w2, a, b, v), warmup=10, rep=40)
                 for v in DOWN_BWD_VARIANTS}
        _DOWN_BWD_CHOICE[key] = min(times, key=times.get)
    return _DOWN_BWD_CHOICE[key]


# --- forward and backward ----------------------------------------------------------------------------------
def moe_swiglu_forward(x, plan: RoutePlan, w1, w3, w2, save_for_backward: bool = True):
    """out [T, d] (x's dtype), and what the backward reads: ``a = x W1``, ``b = x W3`` (None unless
    ``save_for_backward``) and ``hg = gate * silu(a) * b`` ([A, h] each, x's dtype). ``x`` [T, d];
    ``w1, w3`` [E, d, h]; ``w2`` [E, h, d]; all contiguous."""
    a, b, hid = up_gate(x, plan, w1, w3, save_for_backward=save_for_backward)
    return down(hid, plan, w2, x.shape[0]), a, b, hid


def moe_swiglu_backward(dout, x, plan: RoutePlan, w1, w3, w2, a, b, hid, dx_dtype=None, dw_dtype=None):
    """dx [T, d] (``dx_dtype``), dgate [A] fp32 in assignment order (``t*k + j``), dw1, dw3, dw2
    (``dw_dtype``); both default to the inputs' dtype. The kernels accumulate in fp32 and write these
    dtypes directly: fp32 master weights get fp32 gradients without a bf16 round trip and cast kernel.
    ``a``, ``b``, ``hid``: the forward's (moe_swiglu_forward with save_for_backward)."""
    dout = dout.contiguous()
    da, db, dgate = down_bwd(dout, plan, w2, a, b, down_bwd_variant(dout, plan, w2, a, b))
    grad_x = dx(da, db, plan, w1, w3, x.shape[0], dx_dtype or x.dtype)
    dw1, dw3 = wgrad_up_gate(x, da, db, plan, dw_dtype or w1.dtype)
    dw2 = wgrad_down(hid, dout, plan, dw_dtype or w2.dtype)
    return grad_x, dgate, dw1, dw3, dw2
