"""Micro benchmarks of expert parallelism's communication, under `run --dist ep|fsdp+ep --mode micro`:
the dispatch (rows to the ranks of their experts, with the counts exchange and its host sync before it) and the
combine (the expert outputs back), forward and backward, timed apart, across tokens per rank and the three
routing modes, like DeepEP's and torchtitan's dispatch benchmarks.

The backward of an exchange is the reverse exchange of a gradient of the same shape and dtype (tpsbench.distributed.ep's
``_AllToAll.backward``), so it is timed as that exchange. Every rank times the same fixed repetitions; a point's
time is the slowest rank's median. Bytes are what each rank sends (its rows leaving for other ranks); GB/s per
rank is the mean sent over the slowest rank's time; the imbalance is the max / mean of the rows the ranks
receive (a skewed routing sends most rows to the ranks of the popular experts).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.distributed as dist

from tpsbench.bench.config import RunConfig
from tpsbench.bench.timing import time_fn
from tpsbench.distributed.ep import Exchange, ExpertParallelMoE, exchange_counts
from tpsbench.distributed.train import DistSetup, expert_groups
from tpsbench.options import RoutingMode

PHASES = (("dispatch", "fwd"), ("combine", "fwd"), ("dispatch", "bwd"), ("combine", "bwd"))


@dataclass(frozen=True, slots=True)
class CommPoint:
    op: str  # dispatch | combine
    phase: str  # fwd | bwd
    routing: RoutingMode
    tokens: int  # per rank
    samples_s: list[float]  # this rank's
    bytes_sent: float  # this rank's
    rows_received: int  # this rank's


def _dtypes(cfg: RunConfig) -> tuple[torch.dtype, torch.dtype]:
    """The dispatched rows' dtype (the residual stream's) and the combined outputs' (the matmuls')."""
    width = {2: torch.bfloat16, 4: torch.float32}
    return width[cfg.policy.residual_bytes], width[cfg.policy.compute_bytes]


def comm_points(cfg: RunConfig, setup: DistSetup) -> list[CommPoint]:
    """Every (routing, tokens, exchange) point of this rank, timed."""
    spec = cfg.model
    assert spec.moe is not None
    device = torch.device(cfg.device)
    timing = replace(cfg.micro_timing, min_time_s=0.0, max_reps=cfg.micro_timing.min_reps, flush_l2=False)
    residual, compute = _dtypes(cfg)
    group, _ = expert_groups(setup)  # this rank's expert-parallel group (None: all ranks)
    out: list[CommPoint] = []
    for routing in RoutingMode:
        for tokens in cfg.batches:
            torch.manual_seed(cfg.seed)  # the same router on every rank
            layer = ExpertParallelMoE(spec.d_model, spec.moe, group=group, device=device)
            layer.dense.router.set_routing(routing, cfg.skew, cfg.seed)
            g = torch.Generator(device=device).manual_seed(cfg.seed + 1 + setup.rank)
            x = torch.randn(tokens, spec.d_model, generator=g, device=device)
            with torch.no_grad():
                route = layer.dense.router(x)
                plan = layer.plan(route)
            ex = plan.exchange
            sent_rows = sum(ex.send) - ex.send[layer.rank]  # rows that leave this rank
            runs = _exchanges(layer, ex, x[plan.token].to(residual), residual, compute, g)
            for op, phase in PHASES:
                fn, dtype = runs[(op, phase)]
                dist.barrier()
                t = time_fn(fn, device=device, config=timing)
                sent = sent_rows if (op, phase) in (("dispatch", "fwd"), ("combine", "bwd")) else (
                    ex.received - ex.recv[layer.rank])
                width = torch.empty((), dtype=dtype).element_size()
                out.append(CommPoint(op, phase, routing, tokens, t.samples_s, float(sent * spec.d_model * width),
                                     ex.received))
    return out


def _exchanges(layer: ExpertParallelMoE, ex: Exchange, rows: torch.Tensor, residual: torch.dtype,
               compute: torch.dtype, g: torch.Generator) -> dict[tuple[str, str], tuple[Callable[[], object],
                                                                                        torch.dtype]]:
    """Each exchange of one layer's routing, ready to time, with the dtype of the rows it moves: the dispatch (the
    counts and their host copy first), the combine, and their backward (the reverse exchanges)."""
    d, device = rows.shape[1], rows.device
    ranks = torch.arange(layer.group_size, device=device)
    dest = torch.repeat_interleave(ranks, torch.tensor(ex.send, device=device))
    back = torch.randn(ex.received, d, generator=g, device=device).to(compute)
    grad_rows = torch.randn(ex.received, d, generator=g, device=device).to(residual)

    def dispatch_fwd() -> None:
        exchange_counts(dest, layer.group_size, layer.group)
        layer.exchange(rows, ex.recv, ex.send)

    return {
        ("dispatch", "fwd"): (dispatch_fwd, residual),
        ("combine", "fwd"): (lambda: layer.exchange(back, ex.send, ex.recv), compute),
        ("dispatch", "bwd"): (lambda: layer.exchange(grad_rows, ex.send, ex.recv), residual),
        ("combine", "bwd"): (lambda: layer.exchange(rows.to(compute), ex.recv, ex.send), compute),
    }


@dataclass(frozen=True, slots=True)
class GatheredComm:
    point: CommPoint  # the slowest rank's
    per_rank_median_s: list[float]
    bytes_sent_per_rank: list[float]
    rows_received_per_rank: list[int]

    @property
    def imbalance(self) -> float:
        mean = statistics.fmean(self.rows_received_per_rank)
        return max(self.rows_received_per_rank) / mean if mean else float("nan")


def gather(points: list[CommPoint], setup: DistSetup) -> list[GatheredComm] | None:
    """Every rank's points on rank 0 (None on the others)."""
    everyone: list[list[CommPoint]] = [[] for _ in range(setup.world)]
    dist.all_gather_object(everyone, points)
    if setup.rank != 0:
        return None
    out = []
    for i in range(len(points)):
        ranks = [everyone[r][i] for r in range(setup.world)]
        medians = [statistics.median(p.samples_s) for p in ranks]
        slowest = ranks[medians.index(max(medians))]
        out.append(GatheredComm(slowest, medians, [p.bytes_sent for p in ranks], [p.rows_received for p in ranks]))
    return out
