"""`torchrun --nproc-per-node N -m tpsbench run --dist fsdp|ep|fsdp+ep ...`: the training-step sweep on N ranks.

Every rank builds the same model (the same seed), trains on its own tokens and times its own steps with the same
fixed number of repetitions (an adaptive count could differ between ranks and leave one waiting in a collective
for ever). Rank 0 gathers the ranks' timings and writes the results file after each point: the step time is the
slowest rank's median (the collectives wait for it), reported next to the mean (stragglers), tokens/s per GPU and
in total. A rank that fails prints one line naming itself and exits; torchrun then stops the others, and rank 0
marks the file ``interrupted`` with every finished point in it. ``TPSBENCH_FAIL_RANK=R`` makes rank R fail before
its second point (the fault test).
"""

from __future__ import annotations

import os
import signal
import statistics
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as dist

from tpsbench import __version__
from tpsbench.bench import e2e
from tpsbench.bench.config import RunConfig
from tpsbench.bench.env import machine_info
from tpsbench.bench.measurement import Measurement
from tpsbench.bench.runner import plan, planned_point
from tpsbench.bench.stats import summarize
from tpsbench.distributed.comm_bench import GatheredComm, comm_points, gather
from tpsbench.distributed.train import DistSetup, dist_training
from tpsbench.options import PointKind
from tpsbench.points import point_label
from tpsbench.results import ResultsWriter
from tpsbench.results.points import point_key
from tpsbench.results.schema import ConfigRecord, Derived, DistTiming, Point, PointStatus, Raw, RunStatus

FAIL_RANK_ENV = "TPSBENCH_FAIL_RANK"


def _fixed_reps(cfg: RunConfig) -> e2e.TimingConfig:
    t = cfg.e2e_timing
    return replace(t, min_time_s=0.0, max_reps=t.min_reps)


def _timing(medians: list[float], setup: DistSetup, tokens: int, **comm: object) -> DistTiming:
    """The ranks' medians of one point: the slowest sets its time; ``tokens`` per rank; ``comm``: the
    communication micro points' fields."""
    step = max(medians)
    mean = statistics.fmean(medians)
    return DistTiming(mode=setup.mode, world_size=setup.world, backend=setup.backend, per_rank_median_s=medians,
                      max_median_s=step, mean_median_s=mean, straggler=step / mean, tokens_per_s_per_gpu=tokens / step,
                      tokens_per_s_total=setup.world * tokens / step, **comm)  # type: ignore[arg-type]


def _point(planned: Point, case: e2e.E2ECase, cfg: RunConfig, setup: DistSetup, measured: Measurement,
           samples: list[list[float]]) -> Point:
    spec = cfg.seq_spec
    timing = _timing([statistics.median(x) for x in samples], setup, case.global_tokens)
    slowest = samples[timing.per_rank_median_s.index(timing.max_median_s)]
    stats = summarize(slowest)
    opt = measured.raw.optimizer_stats
    assert opt is not None
    cap = spec.moe.capacity_factor if spec.moe else None
    derived, _ = e2e.e2e_metrics(spec, case, stats.median, opt.median, cfg.policy, cfg.profile, cap, cfg.ceilings,
                                 cfg.calibration)  # per GPU: one rank's tokens over the step time
    raw = replace(measured.raw, samples_s=slowest, dist=timing)
    return replace(planned, stats=stats, derived=derived, raw=raw)


def _on_sigterm(writer: ResultsWriter) -> Callable[[int, object], None]:
    def handler(_signum: int, _frame: object) -> None:
        writer.finish(RunStatus.INTERRUPTED)  # every finished point is in the file already
        print(f"tpsbench run: another rank failed; finished points are in {writer.path}", file=sys.stderr, flush=True)
        os._exit(143)
    return handler


def _peer_left(exc: Exception) -> bool:
    """A collective that failed because another rank is gone (gloo: "Connection closed by peer"; NCCL: a
    DistBackendError), not this rank's own failure."""
    text = str(exc)
    return isinstance(exc, getattr(dist, "DistError", ())) or any(
        s in text for s in ("Connection closed by peer", "remote worker", "Connection reset by peer"))


def _stop(exc: Exception, setup: DistSetup, where_label: str, writer: ResultsWriter | None) -> None:
    """End this rank: one line, the error's own when this rank failed, a consequence when a peer did; rank 0
    marks its file interrupted (every finished point is in it)."""
    if writer is not None:
        writer.finish(RunStatus.INTERRUPTED)
    if _peer_left(exc):
        where = f"; finished points are in {writer.path}" if writer is not None else ""
        print(f"tpsbench run: rank {setup.rank} stopped at '{where_label}': another rank left the run{where}",
              file=sys.stderr, flush=True)
    else:
        print(f"tpsbench run: error: rank {setup.rank} failed at '{where_label}': {type(exc).__name__}: {exc}",
              file=sys.stderr, flush=True)
    os._exit(1)


def _comm_point(g: GatheredComm, setup: DistSetup, cfg: RunConfig, record: ConfigRecord) -> Point:
    """A communication micro point (tpsbench/distributed/comm_bench.py) as rank 0 writes it."""
    p = g.point
    sent = statistics.fmean(g.bytes_sent_per_rank)
    stats = summarize(p.samples_s)
    timing = _timing(g.per_rank_median_s, setup, p.tokens, bytes_sent_per_rank=g.bytes_sent_per_rank,
                     rows_received_per_rank=g.rows_received_per_rank, received_max_over_mean=g.imbalance)
    raw = Raw(samples_s=p.samples_s, warmup=cfg.micro_timing.warmup, l2_flushed=False,
              timer="cuda_event" if cfg.device == "cuda" else "perf_counter", dist=timing)
    derived = Derived(tokens_per_s=p.tokens / stats.median, bytes=sent, achieved_gbs=sent / stats.median / 1e9)
    point = Point(kind=PointKind.MICRO, layer=f"ep.{p.op}", impl=None, tokens=p.tokens, mode=p.phase, label="",
                  routing=p.routing, status=PointStatus.OK, stats=stats, derived=derived, raw=raw)
    return replace(point, label=point_label(point_key(record, point)))


def _comm(cfg: RunConfig, setup: DistSetup, writer: ResultsWriter | None, record: ConfigRecord) -> None:
    try:
        mine = comm_points(cfg, setup)
    except Exception as exc:  # one line naming the rank, as for a training step
        _stop(exc, setup, "the communication micro points", writer)
        return
    gathered = gather(mine, setup)
    if writer is not None and gathered is not None:
        for g in gathered:
            writer.add(_comm_point(g, setup, cfg, record))
    dist.barrier()


def execute_dist(cfg: RunConfig, setup: DistSetup, out: Path, *, overwrite: bool = False,
                 on_point: Callable[[int, int, Point], None] | None = None) -> ResultsWriter | None:
    """Measure every training step of ``cfg`` on this rank; rank 0 writes ``out`` and returns its writer."""
    spec = cfg.seq_spec
    device = torch.device(cfg.device)
    record = replace(cfg.describe(), dist=setup.mode, world_size=setup.world, ep_size=setup.ep_size,
                     shard_size=setup.shard_size, fsdp_param_dtype=setup.param_dtype)
    writer = None
    if setup.rank == 0:
        writer = ResultsWriter(out, config=record, machine=machine_info(cfg.device, cfg.profile),
                               tool_version=__version__, overwrite=overwrite)
        signal.signal(signal.SIGTERM, _on_sigterm(writer))
    if cfg.mode.layers and setup.uses_ep:
        _comm(cfg, setup, writer, record)
    cases = [c for c in plan(cfg) if isinstance(c, e2e.E2ECase)]
    for i, case in enumerate(cases):
        planned = planned_point(case, cfg, record)
        try:
            if i == 1 and os.environ.get(FAIL_RANK_ENV) == str(setup.rank):
                raise RuntimeError(f"failure injected by {FAIL_RANK_ENV}={setup.rank}")
            train = dist_training(spec, case.step, setup, device=device, policy=cfg.policy, routing=cfg.routing,
                                  skew=cfg.skew, seed=cfg.seed)
            measured = e2e.run_e2e(spec, case, device=device, policy=cfg.policy, routing=cfg.routing, skew=cfg.skew,
                                   timing=_fixed_reps(cfg), stack=cfg.stack, seed=cfg.seed, measure_idle=False,
                                   train=train)
        except Exception as exc:  # one line naming the rank; torchrun stops the other ranks
            _stop(exc, setup, planned.label, writer)
        samples: list[list[float]] = [[] for _ in range(setup.world)]
        dist.all_gather_object(samples, list(measured.raw.samples_s))
        if writer is not None:
            point = _point(planned, case, cfg, setup, measured, samples)
            writer.add(point)
            if on_point is not None:
                on_point(i + 1, len(cases), point)
        dist.barrier()  # the point is on disk before any rank goes on (and might fail)
    if writer is not None:
        writer.finish(RunStatus.COMPLETE)
    dist.barrier()
    return writer
