"""`tpsbench scaling fit` and `tpsbench scaling predict`: a law across the user's runs, and a model's loss from it."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tpsbench import __version__
from tpsbench.cli.args import UsageError, positive_float, positive_int
from tpsbench.report.tables import show

if TYPE_CHECKING:
    from rich.console import Console

    from tpsbench.analysis.worth_inputs import ModelCurve
    from tpsbench.scaling.fit import LawFit
    from tpsbench.scaling.validate import LeftOut


LORO_RESAMPLES = 40  # each left-out run's interval: enough for a 90% band, refitted once per run


def add_scaling_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="scaling_command", required=True, metavar="fit|predict")
    fit = sub.add_parser("fit", help="fit a law to loss curves of several models")
    fit.add_argument("--losses", nargs="+", required=True, metavar="FILE", help="loss curves (as `worth` reads them)")
    fit.add_argument("--map", action="append", default=[], metavar="RUN=MODEL",
                     help="assign a run to a model (repeatable; runs of one model are joined by step)")
    fit.add_argument("--form", default="chinchilla",
                     help="chinchilla (dense models: N total parameters), joint_moe (dense and MoE: N active "
                     "parameters, E experts; Ludziejewski et al. 2025) or granularity (MoE: N non-embedding, G = "
                     "top-k; Krajewski et al. 2024); default chinchilla")
    fit.add_argument("--skip-tokens", type=positive_float, default=None,
                     help="leave out each run's points up to this many tokens (default: through its logged "
                     "learning-rate warm-up, else its first 10%%)")
    fit.add_argument("--tokens-per-step", type=positive_int, default=None,
                     help="tokens per logged step, for files without a tokens column")
    fit.add_argument("--resamples", type=positive_int, default=200, help="bootstrap resamples (default 200)")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--target-loss", type=positive_float, default=None,
                     help="also validate the tokens each left-out run took to this loss")
    fit.add_argument("--metric", default="train/CE loss", help="the W&B metric (default train/CE loss)")
    fit.add_argument("-o", "--out", required=True, help="the law file to write (.toml)")
    fit.add_argument("--json", action="store_true")
    pr = sub.add_parser("predict", help="a model's loss at a number of tokens, from a law")
    src = pr.add_mutually_exclusive_group(required=True)
    src.add_argument("--law", help="a law file written by `scaling fit`")
    src.add_argument("--published",
                     help="a published law: besiroglu2024, hoffmann2022, ludziejewski2025 or krajewski2024")
    pr.add_argument("--model", required=True, help="a model name, file, config or variant")
    pr.add_argument("--tokens", type=positive_float, required=True, help="training tokens")
    pr.add_argument("--json", action="store_true")


def cmd_scaling(args: argparse.Namespace, console: Console) -> int:
    if args.scaling_command == "fit":
        return _fit(args, console)
    return _predict(args, console)


@dataclass(frozen=True, slots=True)
class FittedFiles:
    """A law fitted to loss files: the fit, its leave-one-run-out validation, the curves, runs no --map named,
    and each run's record for the law file."""

    fit: LawFit
    loro: list[LeftOut]
    curves: list[ModelCurve]
    left_out: list[str]
    records: list[dict[str, object]]
    skipped: str  # how the warm-up was left out


def fit_files(args: argparse.Namespace, form_name: str, resamples: int, seed: int = 0,
              target: float | None = None) -> FittedFiles:
    """``scaling fit``'s work, shared with ``plan --losses``: read, map, join, fit, validate."""
    from tpsbench.analysis.losses import read_losses
    from tpsbench.analysis.worth_inputs import assign_runs, model_curve, parse_map
    from tpsbench.scaling.fit import ScalingFitError, fit_law
    from tpsbench.scaling.forms import FORMS
    from tpsbench.scaling.runs import not_covered, run_points, skip_summary
    from tpsbench.scaling.validate import leave_one_run_out

    form = FORMS.get(form_name)
    if form is None:
        raise UsageError(f"--form '{form_name}' is not one of {', '.join(FORMS)}")
    runs = [r for path in args.losses for r in read_losses(path, metric=args.metric)]
    by_model, left_out = assign_runs(runs, parse_map(args.map))
    if any(r.tokens is None for segs in by_model.values() for r in segs) and args.tokens_per_step is None:
        raise UsageError("a loss file has no tokens column: give --tokens-per-step N")
    curves = [model_curve(m, segs, args.tokens_per_step or 1) for m, segs in by_model.items()]
    for c in curves:
        if (why := not_covered(form, c.model)) is not None:
            raise ScalingFitError(f"run of {c.model.name}: {why}; leave it out of --map or choose another --form")
    points = run_points(form, curves, skip_tokens=args.skip_tokens)
    published = form.published[0]
    fit = fit_law(form, points, published=published, resamples=resamples, seed=seed)
    loro = leave_one_run_out(fit, published, resamples=min(LORO_RESAMPLES, resamples), target=target)
    logged = _logged_conventions(curves)
    records: list[dict[str, object]] = [
        {"run": r.run, "model": r.model, "n": r.n, "points": len(r.tokens), "first_tokens": float(r.tokens[0]),
         "last_tokens": float(r.tokens[-1]), "experts": r.experts,
         **({"flop_convention": logged[r.model]} if r.model in logged else {})} for r in fit.runs]
    return FittedFiles(fit, loro, curves, left_out, records, skip_summary(curves, args.skip_tokens))


def _fit(args: argparse.Namespace, console: Console) -> int:
    from tpsbench.scaling.law_file import write_law
    from tpsbench.scaling.validate import coverage

    done = fit_files(args, args.form, args.resamples, args.seed, args.target_loss)
    fit, loro, left_out = done.fit, done.loro, done.left_out
    form = fit.form
    write_law(args.out, form, fit.coefficients, done.records, fit.samples, fit.seed)
    cov = coverage(loro)
    if args.json:
        print(json.dumps({"tool": "tpsbench", "version": __version__, "command": "scaling fit", "form": form.name,
                          "law": args.out, "left_out_runs": left_out,
                          "coefficients": [{"name": c.name, "value": c.value, "low": c.low, "high": c.high,
                                            "held": c.held} for c in fit.coefficients],
                          "leave_one_run_out": [{"run": r.run, "tokens": r.tokens, "observed": r.observed,
                                                 "predicted": r.predicted, "error": r.error, "low": r.low,
                                                 "high": r.high, "target_error": r.target_error} for r in loro],
                          "coverage": cov, "warm_up": done.skipped}, indent=2))
        return 0
    lines = [f"{form.name}: {form.equation} (N = {form.counts}); fitted to {len(fit.runs)} runs, "
             f"{sum(len(r.tokens) for r in fit.runs):,} points, {len(fit.samples)} bootstrap resamples -> {args.out}"]
    for c in fit.coefficients:
        where = f"held: {c.held}" if c.held else f"fitted, 90% [{c.low:.4g}, {c.high:.4g}]"
        lines.append(f"  {c.name:<7} {c.value:.4g}  ({where})")
    lines.append(f"  {done.skipped}")
    for r in loro:
        target = "" if r.target_error is None else f"; tokens to {args.target_loss:g}: {100 * r.target_error:+.1f}%"
        lines.append(f"  left out {r.run}: at {r.tokens:.3g} tokens observed {r.observed:.4f}, predicted "
                     f"{r.predicted:.4f} ({100 * r.error:+.2f}%){target}")
    if cov is not None:
        lines.append(f"  90% intervals cover {100 * cov:.0f}% of the left-out runs' final losses")
    if left_out:
        lines.append(f"  runs no --map names (left out): {', '.join(left_out)}")
    show(console, lines)
    return 0


def _logged_conventions(curves: list[ModelCurve]) -> dict[str, str]:
    """Per model, the FLOP convention its loss file's cumulative petaflops match (plan's PF-days then equal the
    user's own plots)."""
    from tpsbench.analysis.worth_inputs import flop_conventions, matched_convention

    out = {}
    for c in curves:
        if c.implied_flops_per_token is not None:
            name, _ = matched_convention(flop_conventions(c.model, None), c.implied_flops_per_token)
            if name is not None:
                out[c.model.name] = name
    return out


def _predict(args: argparse.Namespace, console: Console) -> int:
    import numpy as np

    from tpsbench.models import get_model
    from tpsbench.scaling.law_source import load_law, published_law
    from tpsbench.scaling.runs import experts, not_covered, parameter_count

    model = get_model(args.model)
    law = load_law(args.law) if args.law is not None else published_law(args.published)
    form, values, samples, source = law.form, law.values, law.samples, law.source
    sizes = [] if law.sizes is None else list(law.sizes)
    tokens = [] if law.max_tokens is None else [law.max_tokens]
    n, e = parameter_count(form, model), experts(model, form)
    if (why := not_covered(form, model)) is not None:
        raise UsageError(f"{model.name}: {why}")
    loss = float(form.loss(values, np.asarray(n), np.asarray(args.tokens), e))
    interval = None
    if len(samples):
        preds = [float(form.loss(dict(zip(form.parameters, s, strict=True)), np.asarray(n), np.asarray(args.tokens),
                                 e)) for s in samples]
        interval = (float(np.percentile(preds, 5)), float(np.percentile(preds, 95)))
    outside = []
    if sizes and not min(sizes) <= n <= max(sizes):
        outside.append(f"N {n:.3g} outside the fitted {min(sizes):.3g}-{max(sizes):.3g}")
    if tokens and args.tokens > max(tokens):
        outside.append(f"tokens beyond the longest fitted run ({max(tokens):.3g})")
    if args.tokens < n:
        outside.append("fewer tokens than parameters")
    if args.json:
        print(json.dumps({"tool": "tpsbench", "version": __version__, "command": "scaling predict",
                          "model": model.name, "n": n, "tokens": args.tokens, "loss": loss,
                          "interval_90": interval, "extrapolates": outside, "source": source}, indent=2))
        return 0
    iv = "" if interval is None else f" [90%: {interval[0]:.4f}, {interval[1]:.4f}]"
    variable = "" if model.moe is None or not form.variable else f", {form.variable} = {e:g}"
    what = f"{model.name} (N = {n:,.0f}, {form.counts}{variable}) at {args.tokens:.4g} tokens"
    lines = [f"{what}: loss {loss:.4f}{iv} ({'fitted: ' if args.law else ''}{source})"]
    if outside:
        lines.append(f"extrapolates: {'; '.join(outside)}")
    show(console, lines)
    return 0
