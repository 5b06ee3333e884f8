"""Tables of the analyses (compare, explain, check), rendered for the terminal (rich) or as markdown.

Each view is built once as a :class:`TableData` (title, columns, rows of strings); the two renderers only
lay it out, so the terminal and the markdown report always show the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.table import Table

from tpsbench.analysis.check import CONFIDENCE, CheckReport, Outcome
from tpsbench.analysis.compare import Comparison
from tpsbench.analysis.explain import Explanation
from tpsbench.analysis.points import Entry


@dataclass(slots=True)
class TableData:
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    left: set[str] = field(default_factory=set)  # left-aligned columns (the rest are numbers)


def to_rich(td: TableData) -> Table:
    t = Table(title=td.title)
    for c in td.columns:
        t.add_column(c, justify="left" if c in td.left else "right")
    for r in td.rows:
        t.add_row(*r)
    return t


def to_markdown(td: TableData) -> str:
    def cell(s: str) -> str:
        return s.replace("|", "\\|")

    lines = [f"**{td.title}**", "", "| " + " | ".join(td.columns) + " |",
             "|" + "|".join(":---" if c in td.left else "---:" for c in td.columns) + "|"]
    lines += ["| " + " | ".join(cell(x) for x in r) + " |" for r in td.rows]
    return "\n".join(lines) + "\n"


def _f(x: float | None, fmt: str) -> str:
    return "n/a" if x is None else fmt.format(x)


def _pct(x: float | None) -> str:
    return _f(None if x is None else 100 * x, "{:.0f}%")


# --- compare -------------------------------------------------------------------------------------------
def _throughput_cell(e: Entry | None) -> str:
    if e is None:
        return "-"
    if e.status != "ok":
        return e.status
    extra = [_pct(e.roofline_fraction)] if e.roofline_fraction is not None else []
    if e.dram_gbs is not None:
        extra.append(f"DRAM {e.dram_gbs:,.0f} GB/s")
    if e.idle_share is not None:
        extra.append(f"idle {_pct(e.idle_share)}")
    more = f" ({', '.join(extra)})" if extra else ""
    return _f(e.tokens_per_s, "{:,.0f}") + more + ("*" if e.throttled else "")


def _throughput_table(c: Comparison) -> TableData:
    gpus = [g.name for g in c.gpus]
    t = TableData("Throughput: tokens/s (share of the roofline floor reached, DRAM GB/s from counters, GPU idle "
                  "share; * = throttled clocks)",
                  ["point", *gpus], left={"point"})
    for row in c.throughput:
        t.rows.append([row.label, *(_throughput_cell(row.per_gpu.get(g)) for g in gpus)])
    return t


def _ratio_table(c: Comparison) -> TableData:
    r = TableData("MoE vs dense on each GPU: how many times slower the MoE is (time ratio; > 1: MoE slower)",
                  ["gpu", "dense", "MoE", "impl", "tokens", "compiled", "measured", "roofline",
                   "measured / roofline",
                   "MoE DRAM GB/s", "dense DRAM GB/s"], left={"gpu", "dense", "MoE", "impl", "compiled"})
    for x in c.ratios:
        excess = x.measured / x.predicted if x.measured is not None and x.predicted else None
        r.rows.append([x.gpu, x.dense, x.moe, x.impl, f"{x.tokens:,}", "yes" if x.compiled else "no",
                       _f(x.measured, "{:.2f}x"), _f(x.predicted, "{:.2f}x"), _f(excess, "{:.2f}"),
                       _f(x.moe_dram_gbs, "{:,.0f}"), _f(x.dense_dram_gbs, "{:,.0f}")])
    return r


def _speedup_table(c: Comparison) -> TableData:
    s = TableData("Speedup between GPUs, next to what each explanation predicts (compute and bandwidth: datasheet "
                  "ratios, then the ratios of the ceilings `calibrate` measured; roofline: the floors' ratio; "
                  "expected: the expected-time model's)",
                  ["point", "from", "to", "measured", "compute", "bandwidth", "compute (cal.)", "bandwidth (cal.)",
                   "roofline", "expected", "verdict", "evidence"],
                  left={"point", "from", "to", "verdict", "evidence"})
    for x in c.speedups:
        s.rows.append([x.label, x.from_gpu, x.to_gpu, f"{x.speedup:.2f}x", f"{x.compute_ratio:.2f}x",
                       f"{x.bandwidth_ratio:.2f}x", _f(x.calibrated_compute_ratio, "{:.2f}x"),
                       _f(x.calibrated_bandwidth_ratio, "{:.2f}x"), _f(x.predicted, "{:.2f}x"),
                       _f(x.expected, "{:.2f}x"), str(x.finding.verdict), x.finding.evidence])
    return s


def _verdict_table(c: Comparison) -> TableData:
    v = TableData("Verdict per workload (evidence: profiler idle time, DRAM and tensor use while busy)",
                  ["gpu", "point", "verdict", "evidence"], left={"gpu", "point", "verdict", "evidence"})
    for x in c.verdicts:
        v.rows.append([x.gpu, x.label, str(x.finding.verdict), x.finding.evidence])
    return v


def _baseline_table(c: Comparison) -> TableData:
    base = c.baseline_speedups[0].baseline_impl
    b = TableData(f"Speed-up over the baseline implementation ({base}) on the same point "
                  "(baseline time / time; > 1: faster)",
                  ["gpu", "point", "median ms", f"{base} ms", "speed-up"], left={"gpu", "point"})
    for x in c.baseline_speedups:
        b.rows.append([x.gpu, x.label, f"{x.median_s * 1e3:.3f}", f"{x.baseline_median_s * 1e3:.3f}",
                       f"{x.speedup:.2f}x"])
    return b


def _stack_table(c: Comparison) -> TableData:
    t = TableData("The users' stack next to tpsbench's: the same training step or layer, model, GPU and batch "
                  "(tokens/s; ratio > 1: the other stack is slower)",
                  ["gpu", "point (tpsbench)", "stack", "tpsbench tokens/s", "stack tokens/s", "ratio"],
                  left={"gpu", "point (tpsbench)", "stack"})
    for x in c.stacks:
        t.rows.append([x.gpu, x.label, x.stack, f"{x.tokens_per_s:,.0f}", f"{x.stack_tokens_per_s:,.0f}",
                       f"{x.ratio:.2f}x"])
    return t


def _scaling_table(c: Comparison) -> TableData:
    t = TableData("Scaling: a training step on several GPUs (run --dist) against the same step on one (tokens/s "
                  "per GPU; efficiency 100% = linear)", ["gpu", "point", "per GPU", "one GPU", "efficiency"],
                  left={"gpu", "point"})
    for x in c.scaling:
        t.rows.append([x.gpu, x.label, f"{x.per_gpu_tokens_per_s:,.0f}", f"{x.single_tokens_per_s:,.0f}",
                       f"{100 * x.efficiency:.0f}%"])
    return t


def _expected_table(c: Comparison) -> TableData:
    t = TableData("Training steps against the expected estimate (tpsbench.estimate; error = expected time / "
                  "measured - 1)",
                  ["gpu", "point", "measured tokens/s", "expected tokens/s", "error", "floor tokens/s", "efficiencies"],
                  left={"gpu", "point", "efficiencies"})
    for x in c.expected:
        err = x.error
        t.rows.append([x.gpu, x.label, f"{x.measured_tokens_per_s:,.0f}",
                       _f(x.expected_tokens_per_s, "{:,.0f}"),
                       "n/a" if err is None else f"{100 * err:+.0f}%", _f(x.floor_tokens_per_s, "{:,.0f}"), x.basis])
    return t


def compare_tables(c: Comparison, *, estimate: str = "expected") -> list[TableData]:
    """The views of a comparison that have rows, in a fixed order (``estimate="floor"``: without the expected
    estimates' table)."""
    views = [(True, _throughput_table), (bool(c.ratios), _ratio_table), (bool(c.speedups), _speedup_table),
             (bool(c.verdicts), _verdict_table), (bool(c.baseline_speedups), _baseline_table),
             (bool(c.stacks), _stack_table), (bool(c.expected) and estimate == "expected", _expected_table),
             (bool(c.scaling), _scaling_table)]
    return [build(c) for present, build in views if present]


# --- explain -------------------------------------------------------------------------------------------
def explain_tables(e: Explanation, *, estimate: str = "expected") -> list[TableData]:
    expected = estimate == "expected"
    cols = ["row", "model", "gpu", "impl", "tokens", "measured", "roofline bound", "share of bound"]
    cols += ["expected", "measured / expected", "memory"] if expected else []
    rows = TableData("Measured tokens/s against the roofline bound (its floor of the step time)"
                     + (" and the expected estimate" if expected else ""),
                     [*cols, "tensor use", "DRAM use (min)", "verdict"], left={"model", "gpu", "impl", "verdict"})
    for r in e.rows:
        cells = [str(r.m.row), r.m.model.name, r.m.profile.name, r.m.impl, f"{r.m.tokens:,}",
                 f"{r.m.tokens_per_s:,.0f}", f"{r.predicted_tokens_per_s:,.0f}", _pct(r.fraction_of_bound)]
        if expected:
            x = r.expected_tokens_per_s
            fits = None if r.limits is None else r.limits.estimate.fits
            cells += [_f(x, "{:,.0f}"), "n/a" if x is None else f"{r.m.tokens_per_s / x:.2f}",
                      "n/a" if fits is None else ("fits" if fits else "does not fit")]
        rows.rows.append([*cells, _pct(r.tensor_util), _pct(r.bw_util), str(r.finding.verdict)])
    out = [rows]
    if e.speedups:
        s = TableData("Speedups between GPUs", ["model", "impl", "from", "to", "measured", "compute", "bandwidth",
                                                "roofline", "expected", "verdict", "evidence"],
                      left={"model", "impl", "from", "to", "verdict", "evidence"})
        for x in e.speedups:
            s.rows.append([x.model, x.impl, x.from_gpu, x.to_gpu, f"{x.speedup:.2f}x", f"{x.compute_ratio:.2f}x",
                           f"{x.bandwidth_ratio:.2f}x", f"{x.predicted:.2f}x",
                           "n/a" if x.expected is None else f"{x.expected:.2f}x", str(x.finding.verdict),
                           x.finding.evidence])
        out.append(s)
        lim = TableData("What does not scale, by the expected-time model", ["model", "impl", "GPU limits"],
                        left={"model", "impl", "GPU limits"})
        seen: set[tuple[str, str, str]] = set()
        for x in e.speedups:
            for text in x.limits:
                key = (x.model, x.impl, text)
                if key not in seen:
                    seen.add(key)
                    lim.rows.append([x.model, x.impl, text])
        out.append(lim)
    if e.gaps:
        g = TableData("Dense / MoE gap on each GPU (dense tokens/s over MoE tokens/s)",
                      ["gpu", "dense", "MoE", "impl", "measured", "roofline", "unexplained"],
                      left={"gpu", "dense", "MoE", "impl"})
        for x in e.gaps:
            g.rows.append([x.gpu, x.dense, x.moe, x.impl, f"{x.measured:.2f}x", f"{x.predicted:.2f}x",
                           f"{x.excess:.2f}x"])
        out.append(g)
    if e.trends:
        t = TableData("How the gap changes from one GPU to another", ["dense", "MoE", "impl", "from", "to",
                                                                       "measured change", "roofline change"],
                      left={"dense", "MoE", "impl", "from", "to"})
        for x in e.trends:
            t.rows.append([x.dense, x.moe, x.impl, x.from_gpu, x.to_gpu, f"{x.measured_change:.2f}x",
                           f"{x.predicted_change:.2f}x"])
        out.append(t)
    if e.fits:
        f = TableData("Which explanation fits the speedups (RMS error, best first)",
                      ["explanation", "RMS error", "pairs"], left={"explanation"})
        for x in e.fits:
            f.rows.append([x.explanation, f"{100 * x.rms_error:.0f}%", str(x.pairs)])
        out.append(f)
    return out


# --- check ---------------------------------------------------------------------------------------------
def check_table(r: CheckReport) -> TableData:
    t = TableData(f"Regression check: {r.current} vs {r.baseline} (threshold {100 * r.threshold:g}%, interval = "
                  f"{100 * CONFIDENCE:.0f}% bootstrap interval of the change, ratio of medians)",
                  ["point", "metric", "baseline", "current", "change", "interval", "outcome"],
                  left={"point", "metric", "outcome"})
    for x in r.rows:
        fmt = "{:,.0f}" if x.metric == "tokens_per_s" else "{:.4f}"
        change = _f(None if x.change is None else 100 * x.change, "{:+.1f}%")
        interval = "n/a" if x.interval is None else f"{100 * x.interval.low:+.1f}..{100 * x.interval.high:+.1f}%"
        mark = " ✗" if r.counts_as_failure(x) else (" ✓" if x.outcome is Outcome.IMPROVEMENT else "")
        t.rows.append([x.label, x.metric + (" ↑" if x.higher_is_better else " ↓"), _f(x.baseline, fmt),
                       _f(x.current, fmt), change, interval,
                       str(x.outcome) + mark + (f" ({x.detail})" if x.detail else "")])
    return t


def check_summary(r: CheckReport) -> str:
    counts = ", ".join(f"{r.count(o)} {o}" for o in Outcome if r.count(o))
    head = "FAIL" if r.failed else "PASS"
    return f"{head}: {len(r.rows)} points: {counts}"
