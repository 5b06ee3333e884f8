"""`tpsbench list`: the model zoo, the GPU profiles and the MoE implementations."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from tpsbench.cli.args import add_json
from tpsbench.impls import BRACKETS, moe_impls
from tpsbench.models import all_models
from tpsbench.profiles import load_all_profiles
from tpsbench.report.registry import gpus_table, impls_table, models_table
from tpsbench.report.tables import show

if TYPE_CHECKING:
    from rich.console import Console


def add_list_args(ls: argparse.ArgumentParser) -> None:
    ls.add_argument("what", nargs="?", default="models", choices=["models", "gpus", "impls"])
    add_json(ls, "a table")


def cmd_list(args: argparse.Namespace, console: Console) -> int:
    if args.what == "models":
        models = list(all_models().values())
        if args.json:
            print(json.dumps([{"name": m.name, "olmo_name": m.olmo_name, "d_model": m.d_model,
                               "n_layers": m.n_layers, "n_heads": m.n_heads, "total_params": m.total_params,
                               "active_params": m.active_params, "origin": m.origin} for m in models], indent=2))
        else:
            show(console, [models_table(models)])
    elif args.what == "gpus":
        profiles = load_all_profiles()
        if args.json:
            print(json.dumps([p.describe() for p in profiles], indent=2))
        else:
            show(console, [gpus_table(profiles)])
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
        show(console, [impls_table()])
    return 0
