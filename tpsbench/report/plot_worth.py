"""`tpsbench worth -o FILE`: loss against wall-clock hours on each GPU (the measured curves, their fits to the
target, the target line) and loss against PF-days (6N), log-log (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tpsbench.analysis.worth import PF_DAY, SECONDS_PER_HOUR, WorthReport, WorthRow
from tpsbench.analysis.worth_inputs import ThroughputBasis
from tpsbench.report.plot import SUFFIXES, PlotError

KIND_ORDER = tuple(ThroughputBasis)  # best-founded first


def _per_gpu(r: WorthReport) -> dict[str, list[WorthRow]]:
    """Each GPU's rows of its best-founded kind of tokens/s (measured, else expected, else floor)."""
    out: dict[str, list[WorthRow]] = {}
    for gpu in dict.fromkeys(row.gpu for row in r.rows):
        rows = [row for row in r.rows if row.gpu == gpu]
        kind = next(k for k in KIND_ORDER if any(row.throughput.basis == k for row in rows))
        out[gpu] = [row for row in rows if row.throughput.basis == kind]
    return out


def plot_worth(r: WorthReport, out: str | Path) -> Path:
    out = Path(out)
    if out.suffix.lower() not in SUFFIXES:
        raise PlotError(f"-o {out}: give a file ending in {', '.join(SUFFIXES)}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_gpu = _per_gpu(r)
    panels = len(per_gpu) + 1
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.4), squeeze=False)
    colours = {f.name: plt.get_cmap("tab10")(i % 10) for i, f in enumerate(r.fits)}
    fits = {f.name: f for f in r.fits}
    for ax, (gpu, rows) in zip(axes[0], per_gpu.items(), strict=False):
        for row in rows:
            f = fits[row.model]
            per_hour = row.throughput.tokens_per_s * SECONDS_PER_HOUR
            c = colours[row.model]
            ax.plot(f.curve.tokens / per_hour, f.curve.losses, color=c, lw=0.8, alpha=0.6,
                    label=f"{row.model} ({row.throughput.tokens_per_s:,.0f} tokens/s)")
            if f.fit is not None:
                end = max(f.curve.tokens[-1], row.tokens or 0.0) * 1.15
                d = np.linspace(f.curve.tokens[-1] * 0.1, end, 200)
                ax.plot(d / per_hour, f.fit.loss_at(d), color=c, ls="--", lw=1.4)
            if row.hours is not None:
                ax.plot([row.hours], [r.target], "o", color=c, ms=6)
        ax.axhline(r.target, color="k", lw=0.8, ls=":")
        ax.set(title=f"{gpu} ({rows[0].throughput.basis} tokens/s)", xlabel="wall-clock hours on one GPU",
               ylabel="loss", ylim=_ylim(r))
        ax.legend(fontsize=7)
    ax = axes[0][-1]
    for f in r.fits:
        pf = f.curve.tokens * f.flops_per_token["6N"] / PF_DAY
        keep = pf > 0
        ax.loglog(pf[keep], f.curve.losses[keep], color=colours[f.name], lw=0.8, alpha=0.6, label=f.name)
        if f.fit is not None:
            d = np.geomspace(f.curve.tokens[-1] * 0.05, max(f.curve.tokens[-1], f.fitted_tokens or 0.0) * 1.3, 200)
            ax.loglog(d * f.flops_per_token["6N"] / PF_DAY, f.fit.loss_at(d), color=colours[f.name], ls="--")
    ax.axhline(r.target, color="k", lw=0.8, ls=":")
    ax.set(title="loss against compute (6N FLOPs)", xlabel="PF-days", ylabel="loss", ylim=_ylim(r))
    from matplotlib.ticker import FormatStrFormatter

    for axis_formatter in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
        axis_formatter(FormatStrFormatter("%.1f"))
    ax.legend(fontsize=7)
    fig.suptitle(f"Time to loss {r.target:g}: measured curves (solid), fits (dashed), target (dotted)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(out, dpi=110)
    except (OSError, ValueError) as exc:
        raise PlotError(f"-o {out}: cannot write ({exc})") from None
    finally:
        plt.close(fig)
    return out


def _ylim(r: WorthReport) -> tuple[float, float]:
    """From below the target to a little above the losses after warm-up: the warm-up's 10+ would flatten it."""
    lows = [float(np.min(f.curve.losses)) for f in r.fits]
    after = [float(np.quantile(f.curve.losses, 0.9)) for f in r.fits]
    return min([*lows, r.target]) - 0.1, max(after) + 0.3
