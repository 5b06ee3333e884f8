"""`tpsbench explain`'s tables: measured tokens/s against the roofline bound and the expected estimate, speedups
between GPUs, what does not scale, the dense/MoE gap and how it changes, and which explanation fits."""

from __future__ import annotations

from tpsbench.analysis.explain import Explanation
from tpsbench.report.format import fmt, pct
from tpsbench.report.tables import TableData


def explain_tables(e: Explanation, *, estimate: str = "expected") -> list[TableData]:
    expected = estimate == "expected"
    cols = ["row", "model", "gpu", "impl", "tokens", "measured", "roofline bound", "share of bound"]
    cols += ["expected", "measured / expected", "memory"] if expected else []
    rows = TableData("Measured tokens/s against the roofline bound (its floor of the step time)"
                     + (" and the expected estimate" if expected else ""),
                     [*cols, "tensor use", "DRAM use (min)", "verdict"], left={"model", "gpu", "impl", "verdict"})
    for r in e.rows:
        cells = [str(r.m.row), r.m.model.name, r.m.profile.name, r.m.impl, f"{r.m.tokens:,}",
                 f"{r.m.tokens_per_s:,.0f}", f"{r.predicted_tokens_per_s:,.0f}", pct(r.fraction_of_bound)]
        if expected:
            x = r.expected_tokens_per_s
            fits = None if r.limits is None else r.limits.estimate.fits
            cells += [fmt(x, "{:,.0f}"), "n/a" if x is None else f"{r.m.tokens_per_s / x:.2f}",
                      "n/a" if fits is None else ("fits" if fits else "does not fit")]
        rows.rows.append([*cells, pct(r.tensor_util), pct(r.bw_util), str(r.finding.verdict)])
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
