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
from tpsbench.distributed.run import execute_dist
from tpsbench.distributed.train import check_layout, exit_now, init_from_env
from tpsbench.errors import InputError
from tpsbench.impls import is_bracket
from tpsbench.options import DistError, DistLayout
from tpsbench.report.run import dist_lines, run_notes, run_table
from tpsbench.report.tables import show
from tpsbench.results import finite
from tpsbench.results.io import check_output
from tpsbench.results.typed import to_dict

# Ranks other than 0 wait for torchrun to stop them once rank 0 has said what was wrong and exited: a fixed short
# wait raced rank 0's start on a busy machine. The bound only ends a wait that nothing will end (no torchrun).
RANK0_GRACE_S = 600.0


def cmd_run_dist(args: argparse.Namespace, layout: DistLayout, cfg: RunConfig, console: Console) -> int:
    try:
        return _run_dist(args, layout, cfg, console)
    except InputError:
        # every rank reaches the same verdict on bad input; rank 0 says it (several ranks' lines interleaved in
        # the shared stderr here). The others wait for torchrun to stop them once rank 0 has exited: exiting at
        # once could get rank 0 stopped before its line is out
        if os.environ.get("RANK", "0") != "0":
            time.sleep(RANK0_GRACE_S)
            exit_now(2)
        raise


def _run_dist(args: argparse.Namespace, layout: DistLayout, cfg: RunConfig, console: Console) -> int:
    if cfg.mode.layers and not layout.mode.uses_ep:
        raise DistError(f"--dist {layout.mode} --mode {cfg.mode}: the micro benchmarks time expert parallelism's "
                        "exchanges; use --dist ep or fsdp+ep, or --mode e2e")
    if not cfg.stack.runs_distributed:
        raise DistError(f"--dist runs tpsbench's own training step; drop --stack {cfg.stack.name}")
    if cfg.compile_model:
        raise DistError("--dist with --compile is not supported yet; drop --compile")
    if args.impl is None and layout.mode.uses_ep:  # the default list's dense brackets have no experts
        cfg = replace(cfg, impls=[i for i in cfg.impls if not is_bracket(i)])
    check_layout(layout, cfg.model, cfg.impls)
    setup = init_from_env(layout, cfg.device, args.dist_backend)
    out = Path(args.out) if args.out else cfg.default_out()
    if setup.rank == 0:
        check_output(out, overwrite=args.overwrite)
        console.print(f"tpsbench run: {cfg.model.name} on {cfg.gpu_label} x{setup.world} ({setup.mode}, "
                      f"{setup.backend}) -> {out}", highlight=False)
    writer = execute_dist(cfg, setup, out, overwrite=args.overwrite)
    dist.destroy_process_group()
    if writer is None:  # ranks > 0 print nothing
        exit_now(0)
        return 0
    if args.json:
        print(json.dumps(finite(to_dict(writer.doc)), indent=1))
        exit_now(0)
    show(console, [run_table(writer.doc), *run_notes(writer.doc), *dist_lines(writer.doc), f"results: {out}"])
    exit_now(0)
    return 0  # not reached: exit_now ends the process
