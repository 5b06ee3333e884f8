"""`tpsbench explain`'s tables: measured tokens/s against the roofline bound and the expected estimate, speedups
between GPUs, what does not scale, the dense/MoE gap and how it changes, and which explanation fits."""

from __future__ import annotations

from tpsbench.analysis.explain import Explanation, RowResult
from tpsbench.report.format import NA, fmt, pct
from tpsbench.report.gap import measured_gap_table
from tpsbench.report.tables import TableData


def _memory(r: RowResult) -> str:
    """A measured row ran, so it fit: where the memory model says otherwise, the model is what is wrong."""
    if r.limits is None:
        return NA
    est = r.limits.estimate
    if est.fits:
        return "fits"
    return (f"ran; model overestimates ({est.memory.required_bytes / 1e9:.1f} > {est.usable_bytes / 1e9:.1f} GB)")


def _rows_table(e: Explanation, expected: bool) -> TableData:
    cols = ["row", "model", "gpu", "impl", "tokens", "measured", "roofline bound", "share of bound"]
    cols += ["expected", "measured / expected", "memory"] if expected else []
    rows = TableData("Measured tokens/s against the roofline bound (its floor of the step time)"
                     + (" and the expected estimate" if expected else ""),
                     [*cols, "tensor use", "DRAM use (min)", "verdict"],
                     left={"model", "gpu", "impl", "memory", "verdict"})
    for r in e.rows:
        cells = [str(r.m.row), r.m.model.name, r.m.profile.name, r.m.impl, f"{r.m.tokens:,}",
                 f"{r.m.tokens_per_s:,.0f}", f"{r.predicted_tokens_per_s:,.0f}", pct(r.fraction_of_bound)]
        if expected:
            x = r.expected_tokens_per_s
            cells += [fmt(x, "{:,.0f}"), fmt(None if x is None else r.m.tokens_per_s / x, "{:.2f}"), _memory(r)]
        rows.add(*cells, pct(r.tensor_util), pct(r.bw_util), str(r.finding.verdict))
    return rows


def _speedups_table(e: Explanation) -> TableData:
    s = TableData("Speedups between GPUs", ["model", "impl", "from", "to", "measured", "compute", "bandwidth",
                                            "roofline", "expected", "verdict", "evidence"],
                  left={"model", "impl", "from", "to", "verdict", "evidence"})
    for x in e.speedups:
        s.add(x.model, x.impl, x.from_gpu, x.to_gpu, f"{x.speedup:.2f}x", f"{x.compute_ratio:.2f}x",
              f"{x.bandwidth_ratio:.2f}x", f"{x.predicted:.2f}x", fmt(x.expected, "{:.2f}x"), str(x.finding.verdict),
              x.finding.evidence)
    return s


def _limits_table(e: Explanation) -> TableData:
    lim = TableData("What does not scale, by the expected-time model", ["model", "impl", "GPU limits"],
                    left={"model", "impl", "GPU limits"})
    for model, impl, text in dict.fromkeys((x.model, x.impl, text) for x in e.speedups for text in x.limits):
        lim.add(model, impl, text)
    return lim


def _gaps_table(e: Explanation, expected: bool = True) -> TableData:
    title = "Dense / MoE gap on each GPU (dense tokens/s over MoE tokens/s): measured, "
    title += "expected, the roofline floors'" if expected else "the roofline floors'"
    g = TableData(title + ", and what each leaves out (measured over it)",
                  ["gpu", "dense", "MoE", "impl", "measured",
                   *(["expected", "beyond expected"] if expected else []), "roofline", "beyond roofline"],
                  left={"gpu", "dense", "MoE", "impl"})
    for x in e.gaps:
        modelled = [fmt(x.expected, "{:.2f}x"), fmt(x.beyond_expected, "{:.2f}x")] if expected else []
        g.add(x.gpu, x.dense, x.moe, x.impl, f"{x.measured:.2f}x", *modelled, f"{x.predicted:.2f}x",
              f"{x.excess:.2f}x")
    return g


def _trends_table(e: Explanation) -> TableData:
    t = TableData("How the gap changes from one GPU to another", ["dense", "MoE", "impl", "from", "to",
                                                                   "measured change", "roofline change"],
                  left={"dense", "MoE", "impl", "from", "to"})
    for x in e.trends:
        t.add(x.dense, x.moe, x.impl, x.from_gpu, x.to_gpu, f"{x.measured_change:.2f}x", f"{x.predicted_change:.2f}x")
    return t


def _fits_table(e: Explanation) -> TableData:
    f = TableData("Which explanation fits the speedups (RMS error, best first)", ["explanation", "RMS error", "pairs"],
                  left={"explanation"})
    for x in e.fits:
        f.add(x.explanation, f"{100 * x.rms_error:.0f}%", str(x.pairs))
    return f


def explain_tables(e: Explanation, *, estimate: str = "expected") -> list[TableData]:
    """The tables of an explanation that have rows, in order (``estimate="floor"``: the rows without the
    expected estimate's columns)."""
    extra = [(bool(e.speedups), _speedups_table), (bool(e.speedups), _limits_table),
             (bool(e.gaps), lambda x: _gaps_table(x, estimate == "expected")), (bool(e.trends), _trends_table),
             (bool(e.fits), _fits_table)]
    tables = [_rows_table(e, estimate == "expected"), *(build(e) for present, build in extra if present)]
    if estimate == "expected":
        tables += [measured_gap_table(m) for m in e.measured_gaps]
    return tables
