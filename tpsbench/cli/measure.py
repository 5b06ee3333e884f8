"""`tpsbench run` and `tpsbench calibrate`: the commands that measure this machine (torch is imported when one
of them runs, not before)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from tpsbench.bench.config import LAYER_CHOICES, RunConfig
from tpsbench.bench.env import DeviceError, resolve_gpu
from tpsbench.bench.protocol import TimingConfig
from tpsbench.cli.args import MODEL_HELP, add_json, positive_float, positive_int
from tpsbench.cli.predict import CEILING_CHOICES
from tpsbench.counters.sampler import DEFAULT_INTERVAL_S
from tpsbench.impls import run_choices
from tpsbench.models import USERS_MICROBATCH_TOKENS
from tpsbench.options import DEFAULT_SKEW, DistLayout, Recompute, RoutingMode, RunMode
from tpsbench.report.calibration import calibration_table
from tpsbench.report.run import run_notes, run_table
from tpsbench.report.tables import show
from tpsbench.results import atomic_write_json, finite, to_dict
from tpsbench.results.calibration import default_calibration_path
from tpsbench.results.io import check_output

if TYPE_CHECKING:
    from rich.console import Console

    from tpsbench.results.schema import Point


def use_expandable_segments() -> None:
    """One process runs workloads of very different sizes; without expandable segments the caching allocator
    fragments and a later point can run out of memory an earlier one left reserved. A user's own setting wins."""
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")


def add_run_args(rn: argparse.ArgumentParser) -> None:
    rn.add_argument("--gpu", default="auto", help="GPU profile of the present GPU, or auto (default); with "
                    "--device cpu, a profile only for predictions")
    rn.add_argument("--model", required=True, help=MODEL_HELP)
    rn.add_argument("--device", default=None, choices=["cuda", "cpu"], help="default: cuda if present")
    rn.add_argument("--batch", default=None, help="tokens per microbatch, comma-separated "
                    f"(default {USERS_MICROBATCH_TOKENS} on a GPU, 4 sequences on the CPU)")
    rn.add_argument("--seq", type=positive_int, default=None, help="sequence length (default: the model's)")
    rn.add_argument("--impl", default=None, help="comma-separated MoE implementations and brackets "
                    f"(default: all: {', '.join(run_choices())}; triton only on a GPU)")
    rn.add_argument("--mode", default=None, choices=[m.value for m in RunMode], help="default all (e2e with --dist)")
    rn.add_argument("--dist", default=None, choices=["fsdp", "ep", "fsdp+ep"],
                    help="training steps on the ranks of torchrun: FSDP2, expert parallelism, or both (torchrun "
                    "--nproc-per-node N -m tpsbench run --dist ...); rank 0 writes the results")
    rn.add_argument("--ep-size", type=positive_int, default=None, help="with --dist ep or fsdp+ep: ranks per "
                    "expert-parallel group (consecutive; default all); each expert then has one replica per group")
    rn.add_argument("--shard-size", type=positive_int, default=None, help="with --dist fsdp or fsdp+ep: ranks FSDP "
                    "shards over (consecutive; default all), the shards replicated across the groups (hybrid sharding)")
    rn.add_argument("--fsdp-param-dtype", default=None, choices=["fp32", "bf16"], help="with --dist fsdp or "
                    "fsdp+ep: FSDP's unsharded parameters; bf16 is FSDP2's mixed precision (bf16 gathers and compute, "
                    "gradients reduced in fp32), as OLMo-core and torchtitan train (default fp32)")
    rn.add_argument("--dist-backend", default=None, choices=["gloo", "nccl"],
                    help="torch.distributed backend (default nccl on cuda, gloo on the CPU)")
    rn.add_argument("--stack", default="tpsbench", choices=["tpsbench", "olmo-core"],
                    help="whose modules and training step run (olmo-core: the users' OLMo-core, the .[olmo] extra)")
    rn.add_argument("--routing", default="learned", choices=[r.value for r in RoutingMode])
    rn.add_argument("--skew", type=positive_float, default=DEFAULT_SKEW, help="Zipf exponent for --routing skewed")
    rn.add_argument("--dtype", default=None, help="dtype policy (default: amp_bf16 on a GPU, fp32 on the CPU)")
    rn.add_argument("--compile", action="store_true", help="torch.compile the model in e2e points")
    rn.add_argument("--ac", default="none", choices=[r.value for r in Recompute], help="e2e: activation "
                    "checkpointing; full "
                    "recomputes every block's forward in the backward and keeps only its input (default none)")
    rn.add_argument("--force", action="store_true", help="e2e: try training steps the memory model predicts do not "
                    "fit the GPU (default: record them as skipped, with the prediction)")
    rn.add_argument("--trace", default=None, metavar="DIR", help="write the PyTorch profiler's Chrome trace of one "
                    "repetition of each point to DIR (open in ui.perfetto.dev); the point's record names the file")
    rn.add_argument("--global-batch", type=positive_int, default=None,
                    help="e2e: tokens per optimizer step via gradient accumulation (default: one microbatch)")
    rn.add_argument("--no-stages", action="store_true", help="skip the per-stage MoE timings")
    rn.add_argument("--layers", default=None, help="micro: only these layers, comma-separated "
                    f"(from {', '.join(LAYER_CHOICES)}; default all)")
    add_timing_args(rn)
    rn.add_argument("--ceilings", default="spec", help=f"ceilings of the predictions: {', '.join(CEILING_CHOICES)}")
    rn.add_argument("--calibration", default=None, help="calibration file for --ceilings calibrated")
    rn.add_argument("--no-counters", action="store_true", help="do not sample NVML/GPM counters")
    rn.add_argument("--no-gpu-time", action="store_true",
                    help="do not profile extra calls for GPU busy/idle time (the overhead-bound evidence)")
    rn.add_argument("--counter-interval", type=positive_float, default=DEFAULT_INTERVAL_S,
                    help=f"counter sampling interval in seconds (default {DEFAULT_INTERVAL_S})")
    rn.add_argument("--counter-window", type=positive_float, default=TimingConfig().counter_window_s,
                    help="seconds of back-to-back repetitions per point read by the counters, after the timed "
                         f"ones (default {TimingConfig().counter_window_s})")
    rn.add_argument("--out", default=None, help="results file (default results/<time>-<gpu>-<model>.json); an "
                    "existing file is kept unless --overwrite")
    rn.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    add_json(rn, "tables (the results document)")


def add_timing_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reps", type=positive_int, default=None, help="minimum timed repetitions per point")
    p.add_argument("--min-time", type=positive_float, default=None, help="minimum measured seconds per point")


def run_config(args: argparse.Namespace) -> RunConfig:
    import torch

    return RunConfig.from_options(
        model=args.model, device=args.device, cuda_available=torch.cuda.is_available(), gpu=args.gpu,
        batch=args.batch, seq=args.seq, impl=args.impl,
        mode=args.mode or ("e2e" if args.dist else "all"), routing=args.routing, skew=args.skew,
        dtype=args.dtype, compile_model=args.compile, global_batch=args.global_batch, stages=not args.no_stages,
        layers=args.layers, reps=args.reps, min_time=args.min_time, ceilings=args.ceilings,
        calibration=args.calibration, counters=not args.no_counters, counter_interval_s=args.counter_interval,
        counter_window_s=args.counter_window, gpu_time=not args.no_gpu_time, stack=args.stack, force=args.force,
        trace_dir=args.trace, recompute=args.ac)


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    use_expandable_segments()
    world = int(os.environ.get("WORLD_SIZE", "") or 1)  # torchrun's ranks
    layout = DistLayout.from_flags(args.dist, world, ep_size=args.ep_size, shard_size=args.shard_size,
                                   param_dtype=args.fsdp_param_dtype)
    if layout is not None:
        from tpsbench.cli.run_dist import cmd_run_dist

        return cmd_run_dist(args, layout, run_config(args), console)
    from rich.console import Console as StatusConsole
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from tpsbench.bench.runner import execute, plan

    cfg = run_config(args)
    out = Path(args.out) if args.out else cfg.default_out()
    check_output(out, overwrite=args.overwrite)  # before anything runs
    total = len(plan(cfg))
    status_console = StatusConsole(stderr=True) if args.json else console
    status_console.print(f"tpsbench run: {cfg.model.name} on {cfg.gpu_label}, {total} points -> {out}",
                         highlight=False)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=status_console, transient=False)
    with progress:
        task = progress.add_task("starting", total=total)

        def on_point(done: int, _total: int, point: Point) -> None:
            progress.update(task, completed=done, description=f"{point.label}: {point.status}")

        try:
            writer = execute(cfg, out, on_point, overwrite=args.overwrite)
        except KeyboardInterrupt:
            status_console.print(f"interrupted: finished points are in {out}", highlight=False)
            return 130
    if args.json:
        print(json.dumps(finite(to_dict(writer.doc)), indent=1))
        return 0
    show(console, [run_table(writer.doc), *run_notes(writer.doc), f"results: {out}"])
    return 0


def add_calibrate_args(cb: argparse.ArgumentParser) -> None:
    cb.add_argument("--gpu", default="auto", help="profile of the present GPU, or auto (default)")
    cb.add_argument("--quick", action="store_true", help="two matmul shapes instead of five")
    cb.add_argument("--counter-interval", type=positive_float, default=DEFAULT_INTERVAL_S)
    cb.add_argument("--out", default=None, help="default results/calibration/<time>-<gpu>.json")
    add_json(cb, "a table (the calibration document)")


def cmd_calibrate(args: argparse.Namespace, console: Console) -> int:
    import torch

    from tpsbench.bench.calibrate import run_calibration

    if not torch.cuda.is_available():
        raise DeviceError("calibrate measures a GPU and none is present; for datasheet ceilings use "
                          "`tpsbench predict --ceilings spec`, for a profile's cited measurements --ceilings measured")
    profile = resolve_gpu(args.gpu, "cuda")
    assert profile is not None
    out = Path(args.out) if args.out else default_calibration_path(Path("results"), profile.name)
    doc = run_calibration(profile, quick=args.quick, interval_s=args.counter_interval,
                          log=lambda msg: console.print(msg, highlight=False) if not args.json else None)
    atomic_write_json(out, doc)
    if args.json:
        print(json.dumps(finite(to_dict(doc)), indent=1))
    else:
        show(console, [calibration_table(doc, profile), f"calibration: {out}"])
    return 0
