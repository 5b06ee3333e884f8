"""`tpsbench plot`: a roofline chart and tokens/s versus batch size from results files (matplotlib, Agg).

Roofline (log-log): each GPU's datasheet ceilings, min(matmul peak, bandwidth x intensity); each workload
at its arithmetic intensity (cost-model matmul FLOPs / cost-model bytes) twice: measured (filled: FLOPs /
measured median time) and predicted (hollow: FLOPs / roofline floor), joined by a line whose length is
the distance to the floor. Throughput: tokens/s per microbatch size, one line per model and implementation.
"""

from __future__ import annotations

from pathlib import Path

from tpsbench.analysis.points import profile_named
from tpsbench.errors import InputError
from tpsbench.options import PointKind
from tpsbench.points import MeasuredPoint, point_label

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
SUFFIXES = (".png", ".svg", ".pdf")


class PlotError(InputError):
    """Nothing to plot, or an output name matplotlib cannot write."""


def _series_label(e: MeasuredPoint, several_gpus: bool) -> str:
    """A point's name across microbatch sizes (and GPUs, when the plot holds several)."""
    return point_label(e.key, tokens=False, gpu=e.gpu if several_gpus else None)


def plot_results(entries: list[MeasuredPoint], out: str | Path, *, all_points: bool = False) -> Path:
    """Draw :func:`roofline_figure` into ``out`` (.png, .svg or .pdf)."""
    out = Path(out)
    if out.suffix.lower() not in SUFFIXES:
        raise PlotError(f"-o {out}: give a file ending in {', '.join(SUFFIXES)}")
    fig = roofline_figure(entries, all_points=all_points)
    import matplotlib.pyplot as plt

    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def roofline_figure(entries: list[MeasuredPoint], *, all_points: bool = False):
    """The figure: the roofline panel (left) and tokens/s versus microbatch (right), as matplotlib objects."""
    chosen = [e for e in entries if e.ok and (all_points or e.is_headline)]
    if not chosen:
        raise PlotError("no measured points to plot (every point failed, or none is a train step or a layer "
                        "fwd_bwd: try --all-points)")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gpus = list(dict.fromkeys(e.gpu for e in chosen))
    several = len(gpus) > 1
    fig, (ax_r, ax_t) = plt.subplots(1, 2, figsize=(15, 9), gridspec_kw={"width_ratios": [1.25, 1]})
    cmap = plt.get_cmap("tab20")
    series = list(dict.fromkeys(_series_label(e, several) for e in chosen))
    # tab20 holds 10 hues, each as a dark and a light shade at neighbouring indices: the dark ones first, so
    # that up to 10 series (moe/grouped next to moe/capacity, say) never share a hue
    shades = [*range(0, 20, 2), *range(1, 20, 2)]
    color = {s: cmap(shades[i % 20]) for i, s in enumerate(series)}
    marker = {g: MARKERS[i % len(MARKERS)] for i, g in enumerate(gpus)}

    _draw_roofline(ax_r, chosen, gpus, color, marker, several)
    _draw_throughput(ax_t, chosen, color, marker, several)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=color[s], marker="o", ls="", label=s) for s in series]
    handles += [Line2D([], [], color="grey", marker=marker[g], ls="", label=f"GPU {g}") for g in gpus if several]
    ncol = 3 if len(handles) > 8 else 2
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    rows = -(-len(handles) // ncol)
    fig.suptitle(", ".join(dict.fromkeys(e.key.model for e in chosen)) + " on " + ", ".join(gpus))
    fig.tight_layout(rect=(0, min(0.45, 0.02 + 0.022 * rows), 1, 1))
    return fig


def _draw_roofline(ax_r, chosen: list[MeasuredPoint], gpus: list[str], color: dict, marker: dict,
                   several: bool) -> None:
    """Each GPU's roofline ceilings (datasheet, or a cited measurement above it); each workload measured (filled)
    and at its floor (hollow)."""
    roof = [e for e in chosen if e.matmul_flops and e.bytes]
    xs = [e.matmul_flops / e.bytes for e in roof if e.matmul_flops and e.bytes]
    ridges = [p.matmul_ceiling("bf16").value / (p.bandwidth_ceiling().value / 1e3)
              for p in map(profile_named, gpus) if p]
    lo = min([*xs, *ridges]) / 4 if xs or ridges else 0.1
    hi = max([*xs, *ridges]) * 4 if xs or ridges else 1e4
    for i, g in enumerate(gpus):
        prof = profile_named(g)
        if prof is None:
            continue
        peak, bw = prof.matmul_ceiling("bf16").value, prof.bandwidth_ceiling().value / 1e3  # TFLOP/s, TB/s
        ridge = peak / bw
        basis = "datasheet" if peak == prof.bf16_tflops.value else "measured, above the datasheet"
        grid = sorted({lo, min(max(ridge, lo), hi), hi})
        ax_r.plot(grid, [min(peak, bw * x) for x in grid], color="k", lw=1.6, ls=("-", "--", ":", "-.")[i % 4],
                  label=f"{prof.display_name} ceiling: {peak:g} TFLOP/s bf16 ({basis}), {bw * 1e3:g} GB/s "
                        f"(ridge {ridge:.0f} FLOP/B)")
    for e in roof:
        assert e.matmul_flops and e.bytes and e.median_s
        x = e.matmul_flops / e.bytes
        y = e.matmul_flops / e.median_s / 1e12
        s = _series_label(e, several)
        ax_r.scatter([x], [y], color=color[s], marker=marker[e.gpu], s=55, zorder=3)
        if e.predicted_s:
            yp = e.matmul_flops / e.predicted_s / 1e12
            ax_r.scatter([x], [yp], facecolors="none", edgecolors=[color[s]], marker=marker[e.gpu], s=55, zorder=3)
            ax_r.plot([x, x], [y, yp], color=color[s], lw=0.8, alpha=0.6)
    ax_r.set_xscale("log")
    ax_r.set_yscale("log")
    ax_r.set_xlim(lo, hi)
    ax_r.set_xlabel("arithmetic intensity (cost-model matmul FLOPs / DRAM bytes)")
    ax_r.set_ylabel("matmul TFLOP/s")
    profiled = [g for g in gpus if profile_named(g) is not None]
    ax_r.set_title("Roofline: filled = measured, hollow = roofline floor" if profiled else
                   "Measured matmul TFLOP/s by intensity (CPU run: no GPU profile, so no ceilings and no floors)")
    ax_r.grid(True, which="both", alpha=0.25)
    if profiled:
        ax_r.legend(fontsize=8, loc="upper left")
    if not roof:
        ax_r.text(0.5, 0.5, "no point has cost-model FLOPs and bytes", ha="center", transform=ax_r.transAxes)


def _draw_throughput(ax_t, chosen: list[MeasuredPoint], color: dict, marker: dict, several: bool) -> None:
    """tokens/s per microbatch size, one line per series; a note when every point ran at one size."""
    # Training steps when there are any: a layer's tokens/s is not comparable with a whole model's.
    steps = [e for e in chosen if e.key.kind is PointKind.E2E] or chosen
    by_series: dict[str, list[MeasuredPoint]] = {}
    for e in steps:
        if e.tokens_per_s:
            by_series.setdefault(_series_label(e, several), []).append(e)
    batches = sorted({e.key.tokens for e in steps})
    if len(batches) > 1:
        for s, es in by_series.items():
            es.sort(key=lambda e: e.key.tokens)
            ax_t.plot([e.key.tokens for e in es], [e.tokens_per_s for e in es], marker=marker[es[0].gpu],
                      color=color[s], label=s)
        ax_t.set_xscale("log", base=2)
        ax_t.set_yscale("log")
        ax_t.set_xlabel("tokens per microbatch")
        ax_t.set_ylabel("tokens/s (measured)")
        ax_t.grid(True, which="both", alpha=0.25)
    else:  # one batch size: a column of points says nothing about batch size
        ax_t.axis("off")
        ax_t.text(0.5, 0.5, f"every point ran at one microbatch ({batches[0]:,} tokens):\nnothing to plot against "
                  "batch size\n(`tpsbench run --batch` with several sizes)", ha="center", va="center",
                  transform=ax_t.transAxes)
    ax_t.set_title("Throughput versus batch size" + (": training steps" if steps is not chosen else ": layers"))
