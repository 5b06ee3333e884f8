"""`tpsbench predict`: the roofline floor of a training step per op, its totals, why ops are memory-bound, the
expected step and the memory verdict next to it, and the floors across microbatch sizes."""

from __future__ import annotations

from collections import defaultdict

from tpsbench.costmodel import FWD_BWD, FlopConvention
from tpsbench.estimate.step import StepEstimate
from tpsbench.report.format import fmt, pct
from tpsbench.report.tables import TableData
from tpsbench.roofline import Bound, Prediction


def prediction_table(p: Prediction) -> TableData:
    w = p.workload
    title = (f"{w.model.name} on {p.profile.name}: {w.tokens:,} tokens/microbatch, seq {w.seq_len}, "
             f"{w.policy.name}" + (f", impl {w.impl}" if w.model.is_moe else "")
             + f", {p.ceilings.source} ceilings")
    t = TableData(title, ["op", "phase", "kind", "GFLOP", "MB", "FLOP/B", "bound", "pred. ms", "share"],
                  left={"op", "phase", "kind", "bound"})
    total = p.microbatch_step_s
    for r in p.rows:
        op = r.op
        if not (op.flops or op.bytes) and op.eager_bytes is not None:  # eager-only work: nothing in the fused graph
            continue
        name = op.name if op.count == 1 else f"{op.name} x{op.count}"
        bound = r.bound.value if op.bytes or op.flops else "-"
        t.add(name, op.phase.value, op.kind.value, f"{op.flops / 1e9:.2f}", f"{op.bytes / 1e6:.1f}",
              fmt(op.intensity), bound, f"{r.seconds * 1e3:.3f}",
              pct(r.seconds / total if total else None, "{:.1f}%"))
    return t


def memory_bound_explanation(p: Prediction) -> list[str]:
    """Which ops the roofline says are memory-bound, and why (intensity below the ridge point)."""
    by_op: dict[str, list] = defaultdict(list)
    fb = [r for r in p.rows if r.op.phase in FWD_BWD]
    total = sum(r.seconds for r in fb)
    for r in fb:
        if r.bound is Bound.MEMORY and r.op.bytes:
            by_op[r.op.name].append(r)
    lines = [
        f"Ridge point {p.ceilings.ridge:.0f} FLOP/B ({p.ceilings.notes}): an op with lower arithmetic "
        f"intensity is limited by DRAM bandwidth. Memory-bound ops take {100 * p.memory_bound_share:.0f}% "
        "of the predicted forward+backward time:"
    ]
    ranked = sorted(by_op.items(), key=lambda kv: -sum(r.seconds for r in kv[1]))
    for name, rows in ranked:
        share = sum(r.seconds for r in rows) / total if total else 0.0
        intens = [r.op.intensity for r in rows if r.op.intensity is not None]
        phases = ", ".join(r.op.phase.value for r in rows)
        lo, hi = min(intens), max(intens)
        rng = f"{lo:.1f}" if abs(hi - lo) < 0.05 else f"{lo:.1f}-{hi:.1f}"
        lines.append(f"  {name:24s} {100 * share:5.1f}%  intensity {rng} FLOP/B  ({phases})")
    return lines


def totals_lines(p: Prediction) -> list[str]:
    w = p.workload
    return [
        f"fwd {p.seconds(FWD_BWD[0]) * 1e3:.2f} ms, bwd {p.seconds(*FWD_BWD[1:]) * 1e3:.2f} ms, "
        f"optimizer {p.optimizer_s * 1e3:.2f} ms; microbatch step {p.microbatch_step_s * 1e3:.2f} ms = "
        f"{p.tokens_per_s:,.0f} tokens/s",
        f"global batch {p.global_batch_tokens:,} tokens = {p.accumulation_steps} x {w.tokens:,}: step "
        f"{p.global_step_s * 1e3:.1f} ms = {p.global_tokens_per_s:,.0f} tokens/s (optimizer "
        f"{100 * p.optimizer_s / p.global_step_s:.1f}% of the step)",
        "MFU (global batch): " + ", ".join(f"{c.value} {100 * p.mfu(c):.1f}%" for c in FlopConvention),
    ]


def summary_table(preds: list[Prediction]) -> TableData:
    impls = len({p.workload.impl for p in preds}) > 1  # an implementation column when several were asked for
    t = TableData("Predicted across microbatch sizes (roofline floor: no launch gaps, ops at their ceiling)",
                  [*(["impl"] if impls else []), "tokens", "step ms", "tokens/s", "global tokens/s", "MFU 6N",
                   "MFU olmo", "MFU exact", "memory-bound"])
    for p in preds:
        t.add(*([p.workload.impl] if impls else []), f"{p.workload.tokens:,}", f"{p.microbatch_step_s * 1e3:.2f}",
              f"{p.tokens_per_s:,.0f}", f"{p.global_tokens_per_s:,.0f}",
              *(f"{100 * p.mfu(c):.1f}%" for c in FlopConvention), f"{100 * p.memory_bound_share:.0f}%")
    return t


def step_estimate_lines(s: StepEstimate) -> list[str]:
    """The expected step and the memory verdict, a few lines (what `predict` prints next to the floor)."""
    lines: list[str] = []
    e = s.expected
    if e is None:
        lines.append(f"expected: n/a ({s.reason})")
    else:
        tl = e.timeline
        lines += [
            f"expected step {e.seconds * 1e3:.2f} ms = {s.tokens / e.seconds:,.0f} tokens/s (+/-"
            f"{100 * e.uncertainty:.0f}%, {'compiled' if e.compiled else 'eager'}); floor {e.floor_s * 1e3:.2f} ms = "
            f"{s.tokens / e.floor_s:,.0f} tokens/s: the floor is {100 * e.floor_s / e.seconds:.0f}% of the expected",
            f"  GPU busy {tl.gpu_busy_s * 1e3:.2f} ms, idle {tl.gpu_idle_s * 1e3:.2f} ms "
            f"({100 * tl.gpu_idle_fraction:.0f}%); host {tl.host_s * 1e3:.2f} ms for {tl.launches:,} kernel launches "
            f"and {tl.syncs} GPU->CPU syncs",
            f"  efficiencies: {e.table.basis} ({e.table.gpu})",
        ]
        lines += [f"  note: {n}" for n in e.notes]
    m = s.memory
    verdict = "fits" if s.fits else "does not fit"
    lines.append(f"memory: peak {m.peak_bytes / 1e9:.1f} GB allocated (parameters and AdamW state "
                 f"{m.parameters_and_state_bytes / 1e9:.1f}, activations {m.activations_bytes / 1e9:.1f}, loss "
                 f"{m.loss_transient_bytes / 1e9:.1f}, bf16 weight copies {m.weight_copies_bytes / 1e9:.1f}) + "
                 f"allocator reserve {m.overhead_bytes / 1e9:.1f} GB on {s.usable_bytes / 1e9:.1f} GB usable: "
                 f"{verdict} on {s.gpu}")
    return lines


def prediction_view(p: Prediction, s: StepEstimate, *, ops: bool, lead: str) -> list[TableData | str]:
    """What `predict` shows of one microbatch size: the expected step and memory verdict first (``lead``
    "expected") or last ("floor"), around the per-op floor table (unless ``ops`` is off), the floor's totals and
    its memory-bound ops."""
    floor: list[TableData | str] = [*([prediction_table(p)] if ops else []), *totals_lines(p),
                                    *memory_bound_explanation(p), ""]
    expected: list[TableData | str] = list(step_estimate_lines(s))
    return expected + floor if lead == "expected" else floor + expected
