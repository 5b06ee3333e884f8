"""`tpsbench compare`'s views: throughput, MoE/dense ratios, speedups between GPUs, verdicts, speed-ups over the
baseline implementation, other stacks, expected estimates and multi-GPU scaling, each a table with rows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tpsbench.analysis.compare import Comparison
from tpsbench.points import MeasuredPoint
from tpsbench.report.format import fmt, pct
from tpsbench.report.gap import measured_gap_table
from tpsbench.report.tables import TableData


def _throughput_cell(e: MeasuredPoint | None) -> str:
    if e is None:
        return "-"
    if e.status != "ok":
        return e.status
    extra = [pct(e.roofline_fraction)] if e.roofline_fraction is not None else []
    if e.dram_gbs is not None:
        extra.append(f"DRAM {e.dram_gbs:,.0f} GB/s")
    if e.idle_share is not None:
        extra.append(f"idle {pct(e.idle_share)}")
    more = f" ({', '.join(extra)})" if extra else ""
    return fmt(e.tokens_per_s, "{:,.0f}") + more + ("*" if e.throttled else "")


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
                       fmt(x.measured, "{:.2f}x"), fmt(x.predicted, "{:.2f}x"), fmt(excess, "{:.2f}"),
                       fmt(x.moe_dram_gbs, "{:,.0f}"), fmt(x.dense_dram_gbs, "{:,.0f}")])
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
                       f"{x.bandwidth_ratio:.2f}x", fmt(x.calibrated_compute_ratio, "{:.2f}x"),
                       fmt(x.calibrated_bandwidth_ratio, "{:.2f}x"), fmt(x.predicted, "{:.2f}x"),
                       fmt(x.expected, "{:.2f}x"), str(x.finding.verdict), x.finding.evidence])
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
                       fmt(x.expected_tokens_per_s, "{:,.0f}"),
                       pct(err, "{:+.0f}%"), fmt(x.floor_tokens_per_s, "{:,.0f}"), x.basis])
    return t


@dataclass(frozen=True, slots=True)
class View:
    """One table of `compare`: when it is shown (it has rows; ``expected_only``: not under ``--estimate floor``)
    and how it is built from the comparison."""

    name: str
    shown: Callable[[Comparison], bool]
    build: Callable[[Comparison], TableData | list[TableData]]  # a view may be one table per item
    expected_only: bool = False


# `compare`'s tables, in the order they are shown: adding one is one entry here (docs/extending.md)
VIEWS: list[View] = [
    View("throughput", lambda c: True, _throughput_table),
    View("moe/dense ratios", lambda c: bool(c.ratios), _ratio_table),
    View("speedups", lambda c: bool(c.speedups), _speedup_table),
    View("verdicts", lambda c: bool(c.verdicts), _verdict_table),
    View("baseline speed-ups", lambda c: bool(c.baseline_speedups), _baseline_table),
    View("stacks", lambda c: bool(c.stacks), _stack_table),
    View("expected", lambda c: bool(c.expected), _expected_table, expected_only=True),
    View("scaling", lambda c: bool(c.scaling), _scaling_table),
    View("measured gaps", lambda c: bool(c.measured_gaps), lambda c: [measured_gap_table(g) for g in c.measured_gaps],
         expected_only=True),
]


def compare_tables(c: Comparison, *, estimate: str = "expected") -> list[TableData]:
    """The views of a comparison that have rows, in order (``estimate="floor"``: without the expected
    estimates' table)."""
    out: list[TableData] = []
    for v in VIEWS:
        if v.shown(c) and (estimate == "expected" or not v.expected_only):
            built = v.build(c)
            out += built if isinstance(built, list) else [built]
    return out
