"""Fused MoE expert MLP (SwiGLU) in Triton: gather -> grouped GEMM -> scatter, forward and backward.

Rows are token-expert assignments sorted by expert (``tok[r]`` is the token of row ``r``, expert ``e``
owns rows ``offsets[e]:offsets[e+1]``; ``row_of[t*k + j]`` is the row of token t's j-th choice). The
kernels read token rows of ``x`` through ``tok``, so the permuted copy of the tokens is never written.
Saved for backward: ``a = x W1``, ``b = x W3`` and ``hg = gate * silu(a) * b`` (``[A, h]`` each; a
forward without autograd writes only ``hg``), computed once, in the up-projection's epilogue, with the
router weight ``gate`` of the row already applied. h used to be recomputed inside the K loops of the down
GEMM (once per output column tile: 16 times at olmoe_1b_7b) and of the W2 gradient, which ran at 157 and
175 TFLOP/s on the H100 against 474 for the up-projection: the exp and the division per operand element are
two special-function (MUFU) ops at 16 per clock per SM, 1024 cycles for a 128x64 operand tile, against 512
cycles for the 128x128x64 MMA it feeds. With h stored (and the row tiles ordered, _tile_ids) down ran at
455 TFLOP/s; the W2 gradient, which still scaled its dOut rows by the router weight in registers, at 283;
with the weight folded into hg, 393 (H100, tools/profile_moe_kernels.py, 2026-11-22). Storing hg costs one
[A, h] write (0.5 GB at olmoe_1b_7b, 32,768 tokens) and that much more saved activation memory.

Routing plan (``_route_plan_kernel``, once per step, saved for the backward): the stable sort of the
assignments by expert, ``row_of``, ``offsets`` and the row tiles in one launch, from the router's
indices, weights and histogram; it replaced about 30 torch ops per fwd+bwd (argsort, gathers, cumsums, two
tile schedules: tests/launch_count.py).

Forward:  ``_up_gate_kernel`` (a, b, hg) -> ``_down_scatter_kernel`` (hg W2).
Backward: ``_down_bwd_kernel`` (dH = dOut[tok] W2^T, with the SwiGLU backward and the router-weight
gradient in its epilogue, or, split, dH stored and ``_swiglu_bwd_kernel`` doing the rest: ``down_bwd``
times both on the first backward of a shape; at olmoe_1b_7b on the H100 the fused epilogue took 4.76 ms
and the split pair 2.70, at moe_1b fused 0.12 vs 0.16) -> ``_dx_kernel`` (da W1^T + db W3^T) ->
``_wgrad_kernel`` (per expert ``X^T dY`` for W1, W3 and W2).

Outputs several rows add into (out, dX): with top-1 every token has one row, and the row kernels store
straight into ``out[tok[r]]``. With top-k > 1 they store each row's result in row order and
``_gather_sum_kernel`` adds a token's k rows (fp32 sum). An earlier version added rows into fp32 outputs
with atomics: on the H100 at olmoe_1b_7b's shape (262,144 rows x 2048) the two atomic kernels took 10.9
and 9.9 ms of a 43.6 ms backward+forward, against 1.9 ms for torch._grouped_mm doing a GEMM of the same size
(tools/profile_moe_kernels.py, 2026-11-22). The fused down_bwd still adds the router-weight gradient
(one value per row, summed over the H tiles) with atomics; the split one owns whole rows and stores it.

File order (Liger-Kernel style): private ``@triton.jit`` kernels, their launchers, the autograd.Function.
Imports only torch and triton.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch
import triton
import triton.language as tl

# The interpreter (TRITON_INTERPRET=1) runs kernels on the CPU with numpy: small fixed blocks, no
# autotuning. It gets bf16 tl.dot wrong (../shared/NOTES.md): tests there use fp16 and fp32.
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


# --------------------------------------------------------------------------------------------------
# kernels
# --------------------------------------------------------------------------------------------------
@triton.jit
def _route_plan_kernel(
    idx_ptr, w_ptr, counts_ptr, tok_ptr, gate_ptr, src_ptr, row_of_ptr, off_ptr, tile_e_ptr, tile_r_ptr,
    A, E, K, BOUND,
    BM: tl.constexpr, BE: tl.constexpr, BA: tl.constexpr, BT: tl.constexpr,
):
    """The routing plan of expert ``e`` (one program per expert): a stable counting sort of the
    token-expert assignments by expert, and the expert's row tiles. Program e starts its rows at
    ``sum(counts[:e])`` and scans the assignments in order, numbering its own with a running prefix sum,
    so the order equals a stable argsort. No host sync: the grid and every size are known on the host."""
    e = tl.program_id(0)
    es = tl.arange(0, BE)
    counts = tl.load(counts_ptr + es, mask=es < E, other=0).to(tl.int32)
    count = tl.sum(tl.where(es == e, counts, 0), axis=0)
    start = tl.sum(tl.where(es < e, counts, 0), axis=0)
    tiles = (counts + BM - 1) // BM
    tile0 = tl.sum(tl.where(es < e, tiles, 0), axis=0)
    tl.store(off_ptr + e, start)
    if e == E - 1:
        tl.store(off_ptr + E, start + count)
        # Tiles past the real count (the grid is an upper bound) see expert E and exit. There are at most
        # E of them: sum_e cdiv(c_e, BM) >= cdiv(A, BM) = BOUND - E.
        spare = tl.sum(tiles, axis=0) + es
        tl.store(tile_e_ptr + spare, tl.zeros([BE], dtype=tl.int32) + E, mask=spare < BOUND)
        tl.store(tile_r_ptr + spare, tl.zeros([BE], dtype=tl.int32), mask=spare < BOUND)
    for j0 in range(0, (count + BM - 1) // BM, BT):
        js = j0 + tl.arange(0, BT)
        jmask = js * BM < count
        tl.store(tile_e_ptr + tile0 + js, tl.zeros([BT], dtype=tl.int32) + e, mask=jmask)
        tl.store(tile_r_ptr + tile0 + js, start + js * BM, mask=jmask)
    seen = count * 0
    for i0 in range(0, tl.where(count > 0, A, 0), BA):  # experts without tokens skip the scan
        ids = i0 + tl.arange(0, BA)
        hit = tl.load(idx_ptr + ids, mask=ids < A, other=-1) == e
        hit32 = hit.to(tl.int32)
        pos = start + seen + tl.cumsum(hit32, axis=0) - hit32
        tl.store(tok_ptr + pos, ids // K, mask=hit)
        tl.store(src_ptr + pos, ids, mask=hit)
        tl.store(gate_ptr + pos, tl.load(w_ptr + ids, mask=hit, other=0.0), mask=hit)
        tl.store(row_of_ptr + ids, pos, mask=hit)
        seen += tl.sum(hit32, axis=0)


@triton.jit
def _tile_ids(N, BN: tl.constexpr):
    """(row tile, column tile) of this program in a 1-D grid of row tiles x column tiles, column tiles
    fastest. The column tiles of one row tile are consecutive programs and run together, so the tile's
    operand rows (gathered tokens, dOut rows, a/b/h rows) come from L2 after the first read. With row tiles
    fastest (a 2-D grid) each column tile was one pass over all the rows: at olmoe_1b_7b (262,144 rows)
    the row operands of up_gate, down_bwd, down and dx came from DRAM 8, 8, 16 and 16 times, 43 GB per
    fwd+bwd (3.8 GB read once each) against the 21.9 GB the layer's roofline floor counts. The weights
    stay L2-resident either way: one expert's W1 and W3 are 8 MB, and its row tiles run together.
    Measured on the H100 (olmoe_1b_7b, tools/profile_moe_kernels.py): dx, changed by nothing else, went
    from 7.06 to 4.75 ms (311 -> 463 TFLOP/s); up_gate, which now also writes h, from 4.64 to 4.30 ms."""
    pid = tl.program_id(0)
    n_tiles = tl.cdiv(N, BN)
    return pid // n_tiles, pid % n_tiles


@triton.jit
def _tile_rows(tile_e_ptr, tile_r_ptr, off_ptr, pid_m, BM: tl.constexpr):
    e = tl.load(tile_e_ptr + pid_m)
    row0 = tl.load(tile_r_ptr + pid_m)
    row_end = tl.load(off_ptr + e + 1)
    rows = row0 + tl.arange(0, BM)
    return e, rows, rows < row_end


@triton.jit
def _store_rows(out_ptr, acc, tok_ptr, rows, rmask, cols, cmask, stride_out, SCATTER: tl.constexpr):
    """SCATTER (top-1, one row per token): into out[tok[r]]; else into out[r], summed later per token."""
    if SCATTER:  # noqa: SIM108 - a constexpr branch, resolved at compile time
        dest = tl.load(tok_ptr + rows, mask=rmask, other=0).to(tl.int64)
    else:
        dest = rows.to(tl.int64)
    tl.store(out_ptr + dest[:, None] * stride_out + cols[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=rmask[:, None] & cmask[None, :])


@triton.jit
def _up_gate_kernel(
    x_ptr, tok_ptr, gate_ptr, w1_ptr, w3_ptr, a_ptr, b_ptr, h_ptr, tile_e_ptr, tile_r_ptr, off_ptr,
    E, D, H, stride_x, stride_we, stride_a,
    STORE_AB: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
):
    """a = x[tok] W1, b = x[tok] W3 (saved for the backward when STORE_AB) and the gated SwiGLU output
    hg = gate * silu(a) * b, from the fp32 accumulators, once per element: the down GEMM and the W2
    gradient read hg as a plain operand, with no per-row scaling left to do in their K loops."""
    pid_m, pid_n = _tile_ids(H, BN)
    if tl.load(tile_e_ptr + pid_m) >= E:
        return
    e, rows, rmask = _tile_rows(tile_e_ptr, tile_r_ptr, off_ptr, pid_m, BM)
    tok = tl.load(tok_ptr + rows, mask=rmask, other=0).to(tl.int64)
    gate = tl.load(gate_ptr + rows, mask=rmask, other=0.0)
    cols = pid_n * BN + tl.arange(0, BN)
    cmask = cols < H
    acc1 = tl.zeros((BM, BN), dtype=tl.float32)
    acc3 = tl.zeros((BM, BN), dtype=tl.float32)
    w_base = e.to(tl.int64) * stride_we
    for k0 in range(0, D, BK):
        ks = k0 + tl.arange(0, BK)
        kmask = ks < D
        xa = tl.load(x_ptr + tok[:, None] * stride_x + ks[None, :], mask=rmask[:, None] & kmask[None, :], other=0.0)
        wmask = kmask[:, None] & cmask[None, :]
        w1 = tl.load(w1_ptr + w_base + ks[:, None] * H + cols[None, :], mask=wmask, other=0.0)
        w3 = tl.load(w3_ptr + w_base + ks[:, None] * H + cols[None, :], mask=wmask, other=0.0)
        acc1 = tl.dot(xa, w1, acc1)
        acc3 = tl.dot(xa, w3, acc3)
    omask = rmask[:, None] & cmask[None, :]
    optr = rows[:, None].to(tl.int64) * stride_a + cols[None, :]
    if STORE_AB:
        tl.store(a_ptr + optr, acc1.to(a_ptr.dtype.element_ty), mask=omask)
        tl.store(b_ptr + optr, acc3.to(b_ptr.dtype.element_ty), mask=omask)
    hg = acc1 / (1.0 + tl.exp(-acc1)) * acc3 * gate[:, None]
    tl.store(h_ptr + optr, hg.to(h_ptr.dtype.element_ty), mask=omask)


@triton.jit
def _down_scatter_kernel(
    h_ptr, w2_ptr, tok_ptr, out_ptr, tile_e_ptr, tile_r_ptr, off_ptr,
    E, H, D, stride_h, stride_we, stride_out,
    SCATTER: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
):
    """hg W2[e] per row (hg = gate * silu(a) * b, as stored by _up_gate_kernel)."""
    pid_m, pid_n = _tile_ids(D, BN)
    if tl.load(tile_e_ptr + pid_m) >= E:
        return
    e, rows, rmask = _tile_rows(tile_e_ptr, tile_r_ptr, off_ptr, pid_m, BM)
    cols = pid_n * BN + tl.arange(0, BN)
    cmask = cols < D
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    w_base = e.to(tl.int64) * stride_we
    for k0 in range(0, H, BK):
        ks = k0 + tl.arange(0, BK)
        kmask = ks < H
        hh = tl.load(h_ptr + rows[:, None].to(tl.int64) * stride_h + ks[None, :],
                     mask=rmask[:, None] & kmask[None, :], other=0.0)
        w = tl.load(w2_ptr + w_base + ks[:, None] * D + cols[None, :], mask=kmask[:, None] & cmask[None, :], other=0.0)
        acc = tl.dot(hh, w, acc)
    _store_rows(out_ptr, acc, tok_ptr, rows, rmask, cols, cmask, stride_out, SCATTER)


@triton.jit
def _down_bwd_kernel(
    dout_ptr, tok_ptr, gate_ptr, src_ptr, w2_ptr, a_ptr, b_ptr, da_ptr, db_ptr, dgate_ptr, tile_e_ptr, tile_r_ptr,
    off_ptr,
    E, D, H, stride_dout, stride_we, stride_a,
    FUSE_SWIGLU: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
):
    """dH = dOut[tok] W2^T (before the router weight). FUSE_SWIGLU: the SwiGLU backward and the
    router-weight gradient in the epilogue (da, db, dgate). Else dH is stored into ``da`` for
    _swiglu_bwd_kernel: a plain GEMM epilogue, at the price of writing and reading dH once more."""
    pid_m, pid_n = _tile_ids(H, BN)
    if tl.load(tile_e_ptr + pid_m) >= E:
        return
    e, rows, rmask = _tile_rows(tile_e_ptr, tile_r_ptr, off_ptr, pid_m, BM)
    tok = tl.load(tok_ptr + rows, mask=rmask, other=0).to(tl.int64)
    cols = pid_n * BN + tl.arange(0, BN)  # over H
    cmask = cols < H
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    w_base = e.to(tl.int64) * stride_we
    for k0 in range(0, D, BK):
        ks = k0 + tl.arange(0, BK)
        kmask = ks < D
        g = tl.load(dout_ptr + tok[:, None] * stride_dout + ks[None, :], mask=rmask[:, None] & kmask[None, :],
                    other=0.0)
        # W2[e] is [H, D]; its transpose [D, H] read through strides.
        wt = tl.load(w2_ptr + w_base + ks[:, None] + cols[None, :] * D, mask=kmask[:, None] & cmask[None, :],
                     other=0.0)
        acc = tl.dot(g.to(wt.dtype), wt, acc)
    omask = rmask[:, None] & cmask[None, :]
    aptr = rows[:, None].to(tl.int64) * stride_a + cols[None, :]
    if not FUSE_SWIGLU:
        tl.store(da_ptr + aptr, acc.to(da_ptr.dtype.element_ty), mask=omask)
        return
    gate = tl.load(gate_ptr + rows, mask=rmask, other=0.0)
    a = tl.load(a_ptr + aptr, mask=omask, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + aptr, mask=omask, other=0.0).to(tl.float32)
    da, db, dgate = _swiglu_grads(acc, a, b, gate)
    # The router-weight gradient, summed over the H tiles, stored at the row's assignment (src[r] = t*k + j),
    # the layout of the router's [T, k] weights.
    src = tl.load(src_ptr + rows, mask=rmask, other=0)
    tl.atomic_add(dgate_ptr + src, dgate, mask=rmask)
    tl.store(da_ptr + aptr, da.to(da_ptr.dtype.element_ty), mask=omask)
    tl.store(db_ptr + aptr, db.to(db_ptr.dtype.element_ty), mask=omask)


@triton.jit
def _swiglu_grads(dh, a, b, gate):
    """SwiGLU backward of a [rows, cols] block (fp32): from dH before the router weight, a, b and the rows'
    router weights, (da, db, the block's part of each row's router-weight gradient <dH, silu(a) * b>)."""
    sig = 1.0 / (1.0 + tl.exp(-a))
    silu = a * sig
    dgate = tl.sum(dh * silu * b, axis=1)
    dh = dh * gate[:, None]
    return dh * b * sig * (1.0 + a * (1.0 - sig)), dh * silu, dgate


@triton.jit
def _swiglu_bwd_kernel(dh_ptr, a_ptr, b_ptr, gate_ptr, src_ptr, da_ptr, db_ptr, dgate_ptr, A, H, stride,
                       BR: tl.constexpr, BH: tl.constexpr):
    """The SwiGLU backward of rows whose dH (before the router weight) _down_bwd_kernel stored: da, db and
    the router-weight gradient dgate[src[r]] = <dH[r], silu(a) * b>. A program owns whole rows, so dgate
    needs no atomics. ``da_ptr`` may be ``dh_ptr``: each element is read before it is overwritten."""
    rows = tl.program_id(0) * BR + tl.arange(0, BR)
    rmask = rows < A
    gate = tl.load(gate_ptr + rows, mask=rmask, other=0.0)
    base = rows[:, None].to(tl.int64) * stride
    dgate = tl.zeros((BR,), dtype=tl.float32)
    for h0 in range(0, H, BH):
        cols = h0 + tl.arange(0, BH)
        mask = rmask[:, None] & (cols < H)[None, :]
        ptr = base + cols[None, :]
        dh = tl.load(dh_ptr + ptr, mask=mask, other=0.0).to(tl.float32)
        a = tl.load(a_ptr + ptr, mask=mask, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + ptr, mask=mask, other=0.0).to(tl.float32)
        da, db, part = _swiglu_grads(dh, a, b, gate)
        dgate += part
        tl.store(da_ptr + ptr, da.to(da_ptr.dtype.element_ty), mask=mask)
        tl.store(db_ptr + ptr, db.to(db_ptr.dtype.element_ty), mask=mask)
    src = tl.load(src_ptr + rows, mask=rmask, other=0)
    tl.store(dgate_ptr + src, dgate, mask=rmask)


@triton.jit
def _dx_kernel(
    da_ptr, db_ptr, w1_ptr, w3_ptr, tok_ptr, dx_ptr, tile_e_ptr, tile_r_ptr, off_ptr,
    E, H, D, stride_a, stride_we, stride_dx,
    SCATTER: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
):
    pid_m, pid_n = _tile_ids(D, BN)
    if tl.load(tile_e_ptr + pid_m) >= E:
        return
    e, rows, rmask = _tile_rows(tile_e_ptr, tile_r_ptr, off_ptr, pid_m, BM)
    cols = pid_n * BN + tl.arange(0, BN)  # over D
    cmask = cols < D
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    w_base = e.to(tl.int64) * stride_we
    for k0 in range(0, H, BK):
        ks = k0 + tl.arange(0, BK)
        kmask = ks < H
        amask = rmask[:, None] & kmask[None, :]
        aptr = rows[:, None].to(tl.int64) * stride_a + ks[None, :]
        da = tl.load(da_ptr + aptr, mask=amask, other=0.0)
        db = tl.load(db_ptr + aptr, mask=amask, other=0.0)
        # W1[e], W3[e] are [D, H]; transposes [H, D] read through strides.
        wmask = kmask[:, None] & cmask[None, :]
        w1t = tl.load(w1_ptr + w_base + ks[:, None] + cols[None, :] * H, mask=wmask, other=0.0)
        w3t = tl.load(w3_ptr + w_base + ks[:, None] + cols[None, :] * H, mask=wmask, other=0.0)
        acc = tl.dot(da, w1t, acc)
        acc = tl.dot(db, w3t, acc)
    _store_rows(dx_ptr, acc, tok_ptr, rows, rmask, cols, cmask, stride_dx, SCATTER)


@triton.jit
def _gather_sum_kernel(y_ptr, row_of_ptr, out_ptr, T, D, stride_y, stride_out,
                       K: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr):
    """out[t] = sum_j y[row_of[t*K + j]] (fp32 sum): a token's K expert rows, added in row order."""
    ts = tl.program_id(0) * BT + tl.arange(0, BT)
    cols = tl.program_id(1) * BD + tl.arange(0, BD)
    tmask = ts < T
    mask = tmask[:, None] & (cols < D)[None, :]
    acc = tl.zeros((BT, BD), dtype=tl.float32)
    for j in tl.static_range(K):
        r = tl.load(row_of_ptr + ts.to(tl.int64) * K + j, mask=tmask, other=0).to(tl.int64)
        acc += tl.load(y_ptr + r[:, None] * stride_y + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + ts[:, None].to(tl.int64) * stride_out + cols[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=mask)


@triton.jit
def _wgrad_kernel(
    x_ptr, tok_ptr, y_ptr, y2_ptr, dw_ptr, dw2_ptr, off_ptr,
    K, N, stride_x, stride_y, stride_dwe,
    X_MODE: tl.constexpr, Y_MODE: tl.constexpr, DUAL: tl.constexpr,
    BKO: tl.constexpr, BN: tl.constexpr, BR: tl.constexpr,
):
    """dW[e] = X_e^T Y_e over the rows of expert e (and dW2[e] = X_e^T Y2_e when DUAL, sharing the X
    loads: dW1 and dW3 both read the gathered tokens). X_MODE 0: X = x rows (the gated SwiGLU output hg);
    X_MODE 1: X = x[tok] (gathered). Y_MODE 0: Y = y rows; Y_MODE 1: Y = y[tok] (gathered).
    X is loaded already transposed ([BKO, BR]) so the dot needs no register transpose. Both operands go
    from memory to the dot unchanged: an earlier Y_MODE scaled the gathered dOut rows by the router weight
    in registers before the dot, and that kernel (the W2 gradient) ran at 283 TFLOP/s on the H100 at
    olmoe_1b_7b against 436 for the W1+W3 one (tools/profile_moe_kernels.py, 2026-11-22); the weight is
    now applied once, in _up_gate_kernel's epilogue (hg)."""
    pid = tl.program_id(0)
    e = tl.program_id(1)
    n_tiles = tl.cdiv(N, BN)
    ks = (pid // n_tiles) * BKO + tl.arange(0, BKO)
    ns = (pid % n_tiles) * BN + tl.arange(0, BN)
    kmask = ks < K
    nmask = ns < N
    start = tl.load(off_ptr + e)
    end = tl.load(off_ptr + e + 1)
    acc = tl.zeros((BKO, BN), dtype=tl.float32)
    acc2 = tl.zeros((BKO, BN), dtype=tl.float32)
    for r0 in range(start, end, BR):
        rows = r0 + tl.arange(0, BR)
        rmask = rows < end
        if X_MODE == 1:  # noqa: SIM108 - a constexpr branch, resolved at compile time
            xrow = tl.load(tok_ptr + rows, mask=rmask, other=0).to(tl.int64)
        else:
            xrow = rows.to(tl.int64)
        xmask = kmask[:, None] & rmask[None, :]
        xptr = xrow[None, :] * stride_x + ks[:, None]
        xt = tl.load(x_ptr + xptr, mask=xmask, other=0.0)  # [BKO, BR]
        ymask = rmask[:, None] & nmask[None, :]
        if Y_MODE == 1:  # noqa: SIM108 - a constexpr branch, resolved at compile time
            yrow = tl.load(tok_ptr + rows, mask=rmask, other=0).to(tl.int64)
        else:
            yrow = rows.to(tl.int64)
        yt = tl.load(y_ptr + yrow[:, None] * stride_y + ns[None, :], mask=ymask, other=0.0)
        acc = tl.dot(xt, yt.to(xt.dtype), acc)
        if DUAL:
            y2 = tl.load(y2_ptr + rows[:, None].to(tl.int64) * stride_y + ns[None, :], mask=ymask, other=0.0)
            acc2 = tl.dot(xt, y2.to(xt.dtype), acc2)
    wmask = kmask[:, None] & nmask[None, :]
    woff = e.to(tl.int64) * stride_dwe + ks[:, None] * N + ns[None, :]
    tl.store(dw_ptr + woff, acc.to(dw_ptr.dtype.element_ty), mask=wmask)
    if DUAL:
        tl.store(dw2_ptr + woff, acc2.to(dw2_ptr.dtype.element_ty), mask=wmask)


# --------------------------------------------------------------------------------------------------
# launchers
# --------------------------------------------------------------------------------------------------
# GPU tile candidates, tried once per (D, H, BM) by triton.autotune. BM is not tuned: the routing plan's
# tiles depend on it (plan_block_m picks it from the rows per expert). The kernel that adds into its
# output with atomics (the router-weight gradient) resets it before every trial, or the trials would add up.
# Four candidates each keep the first-call autotuning to about a minute per shape on an H100.
_ROW_CONFIGS = [
    triton.Config({"BN": bn, "BK": bk}, num_warps=w, num_stages=s)
    for bn, bk, w, s in [(128, 64, 8, 3), (128, 64, 4, 3), (64, 64, 4, 3), (128, 32, 4, 4)]
]
# Kernels with one accumulator (down, down_bwd) also try a 256-wide tile: a 128x128x64 step loads 32 KB for
# 1 M FMAs (64 FLOP/B from L2/shared memory), a 128x256 step 48 KB for 2 M (85 FLOP/B), the intensity that
# up_gate's two accumulators sharing one gathered x tile already have (474 TFLOP/s vs 169 for down_bwd on
# the H100). The fp32 accumulator is then 128 registers per thread at 8 warps, as in up_gate.
_WIDE_ROW_CONFIGS = [*_ROW_CONFIGS, triton.Config({"BN": 256, "BK": 64}, num_warps=8, num_stages=3)]
_WGRAD_CONFIGS = [
    triton.Config({"BKO": bko, "BN": bn, "BR": br}, num_warps=w, num_stages=s)
    for bko, bn, br, w, s in [(128, 128, 64, 8, 3), (128, 128, 32, 8, 3), (64, 128, 64, 4, 3), (128, 64, 64, 4, 3)]
]
_TUNED: dict = {}
if not INTERPRET:
    _TUNED = {
        _up_gate_kernel: triton.autotune(_ROW_CONFIGS, key=["D", "H", "BM"])(_up_gate_kernel),
        _down_scatter_kernel: triton.autotune(_WIDE_ROW_CONFIGS, key=["D", "H", "BM", "SCATTER"])(
            _down_scatter_kernel),
        _down_bwd_kernel: triton.autotune(_WIDE_ROW_CONFIGS, key=["D", "H", "BM", "FUSE_SWIGLU"],
                                          reset_to_zero=["dgate_ptr"])(_down_bwd_kernel),
        _dx_kernel: triton.autotune(_ROW_CONFIGS, key=["D", "H", "BM", "SCATTER"])(_dx_kernel),
        _wgrad_kernel: triton.autotune(_WGRAD_CONFIGS, key=["K", "N", "X_MODE", "Y_MODE", "DUAL"])(_wgrad_kernel),
    }
def block_config(rows_per_expert: float, n: int, k: int) -> dict[str, int]:
    """Tile sizes. Interpreter: the smallest tiles tl.dot accepts. GPU: BM from the expected rows per
    expert (a 128-row tile half empty wastes half the tensor-core work), BN/BK for the widths."""
    if INTERPRET:
        return {"BM": 16, "BN": 16, "BK": 16, "num_warps": 4, "num_stages": 1}
    bm = 64 if rows_per_expert <= 96 else 128
    bn = 128 if n >= 128 else 64
    bk = 64 if k >= 64 else 32
    return {"BM": bm, "BN": bn, "BK": bk, "num_warps": 8 if bm * bn >= 128 * 128 else 4, "num_stages": 3}


def wgrad_config(k: int, n: int) -> dict[str, int]:
    if INTERPRET:
        return {"BKO": 16, "BN": 16, "BR": 16, "num_warps": 4, "num_stages": 1}
    return {"BKO": 128 if k >= 128 else 64, "BN": 128 if n >= 128 else 64, "BR": 64, "num_warps": 8,
            "num_stages": 3}


class RoutePlan(NamedTuple):
    """Token-expert assignments sorted by expert (stable), and the row tiles of the row kernels.
    ``A = T*k`` rows; row ``r`` is assignment ``src[r] = t*k + j`` (token ``tok[r] = t``, router weight
    ``gate[r]``); ``row_of`` is the inverse (``row_of[src[r]] = r``); expert ``e`` owns rows
    ``offsets[e]:offsets[e+1]``; row-tile program ``i`` covers ``BM`` rows of expert ``tile_e[i]`` from row
    ``tile_r[i]`` (``tile_e[i] = E``: no tile, exit); ``bound`` programs in all."""

    tok: torch.Tensor
    gate: torch.Tensor
    src: torch.Tensor
    row_of: torch.Tensor
    offsets: torch.Tensor
    tile_e: torch.Tensor
    tile_r: torch.Tensor
    block_m: int
    bound: int


def plan_block_m(rows: int, experts: int) -> int:
    """BM of the row kernels for the expected rows per expert (known on the host: no sync)."""
    return block_config(rows / max(experts, 1), 128, 128)["BM"]


def route_plan(expert_indices: torch.Tensor, expert_weights: torch.Tensor, counts: torch.Tensor,
               block_m: int | None = None) -> RoutePlan:
    """One launch (``_route_plan_kernel``) for what argsort, a gather, a cumsum, an inverse permutation and
    a tile schedule took about 30 torch ops for. ``expert_indices`` [T, k] (any integer dtype),
    ``expert_weights`` [T, k] (read as fp32), ``counts`` [E] assignments per expert (the router's histogram:
    they must agree with ``expert_indices``)."""
    idx = expert_indices.reshape(-1).contiguous()
    w = expert_weights.detach().reshape(-1).float().contiguous()
    a, e = idx.numel(), counts.numel()
    k = expert_indices.shape[-1] if expert_indices.dim() > 1 else 1
    bm = block_m if block_m is not None else plan_block_m(a, e)
    bound = triton.cdiv(a, bm) + e
    dev = idx.device
    tok, src, row_of = (torch.empty(a, device=dev, dtype=torch.int32) for _ in range(3))
    gate = torch.empty(a, device=dev, dtype=torch.float32)
    offsets = torch.empty(e + 1, device=dev, dtype=torch.int32)
    tile_e, tile_r = (torch.empty(bound, device=dev, dtype=torch.int32) for _ in range(2))
    ba, warps = (32, 4) if INTERPRET else (2048, 8)
    _route_plan_kernel[(e,)](idx, w, counts.contiguous(), tok, gate, src, row_of, offsets, tile_e, tile_r, a, e, k,
                             bound, BM=bm, BE=triton.next_power_of_2(e), BA=ba, BT=16 if INTERPRET else 64,
                             num_warps=warps)
    return RoutePlan(tok, gate, src, row_of, offsets, tile_e, tile_r, bm, bound)


def _launch_rows(kernel, args: tuple, n: int, k: int, plan: RoutePlan, **flags) -> None:
    """A row kernel over the plan's tiles: ``args`` holds the kernel's pointers before the tile schedule
    and, last, its scalars."""
    tiles = (plan.tile_e, plan.tile_r, plan.offsets)
    if kernel in _TUNED:
        _TUNED[kernel][lambda meta: (plan.bound * triton.cdiv(n, meta["BN"]),)](
            *args[:-1], *tiles, *args[-1], **flags, BM=plan.block_m)
        return
    cfg = block_config(0, n, k)
    grid = (plan.bound * triton.cdiv(n, cfg["BN"]),)
    kernel[grid](*args[:-1], *tiles, *args[-1], **flags, BM=plan.block_m, BN=cfg["BN"], BK=cfg["BK"],
                 num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])


def _token_rows(kernel, args: tuple, out: torch.Tensor, n: int, k: int, plan: RoutePlan,
                buffer_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Run a row kernel whose rows add up per token into ``out`` [T, n]: straight into out with top-1,
    else into a row buffer (``buffer_dtype``, default out's) summed in fp32 by _gather_sum_kernel. ``args``
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
    _gather_sum_kernel[(triton.cdiv(t, bt), triton.cdiv(n, bd))](y, plan.row_of, out, t, n, y.stride(0),
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
    if _wgrad_kernel in _TUNED:
        _TUNED[_wgrad_kernel][lambda meta: (triton.cdiv(k, meta["BKO"]) * triton.cdiv(n, meta["BN"]), e)](
            *args, **flags)
        return dw, dw2
    cfg = wgrad_config(k, n)
    grid = (triton.cdiv(k, cfg["BKO"]) * triton.cdiv(n, cfg["BN"]), e)
    _wgrad_kernel[grid](*args, **flags, BKO=cfg["BKO"], BN=cfg["BN"], BR=cfg["BR"], num_warps=cfg["num_warps"],
                        num_stages=cfg["num_stages"])
    return dw, dw2


def moe_swiglu_forward(x, plan: RoutePlan, w1, w3, w2, save_for_backward: bool = True):
    """out [T, d] (x's dtype), and what the backward reads: ``a = x W1``, ``b = x W3`` (None unless
    ``save_for_backward``) and ``hg = gate * silu(a) * b`` ([A, h] each, x's dtype). ``x`` [T, d];
    ``w1, w3`` [E, d, h]; ``w2`` [E, h, d]; all contiguous."""
    t, d = x.shape
    e, _, h = w1.shape
    rows = plan.tok.numel()
    hid = torch.empty(rows, h, device=x.device, dtype=x.dtype)
    a, b = (torch.empty_like(hid) for _ in range(2)) if save_for_backward else (hid, hid)
    _launch_rows(_up_gate_kernel, (x, plan.tok, plan.gate, w1, w3, a, b, hid,
                                   (e, d, h, x.stride(0), w1.stride(0), hid.stride(0))), h, d, plan,
                 STORE_AB=save_for_backward)
    out = torch.empty(t, d, device=x.device, dtype=x.dtype)
    _token_rows(_down_scatter_kernel, (hid, w2, plan.tok, (e, h, d, hid.stride(0), w2.stride(0))), out,
                d, h, plan)
    return (out, a, b, hid) if save_for_backward else (out, None, None, hid)


def down_bwd(dout, plan: RoutePlan, w2, a, b, variant: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """da, db ([A, h], a's dtype) and dgate ([A] fp32, assignment order) from dOut [T, d]. ``variant``
    "fused": one kernel, the SwiGLU backward in the GEMM's epilogue; "split": the GEMM stores dH and
    _swiglu_bwd_kernel finishes (dH written and read once more: 2 x A x h elements)."""
    if variant not in DOWN_BWD_VARIANTS:
        raise ValueError(f"down_bwd variant {variant!r}: use one of {DOWN_BWD_VARIANTS}")
    e, h, d = w2.shape
    rows = plan.tok.numel()
    da, db = torch.empty_like(a), torch.empty_like(b)
    dgate = torch.zeros(rows, device=a.device, dtype=torch.float32)
    fused = variant == "fused"
    _launch_rows(_down_bwd_kernel, (dout, plan.tok, plan.gate, plan.src, w2, a, b, da, db, dgate,
                                    (e, d, h, dout.stride(0), w2.stride(0), a.stride(0))), h, d, plan,
                 FUSE_SWIGLU=fused)
    if not fused:
        br, bh = (16, 16) if INTERPRET else (32, 128)
        _swiglu_bwd_kernel[(triton.cdiv(rows, br),)](da, a, b, plan.gate, plan.src, da, db, dgate, rows, h,
                                                     a.stride(0), BR=br, BH=bh, num_warps=4)
    return da, db, dgate


DOWN_BWD_VARIANTS = ("fused", "split")
# Which down_bwd variant is faster depends on the shape and the GPU (the fused epilogue holds the fp32
# accumulator, a, b and the SwiGLU terms at once; split pays 2 x A x h more bytes): timed once per shape,
# like triton.autotune, on the first backward. Tests set FORCE_DOWN_BWD to check each variant.
_DOWN_BWD_CHOICE: dict[tuple, str] = {}
FORCE_DOWN_BWD: str | None = None


def down_bwd_variant(dout, plan: RoutePlan, w2, a, b) -> str:
    """The variant down_bwd runs for this shape: FORCE_DOWN_BWD, else the faster one (timed on the first
    call per shape with triton.testing.do_bench, a fraction of a second once per shape; "fused" in the interpreter)."""
    if FORCE_DOWN_BWD is not None:
        return FORCE_DOWN_BWD
    if INTERPRET:
        return "fused"
    key = (tuple(w2.shape), plan.block_m, a.dtype, dout.dtype, a.device)
    if key not in _DOWN_BWD_CHOICE:
        times = {v: triton.testing.do_bench(lambda v=v: down_bwd(dout, plan, w2, a, b, v), warmup=10, rep=40)
                 for v in DOWN_BWD_VARIANTS}
        _DOWN_BWD_CHOICE[key] = min(times, key=times.get)
    return _DOWN_BWD_CHOICE[key]


def moe_swiglu_backward(dout, x, plan: RoutePlan, w1, w3, w2, a, b, hid, dx_dtype=None, dw_dtype=None):
    """dx [T, d] (``dx_dtype``), dgate [A] fp32 in assignment order (``t*k + j``), dw1, dw3, dw2
    (``dw_dtype``); both default to the inputs' dtype. The kernels accumulate in fp32 and write these
    dtypes directly: fp32 master weights get fp32 gradients without a bf16 round trip and cast kernel.
    ``a``, ``b``, ``hid``: the forward's (moe_swiglu_forward with save_for_backward)."""
    t, d = x.shape
    e, _, h = w1.shape
    dout = dout.contiguous()
    da, db, dgate = down_bwd(dout, plan, w2, a, b, down_bwd_variant(dout, plan, w2, a, b))
    dx = torch.empty(t, d, device=x.device, dtype=dx_dtype or x.dtype)
    _token_rows(_dx_kernel, (da, db, w1, w3, plan.tok, (e, h, d, da.stride(0), w1.stride(0))), dx, d, h, plan,
                buffer_dtype=x.dtype)
    dw1, dw3 = _wgrad(x, da, db, plan, d, h, e, 1, 0, dw_dtype or w1.dtype)
    dw2, _ = _wgrad(hid, dout, None, plan, h, d, e, 0, 1, dw_dtype or w2.dtype)
    return dx, dgate, dw1, dw3, dw2


# --------------------------------------------------------------------------------------------------
# autograd
# --------------------------------------------------------------------------------------------------
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
