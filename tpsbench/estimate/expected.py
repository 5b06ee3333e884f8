"""The expected time of a training step or a layer point on a GPU: every op's expected GPU time
(tpsbench.estimate.optime), laid out in the order the step issues its kernels, run through the host/GPU
timeline (tpsbench.estimate.timeline) with the implementation's host synchronisations.

Order of a training step (tpsbench's stack): the autocast weight casts, the embedding, every layer's forward,
the head forward and backward, every layer's backward (its ops in reverse), the embedding backward, the
gradient casts, the optimizer. Host synchronisations: ``loop`` copies the per-expert counts to the host once
per MoE layer forward; ``grouped`` on a GPU without ``torch._grouped_mm``'s fast path (compute capability
other than 9.x/10.x, or a non-bf16 policy) copies the offsets to the host before every grouped GEMM and then
runs one GEMM per expert.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from tpsbench.costmodel import (
    FWD_BWD,
    DTypePolicy,
    OpCost,
    OpKind,
    Phase,
    Workload,
    attention_ops,
    autocast_ops,
    embedding_ops,
    ffn_ops,
    grad_accumulation_bytes,
    head_ops,
    optimizer_ops,
)
from tpsbench.costmodel.cases import layer_case_ops
from tpsbench.costmodel.step import recompute_ops
from tpsbench.estimate.optime import KernelCost, Rates, op_instance_cost
from tpsbench.estimate.table import EfficiencyTable
from tpsbench.estimate.timeline import KernelRun, Sync, Timeline, simulate
from tpsbench.impls import get_impl
from tpsbench.models import ModelSpec
from tpsbench.profiles import GPUProfile
from tpsbench.results.typed import JsonObject
from tpsbench.roofline import ceilings_for, op_time

EXPERT_GEMMS = ("moe.expert_up_gate", "moe.expert_down")


def grouped_mm_fast_path(profile: GPUProfile, matmul_math: str) -> bool:
    """Whether ``torch._grouped_mm`` runs its grouped CUTLASS kernel (no host sync) on this GPU: bf16 on compute
    capability 9.x or 10.x (PyTorch's ``_grouped_mm`` dispatch; tpsbench.nn.experts.grouped_mm_path)."""
    major = profile.compute_capability.split(".", 1)[0]
    return matmul_math == "bf16" and major in ("9", "10")


@dataclass(frozen=True, slots=True)
class OpEstimate:
    op: OpCost
    floor_s: float
    expected_s: float  # GPU time of all its instances
    launches: int  # kernels of all its instances
    bound: str


@dataclass(frozen=True, slots=True)
class Expected:
    """An expected time next to its floor, and how it came about."""

    rows: tuple[OpEstimate, ...]
    timeline: Timeline
    floor_s: float
    compiled: bool
    table: EfficiencyTable
    notes: tuple[str, ...]

    @property
    def seconds(self) -> float:
        return self.timeline.wall_s

    @property
    def uncertainty(self) -> float:
        """Relative spread of the estimate: the table's stated training-step uncertainty."""
        return self.table.step_uncertainty.value

    def to_dict(self) -> JsonObject:
        tl = self.timeline
        return {
            "expected_s": self.seconds, "floor_s": self.floor_s, "compiled": self.compiled,
            "gpu_busy_s": tl.gpu_busy_s, "gpu_idle_s": tl.gpu_idle_s, "gpu_idle_fraction": tl.gpu_idle_fraction,
            "host_s": tl.host_s, "launches": tl.launches, "host_syncs": tl.syncs,
            "relative_uncertainty": self.uncertainty, "efficiency_basis": self.table.basis,
            "efficiency_gpu": self.table.gpu, "notes": list(self.notes),
            "ops": [{"op": r.op.name, "phase": str(r.op.phase), "floor_ms": r.floor_s * 1e3,
                     "expected_gpu_ms": r.expected_s * 1e3, "launches": r.launches, "bound": r.bound}
                    for r in self.rows],
        }


@dataclass(frozen=True, slots=True)
class _Context:
    profile: GPUProfile
    table: EfficiencyTable
    rates: Rates
    compiled: bool
    host_launch_s: float  # autograd's share included
    host_gemm_s: float
    autograd_s: float
    fast_grouped: bool
    impl: str | None


def _context(profile: GPUProfile, table: EfficiencyTable, matmul_math: str, compiled: bool,
             impl: str | None, *, autograd: bool = True) -> _Context:
    if compiled:
        host = table.host_launch_compiled_s.value
    else:
        host = table.host_launch_eager_s.value + (table.host_autograd_s.value if autograd else 0.0)
    gemm = 0.0 if compiled else table.host_gemm_s.value
    autograd = table.host_autograd_s.value if autograd and not compiled else 0.0
    return _Context(profile, table, Rates.of(profile, matmul_math, table), compiled, host, gemm, autograd,
                    grouped_mm_fast_path(profile, matmul_math), impl)


def _grouped_fallback(ctx: _Context, w: Workload, op: OpCost) -> bool:
    return (ctx.impl is not None and get_impl(ctx.impl).grouped_mm and not ctx.fast_grouped
            and op.name in EXPERT_GEMMS and w.model.moe is not None)


def _events(ops: Iterable[OpCost], ctx: _Context, w: Workload | None, costs: dict[int, KernelCost], layers: int
            ) -> list[KernelRun | Sync]:
    """Kernel runs (and syncs) of ``ops`` in the given order, an op's instances in one layer as one run."""
    out: list[KernelRun | Sync] = []
    sync_s = ctx.table.host_sync_s.value
    counts_sync = (ctx.impl is not None and w is not None and w.model.moe is not None
                   and get_impl(ctx.impl).counts_to_host)
    for op in ops:
        cost = costs[id(op)]
        per_layer = max(1, op.count // layers)
        if counts_sync and op.name == "moe.permute" and op.phase is Phase.FWD:
            out.append(Sync("loop: per-expert counts to the host", sync_s))
        if w is not None and _grouped_fallback(ctx, w, op):
            out.append(Sync("grouped_mm fallback: offsets to the host", sync_s))
        host = ctx.host_launch_s + (ctx.host_gemm_s if op.kind is OpKind.MATMUL else 0.0)
        if op.phase is Phase.BWD_WGRAD:  # one autograd node (MmBackward) computes the data and weight gradients
            host -= ctx.autograd_s
        out.append(KernelRun(op.name, cost.launches * per_layer, cost.gpu_s * per_layer, host))
    return out


# tpsbench's compiled step compiles the model (``model.compile()``); the loss (``Transformer.training_loss``'s
# cross-entropy over the fp32 logits) runs outside it, in eager mode (tpsbench/bench/e2e.py).
OUTSIDE_COMPILE = ("head.cross_entropy", "head.z_loss", "head.logits_upcast")


def _cost(op: OpCost, ctx: _Context, w: Workload | None) -> KernelCost:
    if w is not None and _grouped_fallback(ctx, w, op):
        # the fallback's loop: one GEMM per expert and matrix (the op's GEMM groups), each over that expert's rows
        assert op.gemm is not None
        op = replace(op, launches=op.gemm.groups)
    compiled = ctx.compiled and op.name not in OUTSIDE_COMPILE
    return op_instance_cost(op, ctx.rates, ctx.table, compiled=compiled)


def _estimate(ops: list[OpCost], order: list[OpCost], ctx: _Context, w: Workload | None, matmul_math: str, *,
              layers: int, layer_ops: set[int], gpu_head_s: float, notes: list[str], tail: list[OpCost] | None = None,
              repeat: int = 1, between: list[KernelRun] | None = None) -> Expected:
    """``order`` issued ``repeat`` times (microbatches), then ``between`` (gradient accumulation), then ``tail``
    (the optimizer step) once."""
    tail = tail or []
    costs = {id(op): _cost(op, ctx, w) for op in [*ops, *tail]}
    ceil = ceilings_for(ctx.profile, matmul_math)
    rows = []
    for op, times in [*((op, repeat) for op in ops), *((op, 1) for op in tail)]:
        c = costs[id(op)]
        inst = max(op.count, 1)
        rows.append(OpEstimate(op, op_time(op, ceil).seconds * times, c.gpu_s * inst * times,
                               c.launches * inst * times, c.bound))
    events: list[KernelRun | Sync] = []
    i = 0
    while i < len(order):  # a stretch of layer ops is issued once per layer
        if id(order[i]) in layer_ops:
            j = i
            while j < len(order) and id(order[j]) in layer_ops:
                j += 1
            events += _events(order[i:j], ctx, w, costs, layers) * layers
            i = j
        else:
            events += _events([order[i]], ctx, w, costs, 1)
            i += 1
    events = events * repeat + list(between or []) + _events(tail, ctx, w, costs, 1)
    tl = simulate(events, gpu_head_s=gpu_head_s)
    floor = sum(r.floor_s for r in rows) + sum(k.gpu_s for k in between or [])
    return Expected(tuple(rows), tl, floor, ctx.compiled, ctx.table, tuple(notes))


def _fallback_note(ctx: _Context, model: ModelSpec) -> list[str]:
    if model.moe is not None and ctx.impl is not None and get_impl(ctx.impl).grouped_mm and not ctx.fast_grouped:
        return [f"{ctx.impl}: torch._grouped_mm has no fast path on {ctx.profile.name} (compute capability "
                f"{ctx.profile.compute_capability}); modelled as its fallback: offsets copied to the host (a sync) "
                "before each grouped GEMM, then one GEMM per expert"]
    return []


def expected_step(w: Workload, profile: GPUProfile, table: EfficiencyTable, *, compiled: bool = False,
                  accumulation: int = 1) -> Expected:
    """One optimizer step: ``accumulation`` microbatches forward and backward (each later one's gradients added
    into the fp32 .grad, read both and write one, at the DRAM rate), then the optimizer."""
    ctx = _context(profile, table, w.policy.matmul_math, compiled, w.impl if w.model.moe is not None else None)
    layer = [*attention_ops(w), *ffn_ops(w)]
    emb, head, casts, optim = embedding_ops(w), head_ops(w), autocast_ops(w), optimizer_ops(w)
    n = w.model.n_layers
    layer = [op.times(n) for op in layer]
    if w.recompute == "full":
        layer += recompute_ops(layer, w.model)

    def fwd(ops: list[OpCost]) -> list[OpCost]:
        return [op for op in ops if op.phase is Phase.FWD]

    def bwd(ops: list[OpCost]) -> list[OpCost]:
        return [op for op in reversed(ops) if op.phase in (Phase.BWD_DGRAD, Phase.BWD_WGRAD)]

    cast_fwd = [op for op in casts if op.phase is Phase.FWD]
    cast_bwd = [op for op in casts if op.phase is not Phase.FWD]
    order = [*cast_fwd, *fwd(emb), *fwd(layer), *fwd(head), *bwd(head), *bwd(layer), *bwd(emb), *cast_bwd]
    ops = [*emb, *layer, *head, *casts]
    between = []
    if accumulation > 1:  # the 2nd..Ath microbatch add their gradients into .grad (costmodel.grad_accumulation_bytes)
        nbytes = grad_accumulation_bytes(w, accumulation)
        between = [KernelRun("grad_accumulation", accumulation - 1, nbytes / ctx.rates.bandwidth, ctx.host_launch_s)]
    return _estimate(ops, order, ctx, w, w.policy.matmul_math, layers=n, layer_ops={id(op) for op in layer},
                     gpu_head_s=0.0, notes=_fallback_note(ctx, w.model), tail=optim, repeat=accumulation,
                     between=between)


def expected_layer(spec: ModelSpec, layer: str, impl: str | None, tokens: int, mode: str, profile: GPUProfile,
                   table: EfficiencyTable, *, policy: DTypePolicy, attention_backend: str = "flash",
                   capacity_factor: float | None = None, l2_flushed: bool = True) -> Expected:
    """One micro point: a layer forward/backward (or one MoE stage forward), as `run --micro` times it (the L2
    flush before each repetition gives the host that much head start)."""
    stage = mode.startswith("stage:")
    if stage:  # stages run without autocast or autograd, on operands already in the compute dtype
        policy = replace(policy, autocast=False, param_bytes=policy.compute_bytes)
    ops = layer_case_ops(spec, layer, impl, tokens, mode, policy, attention_backend, capacity_factor)
    moe_impl = impl if layer == "moe" else None
    ctx = _context(profile, table, policy.matmul_math, False, moe_impl, autograd=not stage)
    w = Workload(model=spec.with_layers(1), tokens=tokens, seq_len=min(spec.seq_len, tokens),
                 impl=impl or "dropless", capacity_factor=capacity_factor, policy=policy,
                 attention_backend=attention_backend)
    order = [op for op in ops if op.phase is Phase.FWD]
    order += [op for op in reversed(ops) if op.phase in FWD_BWD and op.phase is not Phase.FWD]
    rates = Rates.of(profile, policy.matmul_math, table)
    head = 2 * profile.l2_mb.value * 1e6 / rates.bandwidth if l2_flushed else 0.0
    return _estimate(ops, order, ctx, w if layer == "moe" else None, policy.matmul_math, layers=1,
                     layer_ops=set(), gpu_head_s=head, notes=_fallback_note(ctx, spec) if layer == "moe" else [])

