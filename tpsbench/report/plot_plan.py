"""`tpsbench plan -o FILE`: the law's loss against wall-clock hours for each candidate on each GPU (a panel per
GPU), with the 90% band of the law's resamples and the expected tokens/s's uncertainty, the target, and the
measured curves of candidates already trained (from --losses) at the same GPU's expected tokens/s (matplotlib,
Agg)."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tpsbench.analysis.worth_inputs import ModelCurve
from tpsbench.report.plot import SUFFIXES, PlotError
from tpsbench.scaling.plan import Goal, Law, PlanRow

POINTS = 120


def _band(law: Law, row: PlanRow, hours: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    assert row.throughput is not None
    rate, u = row.throughput.tokens_per_s, row.throughput.uncertainty
    tokens = rate * hours * 3600
    central = law.form.loss(law.values, np.asarray(row.n), tokens, row.experts)
    samples = [dict(zip(law.form.parameters, s, strict=True)) for s in law.samples] or [law.values] * 200
    factor = np.random.default_rng(zlib.crc32(f"{row.model}@{row.gpu}".encode())).uniform(1 - u, 1 + u, len(samples))
    grid = np.array([law.form.loss(v, np.asarray(row.n), tokens * f, row.experts)
                     for v, f in zip(samples, factor, strict=True)])
    return central, np.percentile(grid, 5, axis=0), np.percentile(grid, 95, axis=0)


def plot_plan(rows: Sequence[PlanRow], law: Law, goal: Goal, amount: float, out: str | Path,
              measured: dict[str, ModelCurve] | None = None) -> Path:
    out = Path(out)
    if out.suffix.lower() not in SUFFIXES:
        raise PlotError(f"-o {out}: give a file ending in {', '.join(SUFFIXES)}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    gpus = list(dict.fromkeys(r.gpu for r in rows))
    fig, axes = plt.subplots(1, len(gpus), figsize=(5.6 * len(gpus), 4.6), squeeze=False)
    models = list(dict.fromkeys(r.model for r in rows))
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(models)}
    for ax, gpu in zip(axes[0], gpus, strict=True):
        numbered = [r for r in rows if r.gpu == gpu and r.unavailable is None and r.hours]
        if not numbered:
            ax.set_title(f"{gpu}: no candidate has a number")
            continue
        top = max(r.hours or 0.0 for r in numbered) * 1.6
        # from well before the soonest candidate's hours to past the latest's: every marker on the axes
        hours = np.geomspace(min(top / 60, min(r.hours or top for r in numbered) / 8), top, POINTS)
        for r in numbered:
            c = colours[r.model]
            central, low, high = _band(law, r, hours)
            assert r.throughput is not None
            ax.fill_between(hours, low, high, color=c, alpha=0.18, lw=0)
            on = "" if r.throughput.gpus == 1 else f"{r.throughput.gpus} GPUs, "
            ax.plot(hours, central, color=c, lw=1.5, label=f"{r.model} ({on}{r.throughput.tokens_per_s:,.0f} tokens/s)")
            if goal is Goal.TARGET and r.hours is not None:
                ax.plot([r.hours], [amount], "o", color=c, ms=6)
            curve = (measured or {}).get(r.model)
            if curve is not None:
                ax.plot(curve.tokens / (r.throughput.tokens_per_s * 3600), curve.losses, color=c, lw=0.7,
                        alpha=0.7, ls="-", marker=None)
        if goal is Goal.TARGET:
            ax.axhline(amount, color="k", lw=0.8, ls=":")
        losses = [r.loss for r in numbered if r.loss is not None]
        ceiling = max(float(_band(law, r, hours[:1])[0][0]) for r in numbered)
        ax.set(xscale="log", xlim=(hours[0], hours[-1]), title=f"{gpu}: predicted loss (band: 90%)",
               xlabel="wall-clock hours (on one GPU unless the legend says more)",
               ylabel="loss", ylim=(min([*losses, amount]) * 0.97, min(ceiling, max(losses) * 1.35)))
        ax.xaxis.set_minor_formatter(NullFormatter())  # log-axis minor labels collide on short ranges
        ax.legend(fontsize=7)
    fig.suptitle(f"law: {law.source[:110]}", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=130)
    plt.close(fig)
    return out
