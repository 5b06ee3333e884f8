"""`tpsbench plan`: which candidate, on which GPU, reaches a target loss soonest (or the lowest loss within hours or
a budget), from a scaling law and the expected-time model."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import TYPE_CHECKING

from tpsbench import __version__
from tpsbench.cli.args import UsageError, parse_prices, positive_float, positive_int

if TYPE_CHECKING:

    from rich.console import Console

    from tpsbench.analysis.worth_inputs import ModelCurve
    from tpsbench.scaling.plan import Law, Throughput


def add_plan_args(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--law", help="a law file written by `tpsbench scaling fit`")
    src.add_argument("--published", help="a published law: besiroglu2024, hoffmann2022 (dense), ludziejewski2025 "
                     "(dense and MoE) or krajewski2024 (MoE, by granularity)")
    p.add_argument("--candidates", nargs="+", required=True, metavar="MODEL",
                   help="models to compare: names, files, configs or variants (BASE:key=value)")
    p.add_argument("--gpu", nargs="+", required=True, metavar="GPU", help="GPU profiles")
    goal = p.add_mutually_exclusive_group(required=True)
    goal.add_argument("--target-loss", type=positive_float, help="hours to reach this loss")
    goal.add_argument("--hours", type=positive_float, help="the loss reached within these hours")
    goal.add_argument("--budget", type=positive_float, help="the loss reached within this many dollars (--price)")
    p.add_argument("--price", action="append", default=[], metavar="GPU=USD_PER_HOUR", help="one GPU-hour's price")
    p.add_argument("--gpus", type=positive_int, default=1,
                   help="for a candidate no single GPU holds: FSDP over this many (the multi-GPU prediction; "
                   "hours on all of them, cost of all)")
    p.add_argument("--throughput", nargs="+", default=[], metavar="FILE",
                   help="measured tokens/s (results JSON of `tpsbench run`, or explain's CSV): used instead of the "
                   "expected model's for a candidate measured on that GPU")
    p.add_argument("-o", "--out", default=None, help="also plot loss against hours per GPU (.png, .svg or .pdf)")
    p.add_argument("--losses", nargs="+", default=[], metavar="FILE",
                   help="loss curves of trained runs: without --law or --published, the law is fitted to them "
                   "(as `scaling fit` would); candidates among them are overlaid on the plot")
    p.add_argument("--map", action="append", default=[], metavar="RUN=MODEL", help="assign a run to a model")
    p.add_argument("--form", default=None, help="the form fitted to --losses: chinchilla, joint_moe or granularity "
                   "(default: joint_moe when a mapped model is an MoE, else chinchilla)")
    p.add_argument("--skip-tokens", type=positive_float, default=None,
                   help="leave out each run's points up to this many tokens when fitting (default: through its "
                   "logged learning-rate warm-up, else its first 10%%)")
    p.add_argument("--resamples", type=positive_int, default=200, help="bootstrap resamples of a fit (default 200)")
    p.add_argument("--metric", default="train/CE loss", help="the W&B metric (default train/CE loss)")
    p.add_argument("--tokens-per-step", type=positive_int, default=None,
                   help="for loss files without a tokens column")
    p.add_argument("--markdown", default=None, help="also write the tables and answers as markdown to this file")
    p.add_argument("--json", action="store_true")


def cmd_plan(args: argparse.Namespace, console: Console) -> int:

    from tpsbench.models import get_model
    from tpsbench.profiles import load_profile
    from tpsbench.report.format import NA
    from tpsbench.report.tables import TableData, show
    from tpsbench.scaling.law_source import load_law, published_law
    from tpsbench.scaling.plan import Goal, answer, plan_row, ranked

    fit_lines: list[str] = []
    if args.law is not None:
        law = load_law(args.law)
    elif args.published is not None:
        law = published_law(args.published)
    elif args.losses:
        law, fit_lines = _law_from_losses(args)
    else:
        raise UsageError("plan needs a law: --law FILE, --published NAME, or --losses FILE... --map RUN=MODEL to fit "
                         "one")
    prices = parse_prices(args.price)
    goal = Goal.TARGET if args.target_loss else Goal.HOURS if args.hours else Goal.BUDGET
    amount = args.target_loss or args.hours or args.budget
    profiles = [load_profile(g) for g in args.gpu]
    if goal is Goal.BUDGET and (missing := [p.name for p in profiles if p.name not in prices]):
        raise UsageError(f"--budget needs a price for every GPU: add --price {missing[0]}=USD_PER_HOUR")
    models = [get_model(m) for m in args.candidates]
    measured = _measured_throughput(args.throughput, {m.name for m in models})
    rows = [plan_row(law, m, p, goal, amount, prices.get(p.name), measured.get((m.name, p.name)), args.gpus)
            for p in profiles for m in models]
    answers = [answer(rows, goal, amount, p.name) for p in profiles]
    if args.json:
        print(json.dumps({"tool": "tpsbench", "version": __version__, "command": "plan", "law": law.source,
                          "law_values": law.values,
                          "goal": str(goal), "amount": amount, "answers": answers,
                          "rows": [_row_dict(r) for r in ranked(rows, goal)]}, indent=2))
        return 0
    pf_days = f"PF-days ({law.flop_convention})"
    notes: list[str] = []
    tables = []
    for p in profiles:
        goal_text = (f"hours to loss {amount:g}" if goal is Goal.TARGET else
                     f"loss within {amount:g} h" if goal is Goal.HOURS else f"loss within ${amount:g}")
        t = TableData(f"{p.name}: {goal_text} (tokens/s expected at the largest microbatch that fits, or measured "
                      "where a note says so; [90%])",
                      ["#", "model", "N", "GPUs", "tokens/s", "tokens", "hours", "loss", "cost $", pf_days, "notes"],
                      left={"model", "notes"})
        for i, r in enumerate(ranked([r for r in rows if r.gpu == p.name], goal), 1):
            marks = ",".join(str(_note(notes, f)) for f in ([r.unavailable] if r.unavailable else list(r.flags)))
            if r.unavailable is not None:
                t.add("-", r.model, _si(r.n), NA, NA, NA, NA, NA, NA, NA, marks)
                continue
            assert r.throughput is not None and r.tokens is not None and r.hours is not None and r.loss is not None
            t.add(str(i), r.model, _si(r.n), str(r.throughput.gpus), f"{r.throughput.tokens_per_s:,.0f}",
                  _iv(r.tokens, r.tokens_interval, _si),
                  _iv(r.hours, r.hours_interval, lambda x: f"{x:.3g}"),
                  _iv(r.loss, r.loss_interval, lambda x: f"{x:.4f}"), NA if r.cost is None else f"{r.cost:,.0f}",
                  f"{r.pf_days:.3g}", marks)
        tables.append(t)
    footnotes = [f"({i}) {n}" for i, n in enumerate(notes, 1)]
    show(console, [f"law: {law.source}", *fit_lines, *tables, *footnotes])
    show(console, answers)
    if args.markdown:
        from pathlib import Path

        from tpsbench.report.tables import to_markdown

        text = "\n\n".join([f"law: {law.source}", *(["\n".join(fit_lines)] if fit_lines else []),
                             *(to_markdown(t) for t in tables), "\n".join(footnotes),
                             "\n".join(f"- {a}" for a in answers)])
        Path(args.markdown).write_text(text + "\n", encoding="utf-8")
        show(console, [f"markdown: {args.markdown}"])
    if args.out:
        from tpsbench.report.plot_plan import plot_plan

        written = plot_plan(rows, law, goal, amount, args.out, _measured(args, {m.name for m in models}))
        show(console, [f"plot: {written}"])
    return 0


def _law_from_losses(args: argparse.Namespace) -> tuple[Law, list[str]]:
    """The law fitted to --losses (as `scaling fit` fits it), and lines saying what was fitted and held and how
    well each left-out run was predicted."""
    from tpsbench.analysis.worth_inputs import parse_map
    from tpsbench.cli.scaling import fit_files
    from tpsbench.models import get_model
    from tpsbench.scaling.law_source import law_from_runs
    from tpsbench.scaling.validate import coverage

    form = args.form or ("joint_moe" if any(get_model(m).moe is not None for m in parse_map(args.map).values())
                         else "chinchilla")
    done = fit_files(args, form, args.resamples)
    fit = done.fit
    source = (f"{fit.form.name} fitted to {len(fit.runs)} runs of {', '.join(args.losses)} "
              f"({len(fit.samples)} bootstrap resamples)")
    held = [c.name for c in fit.held]
    lines = [f"fitted: {', '.join(c.name for c in fit.coefficients if c.held is None)}"
             + (f"; held at {fit.form.published[0].name}'s values: {', '.join(held)}" if held else "")]
    errors = ", ".join(f"{r.run} {100 * r.error:+.2f}%" for r in done.loro)
    cov = coverage(done.loro)
    lines.append(done.skipped)
    lines.append(f"left-out runs at their last tokens: {errors}"
                 + ("" if cov is None else f"; 90% intervals cover {100 * cov:.0f}%"))
    return law_from_runs(fit.form, fit.values(), fit.samples, source, done.records), lines


def _measured_throughput(paths: list[str], candidates: set[str]) -> dict[tuple[str, str], Throughput]:
    """(model, GPU) -> the measured training step's tokens/s (as `worth` picks it: the fastest step of an
    implementation computing what the model trained with)."""
    if not paths:
        return {}
    from tpsbench.analysis.worth_inputs import read_throughput
    from tpsbench.scaling.plan import Throughput

    return {(t.model, t.gpu): Throughput(t.tokens_per_s, 0.0, None, f"measured: {t.detail}")
            for t in read_throughput(paths, candidates)}


def _measured(args: argparse.Namespace, candidates: set[str]) -> dict[str, ModelCurve]:
    """The loss curves of candidates already trained, by model (none without --losses)."""
    if not args.losses:
        return {}
    from tpsbench.analysis.losses import read_losses
    from tpsbench.analysis.worth_inputs import assign_runs, model_curve, parse_map

    runs = [r for path in args.losses for r in read_losses(path)]
    by_model, _ = assign_runs(runs, parse_map(args.map))
    if any(r.tokens is None for segs in by_model.values() for r in segs) and args.tokens_per_step is None:
        raise UsageError("a loss file has no tokens column: give --tokens-per-step N")
    return {m: model_curve(m, segs, args.tokens_per_step or 1) for m, segs in by_model.items() if m in candidates}


def _note(notes: list[str], text: str) -> int:
    if text not in notes:
        notes.append(text)
    return notes.index(text) + 1


def _si(x: float) -> str:
    for scale, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def _iv(value: float, interval: tuple[float, float] | None, fmt: Callable[[float], str]) -> str:
    if interval is None or fmt(interval[0]) == fmt(interval[1]) == fmt(value):
        return fmt(value)
    return f"{fmt(value)} [{fmt(interval[0])}, {fmt(interval[1])}]"


def _row_dict(r: object) -> dict[str, object]:
    from dataclasses import asdict

    out = asdict(r)  # type: ignore[call-overload]
    out.pop("hours_samples")  # the resamples behind the intervals: not part of the answer
    gpus = out["throughput"]["gpus"] if out.get("throughput") else None
    out["gpu_hours"] = None if out.get("hours") is None or gpus is None else out["hours"] * gpus
    return out
