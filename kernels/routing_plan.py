"""The routing plan of the Triton MoE kernels: the token-expert assignments sorted by expert (stable) and the
row tiles of the row kernels, in one launch per step, saved for the backward.

File order (Liger-Kernel style): the ``@triton.jit`` kernel, its launcher. Imports only torch and triton.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from .interpret import INTERPRET


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
    """BM of the row kernels from the expected rows per expert (known on the host: no sync): a 128-row tile
    half empty wastes half the tensor-core work, so 64 up to 96 rows per expert. The interpreter: 16, the
    smallest tile tl.dot accepts."""
    if INTERPRET:
        return 16
    return 64 if rows / max(experts, 1) <= 96 else 128


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
