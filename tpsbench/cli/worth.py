"""`tpsbench worth`: is training the MoE worth it? Hours and dollars to a target loss per model and GPU."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from tpsbench.analysis.losses import DEFAULT_METRIC, read_losses
from tpsbench.analysis.worth import fit_model, worth, worth_json
from tpsbench.analysis.worth_inputs import (
    DEFAULT_TOKENS_PER_STEP,
    assign_runs,
    model_curve,
    parse_map,
    predicted_throughput,
    read_throughput,
)
from tpsbench.cli.args import UsageError, add_json, parse_prices, positive_float, positive_int
from tpsbench.impls import cost_model_names
from tpsbench.models import USERS_MICROBATCH_TOKENS
from tpsbench.report.tables import show, to_markdown
from tpsbench.report.worth import worth_tables
from tpsbench.results import finite

if TYPE_CHECKING:
    from rich.console import Console

    from tpsbench.analysis.worth import ModelFit
    from tpsbench.report.tables import TableData
    from tpsbench.scaling.worth_law import LawTokens


def add_worth_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--losses", nargs="+", required=True, metavar="FILE",
                   help="loss curves: a W&B line-panel 'Export CSV' (columns '<run> - train/CE loss', '<run> - Step' "
                   "or 'Step'), or a long CSV with columns run, step, loss[, tokens][, petaflops]")
    p.add_argument("--target-loss", type=positive_float, required=True, help="the loss to reach")
    p.add_argument("--throughput", nargs="+", default=[], metavar="FILE",
                   help="measured tokens/s: results JSON of `tpsbench run` (training steps) or `explain`'s CSV")
    p.add_argument("--gpu", nargs="+", default=[], metavar="GPU",
                   help="predict tokens/s on these GPU profiles (floor and expected, labelled as predicted)")
    p.add_argument("--map", action="append", default=[], metavar="RUN=MODEL",
                   help="assign a run to a zoo model (repeatable, one pair per flag; several runs of one model are "
                   "joined by step), or a .toml file of RUN = \"MODEL\" lines; a run named like a zoo model maps "
                   "itself")
    p.add_argument("--tokens-per-step", type=positive_int, default=DEFAULT_TOKENS_PER_STEP,
                   help=f"tokens per optimizer step when the file has no tokens column (default "
                   f"{DEFAULT_TOKENS_PER_STEP:,})")
    p.add_argument("--price", action="append", default=[], metavar="GPU=USD_PER_HOUR",
                   help="GPU price per hour, for the cost columns (repeatable)")
    p.add_argument("--metric", default=DEFAULT_METRIC, help=f"the W&B loss column (default '{DEFAULT_METRIC}')")
    p.add_argument("--impl", default=None,
                   help="the MoE implementation whose tokens/s and exact FLOPs to use (default: each model's own "
                   "MoE type, capacity or dropless; measured: the fastest step of that type)")
    p.add_argument("--batch", type=positive_int, default=USERS_MICROBATCH_TOKENS,
                   help=f"tokens per microbatch of predicted tokens/s (default {USERS_MICROBATCH_TOKENS:,})")
    p.add_argument("-o", "--out", default=None, help="plot: loss against hours on each GPU and against PF-days "
                   "(.png, .svg or .pdf)")
    p.add_argument("--markdown", default=None, help="also write the tables and the summary as markdown to this file")
    p.add_argument("--law", default=None, help="a law file from `tpsbench scaling fit`: each model's tokens to the "
                   "target by the law beside its own curve's fit, and which answered")
    add_json(p)


def cmd_worth(args: argparse.Namespace, console: Console) -> int:
    if not args.throughput and not args.gpu:
        raise UsageError("give --throughput FILE (measured tokens/s) or --gpu GPU (predicted tokens/s), or both")
    if args.impl is not None and args.impl not in cost_model_names():
        raise UsageError(f"--impl '{args.impl}' is not one of {', '.join(cost_model_names())}")
    impl = args.impl  # None: each model's own MoE type (what its loss curve was trained with)
    prices = parse_prices(args.price)
    mapping = parse_map(args.map)
    runs = [r for path in args.losses for r in read_losses(path, metric=args.metric)]
    by_model, left_out = assign_runs(runs, mapping)
    if not by_model:
        raise UsageError(f"no run maps to a zoo model (runs: {', '.join(r.name for r in runs)}); pass --map RUN=MODEL")
    curves = [model_curve(m, segs, args.tokens_per_step) for m, segs in by_model.items()]
    fits = [fit_model(c, args.target_loss, impl) for c in curves]
    notes = [f"runs left out (no --map names them): {', '.join(left_out)}"] if left_out else []
    throughput = read_throughput(args.throughput, set(by_model), args.impl)
    if args.gpu:
        predicted, pred_notes = predicted_throughput([c.model for c in curves], args.gpu, impl, args.batch)
        throughput += predicted
        notes += pred_notes
    for f in fits:
        if f.fit is not None and f.fitted_tokens is None:
            notes.append(f"{f.name}: loss {args.target_loss:g} is at or below its fitted floor E = {f.fit.e:.3f}: "
                         "unreachable by the fit (no hours)")
    report = worth(fits, throughput, args.target_loss, prices=prices, left_out_runs=left_out, notes=notes)
    law_rows, law_tables = _with_law(args, fits)
    if args.json:
        doc = worth_json(report)
        if law_rows is not None:
            doc["law"] = [{"model": r.model, "fit_tokens": r.fit_tokens, "law_tokens": r.law_tokens,
                           "law_interval": r.law_interval, "answered_by": r.answered_by} for r in law_rows]
        print(json.dumps(finite(doc), indent=1))
    else:
        show(console, [*worth_tables(report), *law_tables, *report.summary_lines(),
                       *(f"note: {n}" for n in report.notes)])
    if args.markdown:
        text = "\n".join(to_markdown(t) for t in worth_tables(report))
        text += "\n" + "".join(f"- {line}\n" for line in report.summary_lines() + list(report.notes))
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(text, encoding="utf-8")
        if not args.json:
            show(console, [f"markdown: {args.markdown}"])
    if args.out:
        from tpsbench.report.plot_worth import plot_worth

        path = plot_worth(report, args.out)
        if not args.json:
            show(console, [f"plot: {path}"])
    return 0


def _with_law(args: argparse.Namespace, fits: list[ModelFit]) -> tuple[list[LawTokens] | None, list[TableData]]:
    """With --law: each model's tokens to the target by its own fit and by the law (and which answered)."""
    if args.law is None:
        return None, []
    from tpsbench.scaling.law_source import load_law
    from tpsbench.scaling.worth_law import law_table, law_tokens

    law = load_law(args.law)
    rows = law_tokens(fits, law, args.target_loss)
    return rows, [law_table(rows, law, args.target_loss)]
