"""`tpsbench run`: the run's table (one row per point) and the notes a reader wants under it: warnings, the
training steps' tokens/s, MFU and memory, the MoE routing facts."""

from __future__ import annotations

from tpsbench.analysis.consistency import TOLERANCE, inconsistent_points
from tpsbench.report.format import NA, fmt
from tpsbench.report.tables import TableData
from tpsbench.results.schema import Point, RunDoc

RUN_COLUMNS = ("point", "tokens", "mode", "median ms", "IQR %", "outl.", "n", "tokens/s", "TFLOP/s", "GB/s",
               "DRAM GB/s", "idle", "pred. ms", "roofline", "status")
_LEFT = {"point", "mode", "status"}


def _run_row(p: Point, inconsistent: bool = False) -> list[str]:
    stats, derived, pred, counters = p.stats, p.derived, p.prediction, p.counters
    med = stats.median if stats else None
    iqr = (100 * stats.iqr / stats.median) if stats and stats.median else None
    gpu_time = p.raw.gpu_time if p.raw else None
    idle = gpu_time.idle_share if gpu_time else None
    dram = counters.values.get("dram_gbs") if counters else None
    what = p.layer if p.kind == "micro" else "train step"
    return [what + (f"/{p.impl}" if p.impl else ""), f"{p.tokens:,}", p.mode.removeprefix("stage:"),
            fmt(med * 1e3 if med else None, "{:.3f}"), fmt(iqr, "{:.1f}"),
            fmt(len(stats.outliers) if stats else None, "{}"),
            fmt(stats.n if stats else None, "{}"), fmt(derived.tokens_per_s if derived else None, "{:,.0f}"),
            fmt(derived.achieved_tflops if derived else None, "{:.1f}"),
            fmt(derived.achieved_gbs if derived else None, "{:.0f}"),
            fmt(dram, "{:.0f}") + ("*" if counters and counters.throttled else ""),
            fmt(100 * idle if idle is not None else None, "{:.0f}%"),
            fmt(pred.predicted_s * 1e3 if pred else None, "{:.3f}"),
            fmt(100 * pred.achieved_fraction if pred else None, "{:.0f}%"),
            "inconsistent" if inconsistent else p.status]


def run_table(doc: RunDoc) -> TableData:
    """Summary of a results document: one row per point (a stage's mode is its name). Columns that say nothing
    are left out so the table fits a terminal: one that is n/a for every point (on the CPU: counters, idle time,
    predictions), and status when every point is ok; a value too wide for its column folds onto the next line
    instead of being cut. The file keeps every field."""
    machine, cfg = doc.machine, doc.config
    where = machine.gpu_name or f"CPU ({machine.cpu_count} cores)"
    flagged = inconsistent_points(doc)
    rows = [_run_row(p, i in flagged) for i, p in enumerate(doc.points)]
    status = RUN_COLUMNS.index("status")
    keep = [i for i, col in enumerate(RUN_COLUMNS)
            if col == "point" or not rows or (any(r[i] != NA for r in rows) and
                                              (i != status or any(r[i] != "ok" for r in rows)))]
    dropped = [c for i, c in enumerate(RUN_COLUMNS) if i not in keep and i != status]
    legend = {"GB/s": "GB/s = cost-model bytes / time", "DRAM GB/s": "DRAM GB/s = GPM counter (* throttled)",
              "idle": "idle = GPU idle share of the time (profiler)",
              "roofline": "roofline = predicted floor / measured"}
    notes = [text for col, text in legend.items() if col not in dropped]
    title = f"{cfg.model} on {where} ({cfg.dtype_policy}); " + "; ".join(notes)
    if status not in keep and rows:
        title += "; every point ok"
    if dropped:
        title += f" (n/a for every point, not shown: {', '.join(dropped)})"
    t = TableData(title, [RUN_COLUMNS[i] for i in keep], left=_LEFT & {RUN_COLUMNS[i] for i in keep})
    for r in rows:
        t.add(*(r[i] for i in keep))
    return t


def _moe_facts(p: Point) -> str | None:
    raw = p.raw
    if raw is None or raw.tokens_per_expert_max_over_mean is None:
        return None
    extra = [f"tokens/expert max/mean {raw.tokens_per_expert_max_over_mean:.2f}"]
    if raw.grouped_mm_path is not None:
        extra.append(f"grouped_mm_path {raw.grouped_mm_path}")
    if raw.dropped_fraction is not None:
        extra.append(f"dropped_fraction {raw.dropped_fraction:.3f}")
    if raw.host_syncs is not None:
        extra.append(f"host_syncs {raw.host_syncs}")
    return ", ".join(extra)


# A training step whose busiest expert gets at least twice its share of assignments (worst layer): the dropless
# implementations' busiest GEMM is twice the balanced one, and capacity (factor 1.2-1.25) drops assignments.
IMBALANCE_NOTE = 2.0


def _routing_notes(doc: RunDoc) -> list[str]:
    """What the training steps' learned router did: how imbalanced it was at these fresh weights, and how many
    per-expert row counts (a loop's GEMM shapes) were new in each step."""
    steps = [(p, p.raw) for p in doc.points if p.kind == "e2e" and p.raw is not None and p.routing == "learned"]
    lines = []
    skewed = [(p, r.tokens_per_expert_max_over_mean) for p, r in steps
              if r.tokens_per_expert_max_over_mean is not None and r.tokens_per_expert_max_over_mean >= IMBALANCE_NOTE]
    if skewed:
        worst, ratio = max(skewed, key=lambda pr: pr[1])
        lines.append(f"NOTE: the learned router was up to {ratio:.1f}x imbalanced (busiest expert / mean, worst "
                     f"layer, '{worst.label}') at these fresh weights; a trained router's balance differs (its "
                     "load-balancing loss pushes it toward 1x): `--routing uniform` times the balanced step")
    for p, r in steps:
        rc = r.row_counts
        if p.impl == "loop" and rc is not None and rc.steps > 1:
            later = sorted(rc.new_per_step[1:])
            lines.append(f"{p.label}: {later[len(later) // 2]} of its {rc.expert_gemms_per_step} per-expert row "
                         "counts were new in a step after the first (median), each a GEMM shape the loop meets "
                         "for the first time")
    return lines


def run_notes(doc: RunDoc) -> list[str]:
    """Warnings and the e2e lines a reader wants: MFU, peak memory, optimizer share, MoE routing facts."""
    lines = []
    for p in doc.points:
        if p.status != "ok":
            lines.append(f"{p.label}: {p.status} - {p.error}")
            continue
        raw, d = p.raw, p.derived
        assert raw is not None and d is not None
        if p.kind == "e2e":
            mfu_txt = ", ".join(f"{k} {100 * v:.1f}%" for k, v in d.mfu.items()) if d.mfu else f"{NA} (no GPU profile)"
            peak = raw.peak_memory_bytes
            share = fmt(100 * d.optimizer_share if d.optimizer_share is not None else None, "{:.1f}%")
            lines.append(f"{p.label}: {d.tokens_per_s:,.0f} tokens/s, MFU {mfu_txt}, optimizer "
                         f"{share} of the step, peak memory "
                         + (f"{peak / 2**30:.1f} GiB" if peak else f"{NA} (not measured on the CPU)"))
        elif p.mode == "fwd_bwd" and (facts := _moe_facts(p)):
            lines.append(f"{p.label}: {facts}")
    retried = [p for p in doc.points if p.raw and p.raw.allocator and p.raw.allocator.alloc_retries]
    for p in retried:
        a = p.raw.allocator  # type: ignore[union-attr]
        lines.append(f"WARNING: '{p.label}': the caching allocator freed its cache and retried {a.alloc_retries} "
                     f"allocation(s) in {a.steps} steps (each frees with a device sync): its time includes them")
    lines += _routing_notes(doc)
    throttled = [p for p in doc.points if p.counters and p.counters.throttled]
    if throttled:
        reasons = sorted({r for p in throttled if p.counters for r in p.counters.clock_events})
        lines.append(f"WARNING: clocks were throttled during {len(throttled)} point(s) ({', '.join(reasons)}), "
                     f"e.g. '{throttled[0].label}': their times are not the GPU's steady state")
    counted = [p.counters for p in doc.points if p.counters]
    if counted and all(c.values.get("dram_gbs") is None for c in counted):
        lines.append(f"DRAM GB/s from counters: n/a ({counted[0].reasons.get('dram_gbs', 'unknown')})")
    timed = [p.raw.gpu_time for p in doc.points if p.raw and p.raw.gpu_time]
    if timed and all(g.idle_share is None for g in timed):
        lines.append(f"GPU idle share: n/a ({timed[0].reason})")
    contradicted = inconsistent_points(doc)
    if contradicted:
        first, why = next(iter(contradicted.items()))
        label = doc.points[first].label
        lines.append(f"WARNING: {len(contradicted)} layer points are inconsistent (their fwd_bwd below {TOLERANCE}x "
                     f"its bwd or fwd; e.g. '{label}': {why}): the machine was busy while they ran, so their medians "
                     "are not results (status 'inconsistent'); rerun them on a quiet machine")
    flagged = [(p, p.stats) for p in doc.points if p.stats and p.stats.outliers]
    if flagged:
        worst, ws = max(flagged, key=lambda ps: len(ps[1].outliers) / ps[1].n)
        lines.append(f"{len(flagged)} of {len(doc.points)} points have outlier samples (modified z-score > 3.5; "
                     f"kept in the file, most in '{worst.label}': {len(ws.outliers)} of {ws.n}); medians are "
                     "robust to them, rerun on a quiet machine if the IQR matters")
    return lines


def dist_lines(doc: RunDoc) -> list[str]:
    """A `run --dist` document's per-point lines: bytes and imbalance of each exchange, tokens/s per GPU and in
    total of each training step, the slowest rank and the straggler ratio."""
    lines = []
    for p in doc.points:
        d = p.raw.dist if p.raw is not None else None
        if d is None:
            continue
        if d.bytes_sent_per_rank is not None:
            sent = sum(d.bytes_sent_per_rank) / len(d.bytes_sent_per_rank)
            lines.append(f"{p.label}: {sent / 1e6:,.2f} MB sent per rank, {sent / d.max_median_s / 1e9:.3f} GB/s per "
                         f"rank, rows received max/mean {fmt(d.received_max_over_mean, '{:.2f}')}, slowest rank "
                         f"{d.max_median_s * 1e3:.2f} ms (straggler {d.straggler:.2f})")
        else:
            lines.append(f"{p.label}: {d.tokens_per_s_per_gpu:,.0f} tokens/s per GPU, {d.tokens_per_s_total:,.0f} in "
                         f"total; slowest rank {d.max_median_s * 1e3:.1f} ms, mean {d.mean_median_s * 1e3:.1f} ms "
                         f"(straggler {d.straggler:.2f})")
    return lines
