"""Rendering: rich tables and plain explanations of predictions and registries. No arithmetic here
beyond formatting and grouping of numbers computed elsewhere."""

from __future__ import annotations

import math
from collections import defaultdict

from rich.console import Console
from rich.table import Table

from tpsbench.costmodel import FWD_BWD, FlopConvention
from tpsbench.impls import BRACKETS, moe_impls
from tpsbench.models import ModelSpec
from tpsbench.profiles import GPUProfile
from tpsbench.results.schema import Point, RunDoc
from tpsbench.roofline import Bound, Prediction


def _num(x: float | None, fmt: str = "{:.1f}") -> str:
    return "n/a" if x is None else fmt.format(x)


def models_table(models: list[ModelSpec]) -> Table:
    t = Table(title="Model zoo (parameter counts as OLMo-core counts them)")
    for col in ("model", "OLMo-core", "d", "layers", "heads", "FFN / experts", "total params", "active",
                "active %", "notes"):
        t.add_column(col, justify="right" if col in {"d", "layers", "heads", "total params", "active",
                                                       "active %"} else "left")
    for m in models:
        if m.moe is None:
            ffn = f"SwiGLU h {m.ffn_hidden}"
        else:
            e = m.moe
            shared = f", shared h {e.shared_hidden}" if e.shared_hidden else ""
            ffn = f"{e.num_experts} experts top-{e.top_k}, h {e.expert_hidden}{shared}"
        heads = str(m.n_heads) if m.is_mha else f"{m.n_heads} ({m.kv_heads} kv) x {m.head_dim}"
        t.add_row(m.name, m.olmo_name or "-", str(m.d_model), str(m.n_layers), heads, ffn,
                  f"{m.total_params:,}", f"{m.active_params:,}", f"{100 * m.active_fraction:.1f}", m.note)
    return t


def gpus_table(profiles: list[GPUProfile]) -> Table:
    t = Table(title="GPU profiles (dense peaks; ridge = bf16 FLOP/s / DRAM B/s)")
    for col in ("gpu", "device", "bf16 TFLOP/s", "fp32 TFLOP/s", "DRAM GB/s", "L2 MB", "SMs", "ridge FLOP/B",
                "meas. matmul", "meas. copy GB/s", "meas. ridge"):
        t.add_column(col, justify="left" if col in {"gpu", "device"} else "right")
    for p in profiles:
        mm, cp = p.measured_matmul_tflops, p.measured_copy_gbs
        t.add_row(p.name, p.display_name, f"{p.bf16_tflops.value:g}", f"{p.fp32_tflops.value:g}",
                  f"{p.mem_bandwidth_gbs.value:g}", f"{p.l2_mb.value:g}", f"{p.sm_count.value:g}",
                  f"{p.ridge_flop_per_byte:.0f}", _num(mm.value if mm else None, "{:g}"),
                  _num(cp.value if cp else None, "{:g}"), _num(p.measured_ridge_flop_per_byte, "{:.0f}"))
    return t


def impls_table() -> Table:
    t = Table(title="MoE implementations (tpsbench.impls) and dense brackets")
    for col in ("impl", "aliases", "baseline", "needs GPU", "cost model", "what is counted"):
        t.add_column(col)
    for i in moe_impls():
        counting = i.counting.value + (", capacity padding" if i.pads_to_capacity else "") + (
            ", launches per expert" if i.launches_per_expert else "")
        t.add_row(i.name, ", ".join(i.aliases) or "-", "yes" if i.baseline else "", "yes" if i.needs_gpu else "no",
                  counting, i.description)
    for b in BRACKETS.values():
        t.add_row(b.name, "-", "", "no", "dense SwiGLU", b.description)
    return t


def prediction_table(p: Prediction) -> Table:
    w = p.workload
    title = (f"{w.model.name} on {p.profile.name}: {w.tokens:,} tokens/microbatch, seq {w.seq_len}, "
             f"{w.policy.name}" + (f", impl {w.impl}" if w.model.is_moe else "")
             + f", {p.ceilings.source} ceilings")
    t = Table(title=title)
    for col in ("op", "phase", "kind", "GFLOP", "MB", "FLOP/B", "bound", "pred. ms", "share"):
        t.add_column(col, justify="left" if col in {"op", "phase", "kind", "bound"} else "right")
    total = p.microbatch_step_s
    for r in p.rows:
        op = r.op
        if not (op.flops or op.bytes) and op.eager_bytes is not None:  # eager-only work: nothing in the fused graph
            continue
        name = op.name if op.count == 1 else f"{op.name} x{op.count}"
        bound = r.bound.value if op.bytes or op.flops else "-"
        t.add_row(name, op.phase.value, op.kind.value, f"{op.flops / 1e9:.2f}", f"{op.bytes / 1e6:.1f}",
                  _num(op.intensity), bound, f"{r.seconds * 1e3:.3f}",
                  f"{100 * r.seconds / total:.1f}%" if total else "n/a")
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
    lines = [
        f"fwd {p.seconds(FWD_BWD[0]) * 1e3:.2f} ms, bwd {p.seconds(*FWD_BWD[1:]) * 1e3:.2f} ms, "
        f"optimizer {p.optimizer_s * 1e3:.2f} ms; microbatch step {p.microbatch_step_s * 1e3:.2f} ms = "
        f"{p.tokens_per_s:,.0f} tokens/s",
        f"global batch {p.global_batch_tokens:,} tokens = {p.accumulation_steps} x {w.tokens:,}: step "
        f"{p.global_step_s * 1e3:.1f} ms = {p.global_tokens_per_s:,.0f} tokens/s (optimizer "
        f"{100 * p.optimizer_s / p.global_step_s:.1f}% of the step)",
        "MFU (global batch): " + ", ".join(f"{c.value} {100 * p.mfu(c):.1f}%" for c in FlopConvention),
    ]
    return lines


def summary_table(preds: list[Prediction]) -> Table:
    t = Table(title="Predicted across microbatch sizes (roofline floor: no launch gaps, ops at their ceiling)")
    for col in ("tokens", "step ms", "tokens/s", "global tokens/s", "MFU 6N", "MFU olmo", "MFU exact",
                "memory-bound"):
        t.add_column(col, justify="right")
    for p in preds:
        t.add_row(f"{p.workload.tokens:,}", f"{p.microbatch_step_s * 1e3:.2f}", f"{p.tokens_per_s:,.0f}",
                  f"{p.global_tokens_per_s:,.0f}", *(f"{100 * p.mfu(c):.1f}%" for c in FlopConvention),
                  f"{100 * p.memory_bound_share:.0f}%")
    return t


def print_prediction(console: Console, p: Prediction, *, ops: bool = True) -> None:
    if ops:
        console.print(prediction_table(p))
    for line in totals_lines(p):
        console.print(line, highlight=False, soft_wrap=True)
    for line in memory_bound_explanation(p):
        console.print(line, highlight=False, soft_wrap=True)
    console.print()


def _fmt(x: object, fmt: str) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return fmt.format(x)


RUN_COLUMNS = ("point", "tokens", "mode", "median ms", "IQR %", "outl.", "n", "tokens/s", "TFLOP/s", "GB/s",
               "DRAM GB/s", "idle", "pred. ms", "roofline", "status")
_LEFT = {"point", "mode", "status"}


def _run_row(p: Point) -> list[str]:
    stats, derived, pred, counters = p.stats, p.derived, p.prediction, p.counters
    med = stats.median if stats else None
    iqr = (100 * stats.iqr / stats.median) if stats and stats.median else None
    gpu_time = p.raw.gpu_time if p.raw else None
    idle = gpu_time.idle_share if gpu_time else None
    dram = counters.values.get("dram_gbs") if counters else None
    what = p.layer if p.kind == "micro" else "train step"
    return [what + (f"/{p.impl}" if p.impl else ""), f"{p.tokens:,}", p.mode.removeprefix("stage:"),
            _fmt(med * 1e3 if med else None, "{:.3f}"), _fmt(iqr, "{:.1f}"),
            _fmt(len(stats.outliers) if stats else None, "{}"),
            _fmt(stats.n if stats else None, "{}"), _fmt(derived.tokens_per_s if derived else None, "{:,.0f}"),
            _fmt(derived.achieved_tflops if derived else None, "{:.1f}"),
            _fmt(derived.achieved_gbs if derived else None, "{:.0f}"),
            _fmt(dram, "{:.0f}") + ("*" if counters and counters.throttled else ""),
            _fmt(100 * idle if idle is not None else None, "{:.0f}%"),
            _fmt(pred.predicted_s * 1e3 if pred else None, "{:.3f}"),
            _fmt(100 * pred.achieved_fraction if pred else None, "{:.0f}%"), p.status]


def run_table(doc: RunDoc) -> Table:
    """Summary of a results document: one row per point (a stage's mode is its name). Columns that say nothing
    are left out so the table fits a terminal: one that is n/a for every point (on the CPU: counters, idle time,
    predictions), and status when every point is ok; a value too wide for its column folds onto the next line
    instead of being cut. The file keeps every field."""
    machine, cfg = doc.machine, doc.config
    where = machine.gpu_name or f"CPU ({machine.cpu_count} cores)"
    rows = [_run_row(p) for p in doc.points]
    status = RUN_COLUMNS.index("status")
    keep = [i for i, col in enumerate(RUN_COLUMNS)
            if col == "point" or not rows or (any(r[i] != "n/a" for r in rows) and
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
    t = Table(title=title)
    for i in keep:
        col = RUN_COLUMNS[i]
        t.add_column(col, justify="left" if col in _LEFT else "right", overflow="fold")
    for r in rows:
        t.add_row(*(r[i] for i in keep))
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
    """What the training steps' learned router did: how imbalanced it was at these fresh weights (the H100 moe_1b
    steps: 2.3-4.4x per layer, where the layer benchmark's random inputs give moe_1b 1.52x), and how many per-expert row
    counts (a loop's GEMM shapes) were new in each step."""
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
            mfu_txt = ", ".join(f"{k} {100 * v:.1f}%" for k, v in d.mfu.items()) if d.mfu else "n/a (no GPU profile)"
            peak = raw.peak_memory_bytes
            share = _fmt(100 * d.optimizer_share if d.optimizer_share is not None else None, "{:.1f}%")
            lines.append(f"{p.label}: {d.tokens_per_s:,.0f} tokens/s, MFU {mfu_txt}, optimizer "
                         f"{share} of the step, peak memory {_fmt(peak / 2**30 if peak else None, '{:.1f}')} GiB")
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
    flagged = [(p, p.stats) for p in doc.points if p.stats and p.stats.outliers]
    if flagged:
        worst, ws = max(flagged, key=lambda ps: len(ps[1].outliers) / ps[1].n)
        lines.append(f"{len(flagged)} of {len(doc.points)} points have outlier samples (modified z-score > 3.5; "
                     f"kept in the file, most in '{worst.label}': {len(ws.outliers)} of {ws.n}); medians are "
                     "robust to them, rerun on a quiet machine if the IQR matters")
    return lines


def calibration_table(doc: dict, profile: GPUProfile) -> Table:
    """Measured ceilings next to the profile's datasheet numbers."""
    t = Table(title=f"Calibration of {doc['machine'].get('gpu_name')} against profile {profile.name}")
    for col in ("ceiling", "measured", "where", "datasheet", "measured / datasheet"):
        t.add_column(col, justify="left" if col in {"ceiling", "where"} else "right")
    spec = {"bf16": profile.bf16_tflops.value, "fp16": profile.bf16_tflops.value, "tf32": profile.tf32_tflops.value,
            "fp32": profile.fp32_tflops.value}
    for name, entry in doc["matmul"].items():
        t.add_row(f"{name} matmul TFLOP/s", f"{entry['best_tflops']:.1f}", "x".join(map(str, entry["best_shape"])),
                  f"{spec[name]:g}", f"{entry['best_tflops'] / spec[name]:.2f}")
    bw = profile.mem_bandwidth_gbs.value
    for size, entry in doc["bandwidth"].items():
        for lib in ("torch", "cupy"):
            for kind in ("copy", "triad"):
                val = (entry.get(lib) or {}).get(kind)
                gbs = val["gbs"] if val else None
                ratio = "n/a" if gbs is None or size != "large" else f"{gbs / bw:.2f}"
                calls = entry.get("calls_per_sample", 1)
                how = f", {calls} launches/{'graph' if val.get('launch') == 'cuda_graph' else 'loop'}" if (
                    val and calls > 1) else ""
                reason = "" if val else f": {entry[lib].get('reason')}"
                where = f"{entry['array_bytes'] >> 20} MiB/array{how}{reason}"
                t.add_row(f"{kind} GB/s ({lib}, {size})", _fmt(gbs, "{:.0f}"), where,
                          f"{bw:g}" if size == "large" else "-", ratio)
    ov = doc["sampler_overhead"]
    for name, w in (ov.get("workloads") or {ov["workload"]: ov}).items():
        spread = (f" ({100 * w['min_fraction']:+.2f}..{100 * w['max_fraction']:+.2f}%)"
                  if "min_fraction" in w else "")
        t.add_row("counter sampler overhead", f"{100 * w['overhead_fraction']:+.2f}%", name + spread, "-", "-")
    churn = doc.get("shape_churn") or {}
    for layout, extra in (churn.get("host_new_shape_extra_s") or {}).items():
        same = churn["host_same_shape_s"][layout]
        t.add_row(f"host us per new-shape matmul ({layout})", f"{1e6 * extra:+.1f}",
                  f"{churn['k']}x{churn['n']}, {churn['calls']} calls, vs {1e6 * same:.1f} us repeated", "-", "-")
    return t
