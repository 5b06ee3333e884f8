"""Command line: parse, call a function that returns data, render. Bad input exits 2 with one line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import NoReturn

from rich.console import Console

from tpsbench import __version__
from tpsbench.costmodel import MOE_IMPLS, POLICIES, Workload, get_policy
from tpsbench.models import MODELS, UnknownNameError, get_model
from tpsbench.profiles import ProfileError, load_all_profiles, load_profile
from tpsbench.report import gpus_table, impls_table, models_table, print_prediction, summary_table
from tpsbench.roofline import CeilingError, CeilingSource, predict

DEFAULT_MICROBATCH = 32768  # the users' microbatch (tokens), ../shared/DESIGN.md
DEFAULT_GLOBAL_BATCH = 1_048_576  # the users' global batch (tokens)


CEILING_CHOICES = [c.value for c in CeilingSource]


class UsageError(ValueError):
    """Bad command-line input: printed as one line, exit code 2."""


def parse_batches(text: str, seq_len: int) -> list[int]:
    """``"4096,16384,32768"`` -> ints; each a positive integer multiple of ``seq_len``."""
    out = []
    for item in text.split(","):
        item = item.strip()
        try:
            value = int(item)
        except ValueError:
            raise UsageError(
                f"--batch '{item}' is not a whole number of tokens; give e.g. --batch {seq_len * 16}"
            ) from None
        if value <= 0:
            raise UsageError(f"--batch {value} must be positive; give e.g. --batch {seq_len * 16}")
        if value % seq_len:
            lower = max(seq_len, value // seq_len * seq_len)
            upper = (value // seq_len + 1) * seq_len
            closest = sorted({lower, upper})
            raise UsageError(
                f"--batch {value} is not a multiple of --seq {seq_len}; closest valid choices: "
                + ", ".join(str(c) for c in closest)
            )
        out.append(value)
    return out


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be positive")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value} must be positive")
    return value


class _OneLineErrorParser(argparse.ArgumentParser):
    """argparse prints the usage block before an error; tpsbench prints one line, exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineErrorParser(
        prog="tpsbench",
        description="Throughput of dense and MoE transformer training on GPUs: cost model, roofline, "
        "measurements.",
    )
    parser.add_argument("--version", action="version", version=f"tpsbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    pr = sub.add_parser("predict", help="roofline prediction of a training step; no GPU needed")
    pr.add_argument("--gpu", required=True, help="GPU profile name (see `tpsbench list gpus`) or a .toml file")
    pr.add_argument("--model", required=True, help="zoo model or OLMo-core name (see `tpsbench list models`)")
    pr.add_argument("--batch", default=str(DEFAULT_MICROBATCH),
                    help=f"tokens per microbatch, comma-separated (default {DEFAULT_MICROBATCH})")
    pr.add_argument("--seq", type=_positive_int, default=None, help="sequence length (default: the model's)")
    pr.add_argument("--global-batch", type=_positive_int, default=None,
                    help=f"tokens per optimizer step, a multiple of each microbatch (default {DEFAULT_GLOBAL_BATCH:,} "
                    "rounded down to a multiple of the microbatch)")
    pr.add_argument("--impl", default="dropless", help=f"MoE implementation: {', '.join(MOE_IMPLS)}")
    pr.add_argument("--capacity-factor", type=_positive_float, default=None,
                    help="capacity factor for --impl capacity (default: the model's, else 1.2)")
    pr.add_argument("--dtype", default="amp_bf16", help=f"dtype policy: {', '.join(POLICIES)}")
    pr.add_argument("--ceilings", default="spec", help=f"roofline ceilings: {', '.join(CEILING_CHOICES)}")
    pr.add_argument("--summary", action="store_true", help="totals only, no per-op table")
    pr.add_argument("--json", action="store_true", help="print JSON instead of tables")

    ls = sub.add_parser("list", help="list models, GPU profiles or MoE implementations")
    ls.add_argument("what", nargs="?", default="models", choices=["models", "gpus", "impls"])
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def cmd_predict(args: argparse.Namespace, console: Console) -> int:
    model = get_model(args.model)
    profile = load_profile(args.gpu)
    policy = get_policy(args.dtype)
    if args.ceilings not in CEILING_CHOICES:
        raise UsageError(f"--ceilings '{args.ceilings}': choose one of {', '.join(CEILING_CHOICES)}")
    if args.impl not in MOE_IMPLS:
        raise UnknownNameError(f"unknown MoE implementation '{args.impl}': choose one of {', '.join(MOE_IMPLS)}")
    seq = args.seq or model.seq_len
    batches = parse_batches(args.batch, seq)
    preds = []
    for tokens in batches:
        if args.global_batch is not None:
            if args.global_batch % tokens:
                raise UsageError(
                    f"--global-batch {args.global_batch} is not a multiple of the microbatch {tokens}; "
                    f"closest valid choices: {max(tokens, args.global_batch // tokens * tokens)}, "
                    f"{(args.global_batch // tokens + 1) * tokens}"
                )
            global_batch = args.global_batch
        else:
            global_batch = max(tokens, DEFAULT_GLOBAL_BATCH // tokens * tokens)
        work = Workload(model=model, tokens=tokens, seq_len=seq, impl=args.impl,
                        capacity_factor=args.capacity_factor, policy=policy)
        preds.append(predict(work, profile, ceilings=args.ceilings, global_batch_tokens=global_batch))
    if args.json:
        doc = {
            "tool": "tpsbench", "version": __version__, "command": "predict",
            "profile": profile.describe(),
            "model": {"name": model.name, "olmo_name": model.olmo_name, "total_params": model.total_params,
                      "active_params": model.active_params},
            "dtype_policy": {"name": policy.name, "description": policy.description},
            "predictions": [p.to_dict() for p in preds],
        }
        print(json.dumps(doc, indent=2))
        return 0
    for p in preds:
        print_prediction(console, p, ops=not args.summary)
    if len(preds) > 1:
        console.print(summary_table(preds))
    return 0


def cmd_list(args: argparse.Namespace, console: Console) -> int:
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
    else:
        if args.json:
            print(json.dumps(MOE_IMPLS, indent=2))
        else:
            console.print(impls_table())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    console = Console(width=max(Console().width, 120))
    try:
        if args.command == "predict":
            return cmd_predict(args, console)
        return cmd_list(args, console)
    except (UsageError, UnknownNameError, ProfileError, CeilingError) as exc:
        print(f"tpsbench {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
