"""The GEMM kernels of the fused MoE expert MLP (SwiGLU): gather -> grouped GEMM -> scatter, forward and
backward, and the elementwise kernels they hand rows to. Why each looks as it does, with the measurements
behind it: kernels/NOTES.md.

Rows are token-expert assignments sorted by expert (the routing plan: ``tok[r]`` is the token of row ``r``,
expert ``e`` owns rows ``offsets[e]:offsets[e+1]``; ``row_of[t*k + j]`` is the row of token t's j-th choice).
The row kernels read token rows of ``x`` through ``tok``, so the permuted copy of the tokens is never written.
Saved for backward: ``a = x W1``, ``b = x W3`` and ``hg = gate * silu(a) * b`` (``[A, h]`` each; a forward
without autograd writes only ``hg``), computed once, in the up-projection's epilogue, with the row's router
weight ``gate`` already applied.

Forward:  ``up_gate_kernel`` (a, b, hg) -> ``down_scatter_kernel`` (hg W2).
Backward: ``down_bwd_kernel`` (dH = dOut[tok] W2^T, with the SwiGLU backward and the router-weight gradient
in its epilogue, or, split, dH stored and ``swiglu_bwd_kernel`` doing the rest) -> ``dx_kernel``
(da W1^T + db W3^T) -> ``wgrad_kernel`` (per expert ``X^T dY`` for W1, W3 and W2).
Outputs several rows add into (out, dX): with top-1 the row kernels store straight into ``out[tok[r]]``; with
top-k > 1 they store each row's result in row order and ``gather_sum_kernel`` adds a token's k rows (fp32
sum), with no atomics. The fused down_bwd adds the router-weight gradient (one value per row, summed over
the H tiles) with atomics; the split one owns whole rows and stores it.

Every row-tile kernel starts with the same prologue (``_spare_tile``, ``_row_tile``). Imports only triton.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _spare_tile(tile_e_ptr, N, E, BN: tl.constexpr):
    """Whether this program's row tile is one of the grid's spare tiles (the grid is an upper bound on the
    tiles: the routing plan marks the spare ones with expert E). Checked first, so spare programs exit."""
    pid_m = tl.program_id(0) // tl.cdiv(N, BN)
    return tl.load(tile_e_ptr + pid_m) >= E


@triton.jit
def _row_tile(tile_e_ptr, tile_r_ptr, off_ptr, N, stride_we, BM: tl.constexpr, BN: tl.constexpr):
    """The prologue every row-tile GEMM shares: this program's (row tile, column tile) in a 1-D grid of row
    tiles x column tiles, column tiles fastest, so the column tiles of one row tile run together and its
    gathered operand rows come from L2 after the first read (kernels/NOTES.md: with row tiles fastest, each
    column tile was a pass over all rows from DRAM). Returns the offset of the tile's expert weights, the
    tile's rows (and which of them belong to its expert) and its columns (and which are < N)."""
    pid = tl.program_id(0)
    n_tiles = tl.cdiv(N, BN)
    pid_m, pid_n = pid // n_tiles, pid % n_tiles
    e = tl.load(tile_e_ptr + pid_m)
    row0 = tl.load(tile_r_ptr + pid_m)
    row_end = tl.load(off_ptr + e + 1)
    rows = row0 + tl.arange(0, BM)
    cols = pid_n * BN + tl.arange(0, BN)
    return e.to(tl.int64) * stride_we, rows, rows < row_end, cols, cols < N


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
def up_gate_kernel(
    x_ptr, tok_ptr, gate_ptr, w1_ptr, w3_ptr, a_ptr, b_ptr, h_ptr, tile_e_ptr, tile_r_ptr, off_ptr,
    E, D, H, stride_x, stride_we, stride_a,
    STORE_AB: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
):
    """a = x[tok] W1, b = x[tok] W3 (saved for the backward when STORE_AB) and the gated SwiGLU output
    hg = gate * silu(a) * b, from the fp32 accumulators, once per element: the down GEMM and the W2
    gradient read hg as a plain operand, with no per-row scaling left to do in their K loops."""
    if _spare_tile(tile_e_ptr, H, E, BN):
        return
    w_base, rows, rmask, cols, cmask = _row_tile(tile_e_ptr, tile_r_ptr, off_ptr, H, stride_we, BM, BN)
    tok = tl.load(tok_ptr + rows, mask=rmask, other=0).to(tl.int64)
    gate = tl.load(gate_ptr + rows, mask=rmask, other=0.0)
    acc1 = tl.zeros((BM, BN), dtype=tl.float32)
    acc3 = tl.zeros((BM, BN), dtype=tl.float32)
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
def down_scatter_kernel(
    h_ptr, w2_ptr, tok_ptr, out_ptr, tile_e_ptr, tile_r_ptr, off_ptr,
    E, H, D, stride_h, stride_we, stride_out,
    SCATTER: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
):
    """hg W2[e] per row (hg = gate * silu(a) * b, as stored by up_gate_kernel)."""
    if _spare_tile(tile_e_ptr, D, E, BN):
        return
    w_base, rows, rmask, cols, cmask = _row_tile(tile_e_ptr, tile_r_ptr, off_ptr, D, stride_we, BM, BN)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k0 in range(0, H, BK):
        ks = k0 + tl.arange(0, BK)
        kmask = ks < H
        hh = tl.load(h_ptr + rows[:, None].to(tl.int64) * stride_h + ks[None, :],
                     mask=rmask[:, None] & kmask[None, :], other=0.0)
        w = tl.load(w2_ptr + w_base + ks[:, None] * D + cols[None, :], mask=kmask[:, None] & cmask[None, :], other=0.0)
        acc = tl.dot(hh, w, acc)
    _store_rows(out_ptr, acc, tok_ptr, rows, rmask, cols, cmask, stride_out, SCATTER)


@triton.jit
def down_bwd_kernel(
    dout_ptr, tok_ptr, gate_ptr, src_ptr, w2_ptr, a_ptr, b_ptr, da_ptr, db_ptr, dgate_ptr, tile_e_ptr, tile_r_ptr,
    off_ptr,
    E, D, H, stride_dout, stride_we, stride_a,
    FUSE_SWIGLU: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
):
    """dH = dOut[tok] W2^T (before the router weight). FUSE_SWIGLU: the SwiGLU backward and the
    router-weight gradient in the epilogue (da, db, dgate). Else dH is stored into ``da`` for
    swiglu_bwd_kernel: a plain GEMM epilogue, at the price of writing and reading dH once more."""
    if _spare_tile(tile_e_ptr, H, E, BN):
        return
    w_base, rows, rmask, cols, cmask = _row_tile(tile_e_ptr, tile_r_ptr, off_ptr, H, stride_we, BM, BN)  # cols: H
    tok = tl.load(tok_ptr + rows, mask=rmask, other=0).to(tl.int64)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
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
def swiglu_bwd_kernel(dh_ptr, a_ptr, b_ptr, gate_ptr, src_ptr, da_ptr, db_ptr, dgate_ptr, A, H, stride,
                       BR: tl.constexpr, BH: tl.constexpr):
    """The SwiGLU backward of rows whose dH (before the router weight) down_bwd_kernel stored: da, db and
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
def dx_kernel(
    da_ptr, db_ptr, w1_ptr, w3_ptr, tok_ptr, dx_ptr, tile_e_ptr, tile_r_ptr, off_ptr,
    E, H, D, stride_a, stride_we, stride_dx,
    SCATTER: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
):
    if _spare_tile(tile_e_ptr, D, E, BN):
        return
    w_base, rows, rmask, cols, cmask = _row_tile(tile_e_ptr, tile_r_ptr, off_ptr, D, stride_we, BM, BN)  # cols: D
    acc = tl.zeros((BM, BN), dtype=tl.float32)
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
def gather_sum_kernel(y_ptr, row_of_ptr, out_ptr, T, D, stride_y, stride_out,
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
def wgrad_kernel(
    x_ptr, tok_ptr, y_ptr, y2_ptr, dw_ptr, dw2_ptr, off_ptr,
    K, N, stride_x, stride_y, stride_dwe,
    X_MODE: tl.constexpr, Y_MODE: tl.constexpr, DUAL: tl.constexpr,
    BKO: tl.constexpr, BN: tl.constexpr, BR: tl.constexpr,
):
    """dW[e] = X_e^T Y_e over the rows of expert e (and dW2[e] = X_e^T Y2_e when DUAL, sharing the X
    loads: dW1 and dW3 both read the gathered tokens). X_MODE 0: X = x rows (the gated SwiGLU output hg);
    X_MODE 1: X = x[tok] (gathered). Y_MODE 0: Y = y rows; Y_MODE 1: Y = y[tok] (gathered).
    X is loaded already transposed ([BKO, BR]) so the dot needs no register transpose. Both operands go
    from memory to the dot unchanged (the router weight is already in hg: scaling dOut rows in registers
    before the dot was slow, kernels/NOTES.md)."""
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
