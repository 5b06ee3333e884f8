"""`tpsbench predict` and `tpsbench list`: the roofline and the registries, no hardware needed."""

from __future__ import annotations

import argparse
import json

from rich.console import Console

from tpsbench import __version__
from tpsbench.bench.calibrate import calibration_for
from tpsbench.bench.config import parse_batches
from tpsbench.cli.args import UsageError, add_json, positive_float, positive_int
from tpsbench.costmodel import POLICIES, Workload, get_policy
from tpsbench.estimate.step import expected_for
from tpsbench.impls import cost_model_names
from tpsbench.models import MODELS, USERS_GLOBAL_BATCH_TOKENS, USERS_MICROBATCH_TOKENS, default_global_batch, get_model
from tpsbench.profiles import load_all_profiles, load_profile
from tpsbench.report import gpus_table, impls_table, models_table, print_prediction, summary_table
from tpsbench.report_estimate import step_estimate_lines
from tpsbench.roofline import CeilingSource, predict
from tpsbench.stacks import STACKS, resolve
from tpsbench.stacks.olmo_core import cannot_express

CEILING_CHOICES = [c.value for c in CeilingSource]


def add_predict_args(pr: argparse.ArgumentParser) -> None:
    pr.add_argument("--gpu", required=True, help="GPU profile name (see `tpsbench list gpus`) or a .toml file")
    pr.add_argument("--model", required=True, help="zoo model or OLMo-core name (see `tpsbench list models`)")
    pr.add_argument("--batch", default=str(USERS_MICROBATCH_TOKENS),
                    help=f"tokens per microbatch, comma-separated (default {USERS_MICROBATCH_TOKENS})")
    pr.add_argument("--seq", type=positive_int, default=None, help="sequence length (default: the model's)")
    pr.add_argument("--global-batch", type=positive_int, default=None,
                    help=f"tokens per optimizer step, a multiple of each microbatch (default "
                    f"{USERS_GLOBAL_BATCH_TOKENS:,} rounded down to a multiple of the microbatch)")
    pr.add_argument("--impl", default="dropless", help=f"MoE implementation: {', '.join(cost_model_names())}")
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
    pr.add_argument("--ac", default="none", choices=["none", "full"], help="activation checkpointing: full runs "
                    "every block's forward again in the backward and saves only its input (torchtitan's "
                    "activation_checkpoint.mode full; `run --ac full` measures it)")
    pr.add_argument("--summary", action="store_true", help="totals only, no per-op table")
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
    dtype, impl = resolve(args.stack, args.dtype, args.impl, default_dtype="amp_bf16")
    if args.stack == "olmo-core" and (reason := cannot_express(model)) is not None:
        raise UsageError(f"OLMo-core cannot express {model.name}: {reason}; predict it with --stack tpsbench")
    policy = get_policy(dtype)
    if args.ceilings not in CEILING_CHOICES:
        raise UsageError(f"--ceilings '{args.ceilings}': choose one of {', '.join(CEILING_CHOICES)}")
    calibration = calibration_for(args.ceilings, args.calibration, profile)
    seq = args.seq or model.seq_len
    preds = []
    for tokens in parse_batches(args.batch, seq):
        if args.global_batch is not None and args.global_batch % tokens:
            closest = sorted({max(tokens, args.global_batch // tokens * tokens),
                              (args.global_batch // tokens + 1) * tokens})
            raise UsageError(f"--global-batch {args.global_batch} is not a multiple of the microbatch {tokens}; "
                             f"closest valid choices: {', '.join(map(str, closest))}")
        global_batch = args.global_batch or default_global_batch(tokens)
        work = Workload(model=model, tokens=tokens, seq_len=seq, impl=impl,
                        capacity_factor=args.capacity_factor, policy=policy, recompute=args.ac)
        preds.append(predict(work, profile, ceilings=args.ceilings, global_batch_tokens=global_batch,
                             calibration=calibration))
    estimates = [expected_for(p.workload, profile, compiled=args.compile) for p in preds]
    if (args.gpus is None) != (args.dist is None):
        raise UsageError("--gpus and --dist go together: e.g. --gpus 8 --dist fsdp+ep")
    for flag, value in (("--ep-size", args.ep_size), ("--shard-size", args.shard_size),
                        ("--fsdp-param-dtype", args.fsdp_param_dtype)):
        if value is not None and args.dist is None:
            raise UsageError(f"{flag} {value} describes a distributed step: add --gpus N --dist ...")
    if args.dist is not None:
        return _predict_dist(args, preds, profile, console)
    if args.json:
        doc = {
            "tool": "tpsbench", "version": __version__, "command": "predict",
            "profile": profile.describe(),
            "model": {"name": model.name, "olmo_name": model.olmo_name, "total_params": model.total_params,
                      "active_params": model.active_params},
            "dtype_policy": {"name": policy.name, "description": policy.description}, "stack": args.stack,
            "predictions": [{**p.to_dict(), "expected": e.to_dict()} for p, e in zip(preds, estimates, strict=True)],
        }
        print(json.dumps(doc, indent=2))
        return 0
    for p, e in zip(preds, estimates, strict=True):
        if args.estimate == "floor":
            print_prediction(console, p, ops=not args.summary)
            for line in step_estimate_lines(e):
                console.print(line, highlight=False, soft_wrap=True)
        else:
            for line in step_estimate_lines(e):
                console.print(line, highlight=False, soft_wrap=True)
            print_prediction(console, p, ops=not args.summary)
    if len(preds) > 1:
        console.print(summary_table(preds))
    return 0


def _predict_dist(args: argparse.Namespace, preds: list, profile, console: Console) -> int:
    from dataclasses import replace

    from tpsbench.costmodel.comm import fsdp_mixed_precision
    from tpsbench.dist.predict import dist_lines, predict_dist
    from tpsbench.dist.train import check_layout_flags

    workloads = [p.workload for p in preds]
    check_layout_flags(args.dist, args.gpus, None, None, args.fsdp_param_dtype, ranks="GPUs")
    if args.fsdp_param_dtype is not None:
        policy = workloads[0].policy
        if args.fsdp_param_dtype == "fp32" and policy.recast_params_in_backward:
            raise UsageError(f"--dtype {policy.name} gathers bf16 parameters (FSDP mixed precision); drop "
                             "--fsdp-param-dtype fp32 or choose --dtype amp_bf16")
        if args.fsdp_param_dtype == "bf16":
            workloads = [replace(w, policy=fsdp_mixed_precision(w.policy)) for w in workloads]
    dists = [predict_dist(w, profile, args.dist, args.gpus, gpus_per_node=args.gpus_per_node,
                          network_gbs=args.network_gbs, compiled=args.compile, ep_size=args.ep_size,
                          shard_size=args.shard_size) for w in workloads]
    if args.json:
        print(json.dumps({"tool": "tpsbench", "version": __version__, "command": "predict", "profile": profile.name,
                          "dist": [_dist_dict(d) for d in dists]}, indent=2))
        return 0
    for d in dists:
        for line in dist_lines(d):
            console.print(line, highlight=False, soft_wrap=True)
    return 0


def _dist_dict(d) -> dict[str, object]:
    return {
        "mode": d.mode, "gpus": d.world, "tokens_per_gpu": d.tokens_per_rank,
        "link": {"name": d.link.name, "gbs": d.link.gbs, "source": d.link.source},
        "ep_size": d.ep_size, "shard_size": d.shard_size, "dtype_policy": d.policy,
        "comm": [{"name": c.op.name, "phase": c.op.phase.value, "collective": c.op.collective, "count": c.op.count,
                  "bytes_per_gpu": c.op.bytes_per_rank, "seconds": c.seconds, "host_syncs": c.op.host_syncs,
                  "group": c.op.group, "link": c.link.name}
                 for c in d.comm],
        "comm_s": d.comm_s, "compute_floor_s": d.compute_floor_s, "compute_expected_s": d.compute_expected_s,
        "steps": {f"{basis}_overlap_{ov}": {"step_s": d.step_s(basis, ov), "tokens_per_s_per_gpu":
                                            d.tokens_per_s_per_gpu(basis, ov),
                                            "scaling_efficiency": d.scaling_efficiency(basis, ov)}
                  for basis in ("floor", "expected") for ov in ("none", "full")},
        "memory_per_gpu": {**d.memory.to_dict(), "usable_bytes": d.usable_bytes,
                           "fits": d.memory.fits(d.usable_bytes)},
        "recompute": d.recompute, "compiled": d.compiled,
        "measured": False,
    }


def add_list_args(ls: argparse.ArgumentParser) -> None:
    ls.add_argument("what", nargs="?", default="models", choices=["models", "gpus", "impls"])
    add_json(ls, "a table")


def cmd_list(args: argparse.Namespace, console: Console) -> int:
    from tpsbench.impls import BRACKETS, moe_impls

    if args.what == "models":
        models = list(MODELS.values())
        if args.json:
            print(json.dumps([{"name": m.name, "olmo_name": m.olmo_name, "d_model": m.d_model,
                               "n_layers": m.n_layers, "n_heads": m.n_heads, "total_params": m.total_params,
                               "active_params": m.active_params} for m in models], indent=2))
        else:
            console.print(models_table(models))
    elif args.what == "gpus":
        profiles = load_all_profiles()
        if args.json:
            print(json.dumps([p.describe() for p in profiles], indent=2))
        else:
            console.print(gpus_table(profiles))
    elif args.json:
        print(json.dumps({
            "implementations": [{"name": i.name, "aliases": list(i.aliases), "baseline": i.baseline,
                                 "needs_gpu": i.needs_gpu, "counting": i.counting.value,
                                 "pads_to_capacity": i.pads_to_capacity, "launches_per_expert": i.launches_per_expert,
                                 "casts_expert_grads": i.casts_expert_grads, "staged": i.staged,
                                 "description": i.description} for i in moe_impls()],
            "brackets": [{"name": b.name, "all_experts": b.all_experts, "description": b.description}
                         for b in BRACKETS.values()],
        }, indent=2))
    else:
        console.print(impls_table())
    return 0
