"""How an MoE training step's per-expert row counts change from step to step (``raw.row_counts``).

Why: the per-expert ``loop`` runs one GEMM per expert, sized by that expert's rows, so every row count not seen
before is a GEMM shape that cuBLAS's heuristics and the caching allocator meet for the first time. A learned
router's counts move with every optimizer step; uniform routing repeats them. On the CPU, moe_1b_a390m's real
forward at 16,384 tokens (fresh weights) gave its 384 experts (12 layers x 32) 367 distinct counts from 81 to
6,319 rows: nearly every expert GEMM a shape of its own. The references to the count tensors are kept during
the steps (no host sync); they are read once, after the timing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tpsbench.results.schema import RowCounts


def row_count_churn(per_step: Sequence[Sequence[torch.Tensor]]) -> RowCounts | None:
    """Distinct and new per-expert row counts of each step (``per_step``: each step's [E] counts per MoE layer);
    None without MoE layers."""
    steps = [[int(v) for t in layers for v in t.tolist()] for layers in per_step if layers]
    if not steps:
        return None
    seen: set[int] = set()
    distinct, new = [], []
    for counts in steps:
        here = set(counts)
        distinct.append(len(here))
        new.append(len(here - seen))
        seen |= here
    return RowCounts(steps=len(steps), expert_gemms_per_step=len(steps[0]), distinct_per_step=distinct,
                     new_per_step=new)


__all__ = ["row_count_churn"]
