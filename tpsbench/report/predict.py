"""`tpsbench predict`: the expected step first, with its parts and the ops that cost it most, then the roofline
floor beside it, every line saying which of the two it is; the per-op table with both columns (the expected one,
with the GPU's idle time, sums to the expected step); why ops are memory-bound; the memory verdict; and both
across microbatch sizes."""

from __future__ import annotations

from collections import defaultdict

from tpsbench.costmodel import FWD_BWD, FlopConvention, Phase
from tpsbench.estimate.expected import Expected
from tpsbench.estimate.step import StepEstimate
from tpsbench.estimate.way_out import WayOut
from tpsbench.report.format import fmt, pct
from tpsbench.report.tables import TableData
from tpsbench.roofline import Bound, Prediction

IDLE_ROW = "GPU idle (host-bound gaps)"
TOP_OPS = 3  # the ops named in the summary


def _title(p: Prediction) -> str:
    w = p.workload
    return (f"{w.model.name} on {p.profile.name}: {w.tokens:,} tokens/microbatch, seq {w.seq_len}, "
            f"{w.policy.name}" + (f", impl {w.impl}" if w.model.is_moe else "") + f", {p.ceilings.source} ceilings")


def prediction_table(p: Prediction, e: Expected | None) -> TableData:
    """Every op of the microbatch step: its floor and, when there is an efficiency table, its expected GPU time and
    share of the expected step (the expected column and the idle row sum to the expected step)."""
    expected = e is not None
    t = TableData(_title(p) + (": floor and expected GPU ms per op, share of the expected microbatch step" if expected
                               else ": floor ms per op, share of the floor step"),
                  ["op", "phase", "GFLOP", "MB", "FLOP/B", "bound", "floor ms", *(["expected ms"] if expected else []),
                   "share"], left={"op", "phase", "bound"})
    total = e.seconds if e is not None else p.microbatch_step_s
    estimates = list(e.rows) if e is not None else [None] * len(p.rows)
    for r, x in zip(p.rows, estimates, strict=True):
        op = r.op
        eager_only = not (op.flops or op.bytes) and op.eager_bytes is not None  # nothing in the fused graph
        if eager_only and (x is None or not x.expected_s):
            continue
        name = op.name if op.count == 1 else f"{op.name} x{op.count}"
        bound = r.bound.value if op.bytes or op.flops else "-"
        own = x.expected_s if x is not None else r.seconds
        t.add(name, op.phase.value, f"{op.flops / 1e9:.2f}", f"{op.bytes / 1e6:.1f}",
              fmt(op.intensity), bound, f"{r.seconds * 1e3:.3f}", *([f"{own * 1e3:.3f}"] if expected else []),
              pct(own / total if total else None, "{:.1f}%"))
    if e is not None:
        idle = e.timeline.gpu_idle_s
        t.add(IDLE_ROW, "-", "", "", "", "-", "", f"{idle * 1e3:.3f}", pct(idle / total if total else None, "{:.1f}%"))
    return t


def _phase_ms(values: dict[str, float]) -> str:
    return ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in values.items())


def expected_lines(p: Prediction, s: StepEstimate, g: StepEstimate) -> list[str]:
    """The expected microbatch step, its parts, the ops costing it most, the expected global step."""
    e = s.expected
    if e is None:
        return [f"expected step: n/a ({s.reason})"]
    tl = e.timeline
    by_phase = {"fwd": 0.0, "bwd": 0.0, "optimizer": 0.0}
    for x in e.rows:
        key = "fwd" if x.op.phase is FWD_BWD[0] else "optimizer" if x.op.phase is Phase.OPTIM else "bwd"
        by_phase[key] += x.expected_s
    per_op: dict[str, float] = defaultdict(float)
    for x in e.rows:
        per_op[x.op.name] += x.expected_s
    top = sorted(per_op.items(), key=lambda kv: -kv[1])[:TOP_OPS]
    lines = [
        f"expected step {e.seconds * 1e3:.2f} ms = {s.tokens / e.seconds:,.0f} tokens/s (+/-"
        f"{100 * e.uncertainty:.0f}%, {'compiled' if e.compiled else 'eager'}; efficiency table {e.table.gpu}: "
        f"{e.table.basis})",
        f"  expected GPU time: {_phase_ms(by_phase)}; GPU idle {tl.gpu_idle_s * 1e3:.2f} ms "
        f"({100 * tl.gpu_idle_fraction:.0f}%); host {tl.host_s * 1e3:.2f} ms for {tl.launches:,} kernel launches "
        f"and {tl.syncs} GPU->CPU syncs",
        "  most expected time: " + ", ".join(f"{name} {100 * v / e.seconds:.0f}% ({v * 1e3:.2f} ms)"
                                             for name, v in top),
        *(f"  note: {n}" for n in e.notes),
    ]
    if g.expected is not None:
        lines.append(f"expected global step {g.expected.seconds * 1e3:.1f} ms = {g.tokens / g.expected.seconds:,.0f} "
                     f"tokens/s ({p.accumulation_steps} x {p.workload.tokens:,} tokens, optimizer once)")
    return lines


def floor_lines(p: Prediction, s: StepEstimate) -> list[str]:
    """The roofline floor: every op at its ceiling, no launch gaps (a bound, not a forecast)."""
    w, e = p.workload, s.expected
    versus = "" if e is None else f": {100 * p.microbatch_step_s / e.seconds:.0f}% of the expected"
    return [
        f"floor step {p.microbatch_step_s * 1e3:.2f} ms = {p.tokens_per_s:,.0f} tokens/s (every op at its roofline "
        f"ceiling, no launch gaps){versus}",
        f"  floor: fwd {p.seconds(FWD_BWD[0]) * 1e3:.2f} ms, bwd {p.seconds(*FWD_BWD[1:]) * 1e3:.2f} ms, optimizer "
        f"{p.optimizer_s * 1e3:.2f} ms",
        f"floor global step {p.global_step_s * 1e3:.1f} ms = {p.global_tokens_per_s:,.0f} tokens/s "
        f"({p.accumulation_steps} x {w.tokens:,} tokens, optimizer {100 * p.optimizer_s / p.global_step_s:.1f}% "
        "of it)",
    ]


def mfu_line(p: Prediction, g: StepEstimate) -> str:
    """MFU of the global step at the expected speed and at the floor's, under each FLOP convention."""
    floor = ", ".join(f"{c.value} {100 * p.mfu(c):.1f}%" for c in FlopConvention)
    if g.expected is None:
        return f"MFU (global batch): expected n/a; floor {floor}"
    scale = (g.tokens / g.expected.seconds) / p.global_tokens_per_s  # the same FLOPs at the expected speed
    expected = ", ".join(f"{c.value} {100 * p.mfu(c) * scale:.1f}%" for c in FlopConvention)
    return f"MFU (global batch): expected {expected}; floor {floor}"


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
        "of the floor's forward+backward time:"
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


def summary_table(preds: list[Prediction], estimates: list[StepEstimate]) -> TableData:
    """Expected and floor of the global step across microbatch sizes (and implementations)."""
    impls = len({p.workload.impl for p in preds}) > 1  # an implementation column when several were asked for
    t = TableData("Across microbatch sizes: the global step, expected and floor (every op at its ceiling)",
                  [*(["impl"] if impls else []), "tokens", "expected tokens/s", "floor tokens/s",
                   "MFU olmo expected", "MFU olmo floor", "memory-bound (floor)", "memory"])
    for p, g in zip(preds, estimates, strict=True):
        e = g.expected
        expected_tps = None if e is None else g.tokens / e.seconds
        scale = None if expected_tps is None else expected_tps / p.global_tokens_per_s
        t.add(*([p.workload.impl] if impls else []), f"{p.workload.tokens:,}", fmt(expected_tps, "{:,.0f}"),
              f"{p.global_tokens_per_s:,.0f}", pct(None if scale is None else p.mfu(FlopConvention.OLMO) * scale,
                                                   "{:.1f}%"),
              f"{100 * p.mfu(FlopConvention.OLMO):.1f}%", f"{100 * p.memory_bound_share:.0f}%",
              "fits" if g.fits else "does not fit")
    return t


def memory_line(s: StepEstimate) -> str:
    m = s.memory
    verdict = "fits" if s.fits else "does not fit"
    return (f"expected memory: peak {m.peak_bytes / 1e9:.1f} GB allocated (parameters and AdamW state "
            f"{m.parameters_and_state_bytes / 1e9:.1f}, activations {m.activations_bytes / 1e9:.1f}, loss "
            f"{m.loss_transient_bytes / 1e9:.1f}, bf16 weight copies {m.weight_copies_bytes / 1e9:.1f}) + "
            f"allocator reserve {m.overhead_bytes / 1e9:.1f} GB on {s.usable_bytes / 1e9:.1f} GB usable: "
            f"{verdict} on {s.gpu}")


def does_not_fit_line(s: StepEstimate, ways: list[WayOut]) -> str:
    """The first line of a step that does not fit: by how much, and what would fit instead."""
    head = (f"does not fit: expected memory {s.memory.required_bytes / 1e9:.1f} GB needed, {s.usable_bytes / 1e9:.1f} "
            f"GB usable on {s.gpu}")
    if not ways:
        return head + "; nothing tried fits (a smaller microbatch, --ac full, another implementation, FSDP on 2-8 GPUs)"
    return head + "; what fits: " + "; ".join(
        f"{w.flags} ({w.required_bytes / 1e9:.1f} GB, expected {fmt(w.expected_tokens_per_s, '{:,.0f}')} tokens/s"
        + (" per GPU)" if "--gpus" in w.flags else ")") for w in ways)


def prediction_view(p: Prediction, s: StepEstimate, g: StepEstimate, *, ops: bool, lead: str,
                    ways: list[WayOut] | None = None) -> list[TableData | str]:
    """What `predict` shows of one microbatch size (``s``; ``g`` is the global step of the same): the expected
    step first (``lead`` "expected") or the floor first ("floor"), each labelled, then MFU at both speeds and the
    memory verdict, the per-op table (unless ``ops`` is off) and the memory-bound ops."""
    table: list[TableData | str] = [prediction_table(p, s.expected)] if ops else []
    first: list[TableData | str] = [] if s.fits else [does_not_fit_line(s, ways or [])]
    expected = [*expected_lines(p, s, g), mfu_line(p, g), memory_line(s)]
    floor = [*floor_lines(p, s), *table, *memory_bound_explanation(p)]
    if lead == "expected":
        return [*first, *expected_lines(p, s, g), *floor_lines(p, s), mfu_line(p, g), memory_line(s), *table,
                *memory_bound_explanation(p), ""]
    return [*first, *floor, *expected, ""]
