"""`tpsbench predict`: the roofline floor and the expected time of a training step on a GPU profile, on one GPU or
several; no hardware needed."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from tpsbench import __version__
from tpsbench.cli.args import MODEL_HELP, UsageError, add_json, positive_float, positive_int
from tpsbench.costmodel import POLICIES, Workload, get_policy
from tpsbench.estimate.step import expected_for
from tpsbench.estimate.way_out import ways_out
from tpsbench.impls import cost_model_names
from tpsbench.models import USERS_GLOBAL_BATCH_TOKENS, USERS_MICROBATCH_TOKENS, default_global_batch, get_model
from tpsbench.options import DistLayout, Recompute, check_global_batch, check_impl_applies, choice, parse_batches
from tpsbench.profiles import GPUProfile, load_profile
from tpsbench.report.predict import prediction_view, summary_table
from tpsbench.report.tables import show
from tpsbench.results.calibration import calibration_for
from tpsbench.roofline import CeilingSource, Prediction, predict
from tpsbench.stacks import STACKS, get_stack

if TYPE_CHECKING:
    from rich.console import Console

    from tpsbench.estimate.step import StepEstimate

CEILING_CHOICES = [c.value for c in CeilingSource]


def add_predict_args(pr: argparse.ArgumentParser) -> None:
    pr.add_argument("--gpu", required=True, help="GPU profile name (see `tpsbench list gpus`) or a .toml file")
    pr.add_argument("--model", required=True, help=MODEL_HELP)
    pr.add_argument("--batch", default=str(USERS_MICROBATCH_TOKENS),
                    help=f"tokens per microbatch, comma-separated (default {USERS_MICROBATCH_TOKENS})")
    pr.add_argument("--seq", type=positive_int, default=None, help="sequence length (default: the model's)")
    pr.add_argument("--global-batch", type=positive_int, default=None,
                    help=f"tokens per optimizer step, a multiple of each microbatch (default "
                    f"{USERS_GLOBAL_BATCH_TOKENS:,} rounded down to a multiple of the microbatch)")
    pr.add_argument("--impl", default=None, help="MoE implementation(s), comma-separated: "
                    f"{', '.join(cost_model_names())} (default: what the model trained with, capacity or dropless)")
    pr.add_argument("--capacity-factor", type=positive_float, default=None,
                    help="capacity factor for --impl capacity (default: the model's, else 1.2)")
    pr.add_argument("--dtype", default=None, help=f"dtype policy: {', '.join(POLICIES)} (default amp_bf16; the "
                    "olmo-core stack always counts olmo_core)")
    pr.add_argument("--stack", default="tpsbench", help=f"whose step is counted: {', '.join(STACKS)} (default "
                    "tpsbench); olmo-core adds what OLMo-core executes: fp32 router, parameter casts in forward and "
                    "backward, the fp32 loss with its z-loss pass, gradient clipping")
    pr.add_argument("--ceilings", default="spec", help=f"roofline ceilings: {', '.join(CEILING_CHOICES)}")
    pr.add_argument("--calibration", default=None, help="calibration file for --ceilings calibrated (default: the "
                    "newest results/calibration/*-GPU.json)")
    pr.add_argument("--estimate", default="expected", choices=["floor", "expected"],
                    help="what the tables lead with: the roofline floor, or the expected time (floor / measured "
                    "efficiency + host and launch time, from the GPU's efficiency table); --json has both")
    pr.add_argument("--compile", action="store_true", help="expected time of a torch.compile'd step (the floor "
                    "is the same)")
    pr.add_argument("--ac", default="none", choices=[r.value for r in Recompute], help="activation checkpointing: "
                    "full runs every block's forward again in the backward and saves only its input (torchtitan's "
                    "activation_checkpoint.mode full; `run --ac full` measures it)")
    pr.add_argument("--summary", action="store_true", help="totals only, no per-op table")
    pr.add_argument("--vs", default=None, metavar="MODEL",
                    help="a second model: both expected steps per op group, and what their gap is made of")
    pr.add_argument("--gpus", type=positive_int, default=None, help="with --dist: the step of one of N GPUs, "
                    "with its communication (--batch is per GPU)")
    pr.add_argument("--dist", default=None, choices=["fsdp", "ep", "fsdp+ep"], help="with --gpus: the layout")
    pr.add_argument("--ep-size", type=positive_int, default=None, help="with --dist ep or fsdp+ep: GPUs per "
                    "expert-parallel group (consecutive; default all): each expert then has one replica per group")
    pr.add_argument("--shard-size", type=positive_int, default=None, help="with --dist fsdp or fsdp+ep: GPUs FSDP "
                    "shards over (consecutive; default all); the shards are replicated across the groups (hybrid "
                    "sharding, HSDP)")
    pr.add_argument("--fsdp-param-dtype", default=None, choices=["fp32", "bf16"], help="with --dist fsdp or "
                    "fsdp+ep: FSDP's unsharded parameters (bf16: mixed precision, bf16 gathers and residual stream, "
                    "as `run --dist --fsdp-param-dtype bf16`; default: the dtype policy's, bf16 under olmo_core)")
    pr.add_argument("--gpus-per-node", type=positive_int, default=8, help="GPUs sharing NVLink or PCIe (default 8)")
    pr.add_argument("--network-gbs", type=positive_float, default=None,
                    help="each GPU's scale-out bandwidth one way, GB/s (needed when --gpus spans nodes)")
    add_json(pr)


def cmd_predict(args: argparse.Namespace, console: Console) -> int:
    model = get_model(args.model)
    profile = load_profile(args.gpu)
    stack = get_stack(args.stack)
    check_impl_applies(model.name, model.is_moe, args.impl)
    names = [i.strip() for i in (args.impl or model.trained_impl).split(",") if i.strip()]
    if not names:
        raise UsageError(f"--impl '{args.impl}' names no implementation; e.g. --impl capacity,dropless")
    choices = [stack.prediction_choices(args.dtype, name, default_dtype="amp_bf16") for name in names]
    dtype, impls = choices[0][0], [impl for _, impl in choices]
    stack.check_model(model)
    policy = get_policy(dtype)
    ceilings = CeilingSource.parse(args.ceilings)
    calibration = calibration_for(ceilings, args.calibration, profile)
    seq = args.seq or model.seq_len
    batches = parse_batches(args.batch, seq)
    check_global_batch(args.global_batch, batches)
    if (args.gpus is None) != (args.dist is None):
        raise UsageError("--gpus and --dist go together: e.g. --gpus 8 --dist fsdp+ep")
    layout = DistLayout.from_flags(args.dist, args.gpus, ep_size=args.ep_size, shard_size=args.shard_size,
                                   param_dtype=args.fsdp_param_dtype, ranks="GPUs")
    if layout is not None and args.vs is not None:
        raise UsageError("--vs compares two models on one GPU: drop --gpus/--dist")
    if layout is not None and len(impls) > 1:
        raise UsageError("--gpus/--dist predicts one implementation at a time: give one --impl")
    preds = [predict(Workload(model=model, tokens=tokens, seq_len=seq, impl=impl, capacity_factor=args.capacity_factor,
                              policy=policy, recompute=choice(Recompute, args.ac, "--ac")),
                     profile, ceilings=ceilings, global_batch_tokens=args.global_batch or default_global_batch(tokens),
                     calibration=calibration)
             for impl in impls for tokens in batches]
    if layout is not None:
        return _predict_dist(args, layout, preds, profile, console)
    estimates = [expected_for(p.workload, profile, compiled=args.compile) for p in preds]
    global_steps = [expected_for(p.workload, profile, compiled=args.compile, accumulation=p.accumulation_steps)
                    for p in preds]
    if args.vs is not None:
        return _predict_vs(args, preds, estimates, profile, console)
    if args.json:
        doc = {
            "tool": "tpsbench", "version": __version__, "command": "predict",
            "profile": profile.describe(),
            "model": {"name": model.name, "olmo_name": model.olmo_name, "total_params": model.total_params,
                      "active_params": model.active_params},
            "dtype_policy": {"name": policy.name, "description": policy.description}, "stack": stack.name,
            "predictions": [{**p.to_dict(), "expected": e.to_dict()} for p, e in zip(preds, estimates, strict=True)],
        }
        print(json.dumps(doc, indent=2))
        return 0
    for p, e, g in zip(preds, estimates, global_steps, strict=True):
        ways = None if e.fits else ways_out(p.workload, profile, compiled=args.compile)
        show(console, prediction_view(p, e, g, ops=not args.summary, lead=args.estimate, ways=ways))
    if len(preds) > 1:
        show(console, [summary_table(preds, global_steps)])
    return 0


def _predict_vs(args: argparse.Namespace, preds: list[Prediction], estimates: list[StepEstimate],
                profile: GPUProfile, console: Console) -> int:
    """Model A (``--model``) against B (``--vs``) at each microbatch size: expected steps per op group."""
    from tpsbench.estimate.attribution import gap, step_by_group
    from tpsbench.report.gap import gap_lines, gap_table

    other = get_model(args.vs)
    check_impl_applies(other.name, other.is_moe, args.impl if other.is_moe else None)
    seq = args.seq or other.seq_len
    gaps = []
    for p, e in zip(preds, estimates, strict=True):
        w = p.workload
        if w.tokens % seq:
            raise UsageError(f"--batch {w.tokens} is not a whole number of {other.name}'s sequences of {seq}; give "
                             "--seq for both")
        impl = (args.impl or other.trained_impl) if other.is_moe else other.trained_impl
        wb = Workload(model=other, tokens=w.tokens, seq_len=seq, impl=impl, capacity_factor=args.capacity_factor,
                      policy=w.policy, recompute=w.recompute)
        eb = expected_for(wb, profile, compiled=args.compile)
        if e.expected is None or eb.expected is None:
            raise UsageError(f"--vs needs expected steps: {e.reason or eb.reason}")
        gaps.append(gap(step_by_group(w.model, e.expected), step_by_group(other, eb.expected)))
    if args.json:
        print(json.dumps({"tool": "tpsbench", "version": __version__, "command": "predict --vs",
                          "gpu": profile.name, "a": preds[0].workload.model.name, "b": other.name,
                          "gaps": [{"tokens": p.workload.tokens, "a_s": g.a.total_s, "b_s": g.b.total_s,
                                    "gap_s": g.gap_s, "ffn_layer_s": g.ffn_layer_s(), "other_s": g.other_s(),
                                    "groups": [{"group": str(r.group), "a_s": r.a_s, "b_s": r.b_s, "gap_s": r.gap_s}
                                               for r in g.rows]}
                                   for p, g in zip(preds, gaps, strict=True)]}, indent=2))
        return 0
    for p, g in zip(preds, gaps, strict=True):
        title = (f"{other.name} against {g.a.model} on {profile.name}, {p.workload.tokens:,} tokens/microbatch: "
                 "expected step per op group (optimizer time split by parameters)")
        show(console, [*gap_lines(g), gap_table(g, title)])
    return 0


def _predict_dist(args: argparse.Namespace, layout: DistLayout, preds: list[Prediction], profile: GPUProfile,
                  console: Console) -> int:
    from dataclasses import replace

    from tpsbench.costmodel.comm import fsdp_mixed_precision
    from tpsbench.estimate.distributed import predict_dist
    from tpsbench.report.distributed import dist_lines

    workloads = [p.workload for p in preds]
    if layout.param_dtype is not None:
        policy = workloads[0].policy
        if layout.param_dtype == "fp32" and policy.recast_params_in_backward:
            raise UsageError(f"--dtype {policy.name} gathers bf16 parameters (FSDP mixed precision); drop "
                             "--fsdp-param-dtype fp32 or choose --dtype amp_bf16")
        if layout.param_dtype == "bf16":
            workloads = [replace(w, policy=fsdp_mixed_precision(w.policy)) for w in workloads]
    dists = [predict_dist(w, profile, layout, gpus_per_node=args.gpus_per_node, network_gbs=args.network_gbs,
                          compiled=args.compile) for w in workloads]
    if args.json:
        print(json.dumps({"tool": "tpsbench", "version": __version__, "command": "predict", "profile": profile.name,
                          "dist": [d.to_dict() for d in dists]}, indent=2))
        return 0
    show(console, [line for d in dists for line in dist_lines(d)])
    return 0
