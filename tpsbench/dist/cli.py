"""`tpsbench run --dist`: the command's distributed path (checks before any process-group work, rank 0's output)."""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import torch.distributed as dist
from rich.console import Console

from tpsbench.bench.config import RunConfig
from tpsbench.dist.run import execute_dist
from tpsbench.dist.train import DistError, check_layout, exit_now, init_from_env
from tpsbench.errors import InputError
from tpsbench.impls import is_bracket
from tpsbench.report import run_notes, run_table
from tpsbench.results import finite
from tpsbench.results.io import check_output
from tpsbench.results.typed import to_dict


# Ranks other than 0 wait for torchrun to stop them once rank 0 has said what was wrong and exited: a fixed short
# wait raced rank 0's start on a busy machine. The bound only ends a wait that nothing will end (no torchrun).
RANK0_GRACE_S = 600.0


def cmd_run_dist(args: argparse.Namespace, cfg: RunConfig, console: Console) -> int:
    try:
        return _run_dist(args, cfg, console)
    except InputError:
        # every rank reaches the same verdict on bad input; rank 0 says it (several ranks' lines interleaved in
        # the shared stderr here). The others wait for torchrun to stop them once rank 0 has exited: exiting at
        # once could get rank 0 stopped before its line is out
        if os.environ.get("RANK", "0") != "0":
            time.sleep(RANK0_GRACE_S)
            exit_now(2)
        raise


def _run_dist(args: argparse.Namespace, cfg: RunConfig, console: Console) -> int:
    if args.mode in ("micro", "all") and "ep" not in args.dist.split("+"):
        raise DistError(f"--dist {args.dist} --mode {args.mode}: the micro benchmarks time expert parallelism's "
                        "exchanges; use --dist ep or fsdp+ep, or --mode e2e")
    if args.stack != "tpsbench":
        raise DistError("--dist runs tpsbench's own training step; drop --stack olmo-core")
    if args.compile:
        raise DistError("--dist with --compile is not supported yet; drop --compile")
    if args.impl is None and "ep" in args.dist.split("+"):  # the default list's dense brackets have no experts
        cfg = replace(cfg, impls=[i for i in cfg.impls if not is_bracket(i)])
    world = int(os.environ.get("WORLD_SIZE", "0") or 0)
    check_layout(args.dist, cfg.model, cfg.impls, world or 1, args.ep_size, args.shard_size, args.fsdp_param_dtype)
    setup = init_from_env(args.dist, cfg.device, args.dist_backend, args.ep_size, args.shard_size,
                          args.fsdp_param_dtype)
    out = Path(args.out) if args.out else cfg.default_out()
    if setup.rank == 0:
        check_output(out, overwrite=args.overwrite)
        console.print(f"tpsbench run: {cfg.model.name} on {cfg.gpu_label} x{setup.world} ({setup.mode}, "
                      f"{setup.backend}) -> {out}", highlight=False)
    writer = execute_dist(cfg, setup, out, overwrite=args.overwrite)
    dist.destroy_process_group()
    if writer is None:  # ranks > 0 print nothing
        exit_now(0)
    if args.json:
        print(json.dumps(finite(to_dict(writer.doc)), indent=1))
        exit_now(0)
    console.print(run_table(writer.doc))
    for line in run_notes(writer.doc):
        console.print(line, highlight=False, soft_wrap=True)
    for p in writer.doc.points:
        if p.raw is not None and p.raw.dist is not None and p.raw.dist.bytes_sent_per_rank is not None:
            d = p.raw.dist
            sent = sum(d.bytes_sent_per_rank) / len(d.bytes_sent_per_rank)
            console.print(f"{p.label}: {sent / 1e6:,.2f} MB sent per rank, {sent / d.max_median_s / 1e9:.3f} GB/s per "
                          f"rank, rows received max/mean {d.received_max_over_mean:.2f}, slowest rank "
                          f"{d.max_median_s * 1e3:.2f} ms (straggler {d.straggler:.2f})", highlight=False)
        elif p.raw is not None and p.raw.dist is not None:
            d = p.raw.dist
            console.print(f"{p.label}: {d.tokens_per_s_per_gpu:,.0f} tokens/s per GPU, {d.tokens_per_s_total:,.0f} in "
                          f"total; slowest rank {d.max_median_s * 1e3:.1f} ms, mean {d.mean_median_s * 1e3:.1f} ms "
                          f"(straggler {d.straggler:.2f})", highlight=False)
    console.print(f"results: {out}", highlight=False)
    exit_now(0)
    return 0  # not reached: exit_now ends the process
