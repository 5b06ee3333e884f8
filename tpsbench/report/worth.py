"""`tpsbench worth`'s tables: the L(D) fit per model, FLOPs per token, the hours (and dollars) to the target loss on
each GPU, and MoE against dense."""

from __future__ import annotations

from tpsbench.analysis.lossfit import CONFIDENCE, Interval
from tpsbench.analysis.worth import WorthReport, WorthRow
from tpsbench.analysis.worth_inputs import OLMO_PRE3, matched_convention
from tpsbench.report.format import NA, fmt
from tpsbench.report.tables import TableData

CONF = f"{100 * CONFIDENCE:.0f}%"


def _g(x: float | None, digits: int = 3) -> str:
    return fmt(x, f"{{:.{digits}g}}", infinite="unreachable")


def _iv(iv: Interval | None, digits: int = 3) -> str:
    return NA if iv is None else f"[{_g(iv.low, digits)}, {_g(iv.high, digits)}]"


def _tokens(x: float | None) -> str:
    return fmt(None if x is None else x / 1e9, "{:.3g}B", infinite="unreachable")


def _tokens_iv(iv: Interval | None) -> str:
    return NA if iv is None else f"[{_tokens(iv.low)}, {_tokens(iv.high)}]"


def _with(value: str, iv: str) -> str:
    return value if iv == NA else f"{value} {iv}"


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
            td.rows.append([f.name, runs, str(len(f.curve.tokens)), *[NA] * 6, _tokens(f.observed_tokens),
                            f"{NA} ({f.reason})"])
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
                   ["model", "6N", "olmo", OLMO_PRE3, "exact", "implied by the file", "matches (implied / it)",
                    "tokens from"], left={"model", "matches (implied / it)", "tokens from"})
    for f in r.fits:
        c = f.flops_per_token
        imp = f.curve.implied_flops_per_token
        match = NA
        if imp is not None:
            name, ratio = matched_convention(c, imp)
            match = f"{name} ({ratio:.3f})" if name else f"none within 2% (closest {ratio:.3f})"
        td.rows.append([f.name, f"{c['6N']:.4g}", f"{c['olmo']:.4g}", f"{c[OLMO_PRE3]:.4g}", f"{c['exact']:.4g}",
                        _g(imp, 4), match, f.curve.tokens_source])
    return td


def ranking_tables(r: WorthReport) -> list[TableData]:
    out: list[TableData] = []
    groups: dict[tuple[str, str], list[WorthRow]] = {}
    for row in r.rows:
        groups.setdefault((row.gpu, row.throughput.basis), []).append(row)
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
        td.rows.append([q.gpu, q.basis, f"{q.moe} / {q.dense}", _with(_g(q.hours), _iv(q.hours_interval)),
                        _with(_g(q.tokens), _iv(q.tokens_interval)), _with(_g(q.flops_6n), _iv(q.flops_6n_interval)),
                        f"{q.throughput:.3f}", q.verdict])
    return td


def worth_tables(r: WorthReport) -> list[TableData]:
    return [fits_table(r), flops_table(r), *ranking_tables(r), *([ratios_table(r)] if r.ratios else [])]
