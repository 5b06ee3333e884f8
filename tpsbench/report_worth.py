"""Tables of `tpsbench worth` (terminal and markdown from one :class:`TableData` each) and its JSON document."""

from __future__ import annotations

import math

from tpsbench.analysis.lossfit import CONFIDENCE, Interval
from tpsbench.analysis.worth import ModelFit, Ratio, WorthReport, WorthRow
from tpsbench.report_analysis import TableData

CONF = f"{100 * CONFIDENCE:.0f}%"


def _g(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    if math.isinf(x):
        return "unreachable"
    return f"{x:.{digits}g}"


def _iv(iv: Interval | None, digits: int = 3) -> str:
    return "n/a" if iv is None else f"[{_g(iv.low, digits)}, {_g(iv.high, digits)}]"


def _tokens(x: float | None) -> str:
    if x is None:
        return "n/a"
    return "unreachable" if math.isinf(x) else f"{x / 1e9:.3g}B"


def _tokens_iv(iv: Interval | None) -> str:
    return "n/a" if iv is None else f"[{_tokens(iv.low)}, {_tokens(iv.high)}]"


def _with(value: str, iv: str) -> str:
    return value if iv == "n/a" else f"{value} {iv}"


def fits_table(r: WorthReport) -> TableData:
    td = TableData(f"L(D) = E + B D^-beta per model (Huber fit after the first 10% of tokens; [{CONF} seeded "
                   f"bootstrap]); tokens D* to loss {r.target:g}, observed and fitted; last: smoothed",
                   ["model", "runs", "points fitted", "E", "B", "beta", "rms", "last", "above E", "observed",
                    "fitted D*"],
                   left={"model", "runs"})
    for f in r.fits:
        fit = f.fit
        runs = ", ".join(f.curve.runs)
        if fit is None:
            td.rows.append([f.name, runs, str(len(f.curve.tokens)), *["n/a"] * 6, _tokens(f.observed_tokens),
                            f"n/a ({f.reason})"])
            continue
        fitted = (_with(_tokens(f.fitted_tokens), _tokens_iv(fit.tokens_interval)) if f.fitted_tokens is not None
                  else f"unreachable (E {fit.e:.3f})")
        td.rows.append([f.name, runs, str(fit.points), _with(f"{fit.e:.3f}", _iv(fit.e_interval)), f"{fit.b:.3g}",
                        _with(f"{fit.beta:.3f}", _iv(fit.beta_interval)), f"{fit.rms_residual:.3f}",
                        f"{fit.last_loss:.3f}", f"{fit.plateau_gap:.3f}", _tokens(f.observed_tokens), fitted])
    return td


def flops_table(r: WorthReport) -> TableData:
    """FLOPs per token by convention, and what the run's cumulative-petaflops column implies (a mapping check:
    a run mapped to the wrong model is off by its ratio)."""
    td = TableData("Training FLOPs per token: the cost model's conventions against the loss file's petaflops",
                   ["model", "6N", "olmo", "exact", "implied by the file", "implied / olmo", "tokens from"],
                   left={"model", "tokens from"})
    for f in r.fits:
        c = f.flops_per_token
        imp = f.curve.implied_flops_per_token
        td.rows.append([f.name, f"{c['6N']:.4g}", f"{c['olmo']:.4g}", f"{c['exact']:.4g}", _g(imp, 4),
                        "n/a" if imp is None else f"{imp / c['olmo']:.3f}", f.curve.tokens_source])
    return td


def ranking_tables(r: WorthReport) -> list[TableData]:
    out: list[TableData] = []
    groups: dict[tuple[str, str], list[WorthRow]] = {}
    for row in r.rows:
        groups.setdefault((row.gpu, row.throughput.kind), []).append(row)
    for (gpu, kind), rows in groups.items():
        td = TableData(f"{gpu}: hours to loss {r.target:g} on one GPU ({kind} tokens/s), fastest first "
                       f"[{CONF}]", ["#", "model", "tokens/s", "from", "hours", "observed h", "cost $",
                                      "PF-days 6N / olmo / exact"], left={"model", "from"})
        for i, row in enumerate(rows, start=1):
            td.rows.append([str(i), row.model, f"{row.throughput.tokens_per_s:,.0f}", row.throughput.detail,
                            _with(_g(row.hours), _iv(row.hours_interval)), _g(row.observed_hours),
                            _with(_g(row.cost_usd), _iv(row.cost_interval)),
                            " / ".join(_g(row.pf_days(c)) for c in ("6N", "olmo", "exact"))])
        out.append(td)
    return out


def ratios_table(r: WorthReport) -> TableData:
    td = TableData(f"MoE / dense to loss {r.target:g} [{CONF}, from the two fits' bootstraps]",
                   ["GPU", "tokens/s from", "MoE / dense", "hours", "tokens", "FLOPs (6N)", "tokens/s", "verdict"],
                   left={"GPU", "tokens/s from", "MoE / dense", "verdict"})
    for q in r.ratios:
        td.rows.append([q.gpu, q.kind, f"{q.moe} / {q.dense}", _with(_g(q.hours), _iv(q.hours_interval)),
                        _with(_g(q.tokens), _iv(q.tokens_interval)), _with(_g(q.flops_6n), _iv(q.flops_6n_interval)),
                        f"{q.throughput:.3f}", q.verdict])
    return td


def worth_tables(r: WorthReport) -> list[TableData]:
    return [fits_table(r), flops_table(r), *ranking_tables(r), *([ratios_table(r)] if r.ratios else [])]


def _iv_dict(iv: Interval | None) -> list[float | None] | None:
    return None if iv is None else [iv.low if math.isfinite(iv.low) else None,
                                    iv.high if math.isfinite(iv.high) else None]


def _fit_dict(f: ModelFit) -> dict[str, object]:
    fit = f.fit
    return {
        "model": f.name, "runs": list(f.curve.runs), "points": len(f.curve.tokens),
        "tokens_source": f.curve.tokens_source, "reason": f.reason,
        "fit": None if fit is None else {
            "e": fit.e, "b": fit.b, "beta": fit.beta, "e_interval": _iv_dict(fit.e_interval),
            "beta_interval": _iv_dict(fit.beta_interval), "rms_residual": fit.rms_residual,
            "fitted_points": fit.points, "last_tokens": fit.last_tokens, "last_loss_smoothed": fit.last_loss,
            "above_e": fit.plateau_gap},
        "tokens_to_target": {"observed": f.observed_tokens, "fitted": f.fitted_tokens,
                             "fitted_interval": None if fit is None else _iv_dict(fit.tokens_interval),
                             "unreachable": fit is not None and f.fitted_tokens is None},
        "flops_per_token": f.flops_per_token, "implied_flops_per_token": f.curve.implied_flops_per_token,
    }


def _row_dict(w: WorthRow) -> dict[str, object]:
    t = w.throughput
    return {"model": w.model, "gpu": w.gpu, "tokens_per_s": t.tokens_per_s, "throughput_kind": t.kind,
            "throughput_from": t.detail, "tokens": w.tokens, "hours": w.hours,
            "hours_interval": _iv_dict(w.hours_interval), "gpus": 1, "gpu_hours": w.gpu_hours,
            "observed_hours": w.observed_hours, "cost_usd": w.cost_usd, "cost_interval": _iv_dict(w.cost_interval),
            "flops_to_target": w.flops}


def _ratio_dict(q: Ratio) -> dict[str, object]:
    return {"gpu": q.gpu, "throughput_kind": q.kind, "moe": q.moe, "dense": q.dense, "hours": q.hours,
            "hours_interval": _iv_dict(q.hours_interval), "tokens": q.tokens,
            "tokens_interval": _iv_dict(q.tokens_interval), "flops_6n": q.flops_6n,
            "flops_6n_interval": _iv_dict(q.flops_6n_interval), "tokens_per_s": q.throughput, "verdict": q.verdict}


def worth_json(r: WorthReport) -> dict[str, object]:
    return {"target_loss": r.target, "confidence": CONFIDENCE, "models": [_fit_dict(f) for f in r.fits],
            "rows": [_row_dict(w) for w in r.rows], "ratios": [_ratio_dict(q) for q in r.ratios],
            "summary": r.summary_lines(), "left_out_runs": list(r.left_out_runs), "notes": list(r.notes)}
