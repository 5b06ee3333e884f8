"""MoE expert implementations: the modules behind the registry (tpsbench.impls), one parameter layout, five
stages each.

Every implementation computes the routed-expert part of the MoE layer from the same inputs (token rows
``x: [T, d]``, a :class:`~tpsbench.nn.moe.RouterOutput`) and the same stacked weights
(:class:`~tpsbench.nn.moe.ExpertWeights`), as five stages so that the micro benchmarks can time each:

``permute`` (group token rows by expert) -> ``up_gate`` (``x W1``, ``x W3``) -> ``act``
(``silu(a) * b``) -> ``down`` (``h W2``) -> ``unpermute`` (weight by router probability, sum per token).

* ``loop`` (the registry's baseline for correctness and speed-ups): dropless, one matmul per expert; needs
  the per-expert counts on the host (a GPU->CPU sync per layer).
* ``grouped``: dropless, tokens sorted by expert, ``torch._grouped_mm`` with device-side offsets. On
  compute capability 9.x/10.x with bf16 torch runs a grouped CUTLASS kernel; elsewhere it falls back to
  a per-group loop that copies the offsets to the host. :func:`grouped_mm_path` says which.
* ``capacity``: token dropping (what the users trained with): each expert gets ``C`` slots
  (``C = round_up(cf * T*k/E, 8)``), assignments past ``C`` are dropped, one padded batched matmul.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tpsbench.costmodel import DEFAULT_CAPACITY_FACTOR, capacity_rows
from tpsbench.impls import get_impl


@dataclass
class Permuted:
    """Token rows grouped by expert, and where each row goes back to."""

    rows: torch.Tensor  # [A, d] (loop, grouped) or [E, C, d] (capacity)
    token_index: torch.Tensor  # [A] token of each kept assignment, in row order
    weights: torch.Tensor  # [A] router probability of each kept assignment
    counts: torch.Tensor  # [E] rows per expert (before dropping)
    offsets: torch.Tensor | None = None  # [E] int32 cumulative counts (grouped)
    host_counts: list[int] | None = None  # per-expert counts on the host (loop)
    slots: torch.Tensor | None = None  # [A] flat slot e*C + position (capacity); row of each assignment (triton)
    kept: torch.Tensor | None = None  # number of kept assignments (capacity), a device scalar


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype autocast would run a matmul in (explicit casts for ops autocast does not cover)."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def _sort_by_expert(expert_indices: torch.Tensor, expert_weights: torch.Tensor, *,
                    as_olmo_core: bool = False) -> tuple[torch.Tensor, ...]:
    """Assignments in expert order: a stable sort, or ``as_olmo_core`` OLMo-core's own call
    (``ParallelMLP.indices_and_bins``: ``torch.sort`` of the int32 indices, not stable), which decides which
    assignments an over-full expert drops: the same ones as in the users' model, on the same inputs."""
    k = expert_indices.shape[1]
    flat = expert_indices.flatten()
    order = torch.sort(flat.int())[1].long() if as_olmo_core else torch.argsort(flat, stable=True)
    return order, order // k, expert_weights.flatten()[order], flat[order]


def _dropless_permute(x: torch.Tensor, route) -> Permuted:
    """Every assignment kept: token rows gathered in expert order."""
    _, token_of, weights, _ = _sort_by_expert(route.expert_indices, route.expert_weights)
    return Permuted(rows=x[token_of], token_index=token_of, weights=weights, counts=route.tokens_per_expert)


class ExpertImpl:
    """The routed experts in five stages. ``name`` is the implementation's registry entry
    (tpsbench.impls), which says what the cost model counts and whether the stages can be timed apart."""

    name: str = ""
    fused_router: bool = False  # the MoE layer routes with the fused Triton router (kernels/moe_router.py)

    def __init__(self, *, capacity_factor: float | None = None) -> None:
        """``capacity_factor`` is for implementations that drop tokens; the others ignore it."""

    def permute(self, x: torch.Tensor, route, experts) -> Permuted:
        raise NotImplementedError

    def up_gate(self, p: Permuted, experts) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def act(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return F.silu(a) * b

    def down(self, h: torch.Tensor, p: Permuted, experts) -> torch.Tensor:
        raise NotImplementedError

    def unpermute(self, y: torch.Tensor, p: Permuted, x: torch.Tensor) -> torch.Tensor:
        rows = y.reshape(-1, y.shape[-1])
        weighted = rows * p.weights.unsqueeze(-1).to(rows.dtype)
        return torch.zeros(x.shape, dtype=weighted.dtype, device=x.device).index_add(0, p.token_index, weighted)

    def forward(self, x: torch.Tensor, route, experts) -> torch.Tensor:
        p = self.permute(x, route, experts)
        a, b = self.up_gate(p, experts)
        return self.unpermute(self.down(self.act(a, b), p, experts), p, x)


class LoopExperts(ExpertImpl):
    name = "loop"

    def permute(self, x, route, experts):
        p = _dropless_permute(x, route)
        p.host_counts = p.counts.tolist()  # the host sync this implementation is known for
        return p

    def _per_expert(self, rows: torch.Tensor, p: Permuted) -> list[tuple[int, torch.Tensor]]:
        assert p.host_counts is not None
        chunks = rows.split(p.host_counts)
        return [(e, c) for e, c in enumerate(chunks) if c.shape[0]]

    def up_gate(self, p, experts):
        # unbind once: indexing w1[e] per expert would make autograd build a full-size zero gradient
        # for every expert (E x the weight bytes); unbind's backward stacks the E gradients once.
        w1s, w3s = experts.w1.unbind(0), experts.w3.unbind(0)
        parts = self._per_expert(p.rows, p)
        a = torch.cat([c @ w1s[e] for e, c in parts]) if parts else p.rows.new_zeros(0, experts.w1.shape[2])
        b = torch.cat([c @ w3s[e] for e, c in parts]) if parts else p.rows.new_zeros(0, experts.w3.shape[2])
        return a, b

    def down(self, h, p, experts):
        w2s = experts.w2.unbind(0)
        parts = self._per_expert(h, p)
        return torch.cat([c @ w2s[e] for e, c in parts]) if parts else h.new_zeros(0, experts.w2.shape[2])


def grouped_mm_path(device: torch.device, dtype: torch.dtype) -> str:
    """Which ``torch._grouped_mm`` path runs: ``fast`` (grouped CUTLASS kernel, no host sync) on
    CUDA compute capability 9.x/10.x with bf16, ``fallback`` (per-group loop after copying the offsets
    to the host) elsewhere, ``unavailable`` if this torch has no ``_grouped_mm``."""
    if not hasattr(torch, "_grouped_mm"):
        return "unavailable"
    if device.type == "cuda" and dtype == torch.bfloat16:
        major, _ = torch.cuda.get_device_capability(device)
        if major in (9, 10):
            return "fast"
    return "fallback"


class GroupedExperts(ExpertImpl):
    name = "grouped"

    def permute(self, x, route, experts):
        p = _dropless_permute(x, route)
        p.offsets = torch.cumsum(p.counts, 0).to(torch.int32)
        return p

    @staticmethod
    def _gmm(rows: torch.Tensor, w: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        dt = _compute_dtype(rows)
        if not hasattr(torch, "_grouped_mm"):
            raise RuntimeError("this torch has no torch._grouped_mm; use --impl loop or capacity")
        with torch.autocast(rows.device.type, enabled=False):
            return torch._grouped_mm(rows.to(dt), w.to(dt), offs=offsets)

    def up_gate(self, p, experts):
        assert p.offsets is not None
        return self._gmm(p.rows, experts.w1, p.offsets), self._gmm(p.rows, experts.w3, p.offsets)

    def down(self, h, p, experts):
        assert p.offsets is not None
        return self._gmm(h, experts.w2, p.offsets)


class CapacityExperts(ExpertImpl):
    name = "capacity"

    def __init__(self, *, capacity_factor: float | None = None) -> None:
        self.capacity_factor = capacity_factor or DEFAULT_CAPACITY_FACTOR

    def capacity(self, tokens: int, top_k: int, num_experts: int) -> int:
        return capacity_rows(tokens, top_k, num_experts, self.capacity_factor)

    def permute(self, x, route, experts):
        t, k = route.expert_indices.shape
        e = experts.w1.shape[0]
        cap = self.capacity(t, k, e)
        _, token_of, weights, sorted_expert = _sort_by_expert(route.expert_indices, route.expert_weights,
                                                              as_olmo_core=True)
        counts = route.tokens_per_expert
        starts = torch.cumsum(counts, 0) - counts
        position = torch.arange(sorted_expert.numel(), device=x.device) - starts[sorted_expert]
        keep = position < cap
        # Dropped assignments go to one extra scratch row (index E*C) and get weight 0, instead of being
        # removed with a boolean mask, whose data-dependent size would force a GPU->CPU sync.
        scratch = e * cap
        slots = torch.where(keep, sorted_expert * cap + position, scratch)
        buffer = x.new_zeros(scratch + 1, x.shape[1]).index_copy(0, slots, x[token_of])
        return Permuted(rows=buffer[:scratch].view(e, cap, x.shape[1]), token_index=token_of,
                        weights=torch.where(keep, weights, 0.0), counts=counts, slots=slots, kept=keep.sum())

    def up_gate(self, p, experts):
        return torch.bmm(p.rows, experts.w1), torch.bmm(p.rows, experts.w3)

    def down(self, h, p, experts):
        return torch.bmm(h, experts.w2)

    def unpermute(self, y, p, x):
        assert p.slots is not None
        flat = y.reshape(-1, y.shape[-1])
        rows = torch.cat([flat, flat.new_zeros(1, flat.shape[1])]).index_select(0, p.slots)
        weighted = rows * p.weights.unsqueeze(-1).to(rows.dtype)
        return torch.zeros(x.shape, dtype=weighted.dtype, device=x.device).index_add(0, p.token_index, weighted)


def triton_kernels():
    """The Triton kernels package and its public API (kernels/__init__.py): installed as tpsbench.kernels; in a
    source checkout on PYTHONPATH (e.g. a GPU machine where nothing is installed) the top-level kernels/."""
    try:
        return importlib.import_module("tpsbench.kernels")
    except ModuleNotFoundError:
        return importlib.import_module("kernels")


class TritonExperts(ExpertImpl):
    """Fused router, routing plan and gather -> grouped GEMM -> scatter Triton kernels (kernels/): one pipeline,
    its stages cannot be timed apart."""

    name = "triton"
    fused_router = True

    def permute(self, x, route, experts):
        """The kernels' routing plan as a Permuted (for inspection: forward plans inside the kernels)."""
        plan = triton_kernels().route_plan(route.expert_indices, route.expert_weights, route.tokens_per_expert)
        return Permuted(rows=x, token_index=plan.tok, weights=plan.gate, counts=route.tokens_per_expert,
                        offsets=plan.offsets, slots=plan.row_of)

    def forward(self, x, route, experts):
        moe_swiglu = triton_kernels().moe_swiglu
        dt = _compute_dtype(x)
        with torch.autocast(x.device.type, enabled=False):
            return moe_swiglu(x, route.expert_indices, route.expert_weights, route.tokens_per_expert, experts.w1,
                              experts.w3, experts.w2, dt)


__all__ = ["CapacityExperts", "ExpertImpl", "GroupedExperts", "LoopExperts", "TritonExperts", "grouped_mm_path",
           "make_impl", "triton_kernels"]


def make_impl(name: str, *, capacity_factor: float | None = None) -> ExpertImpl:
    """The module of a registered implementation (tpsbench.impls), by name or alias."""
    spec = get_impl(name)
    impl = spec.resolve_factory()(capacity_factor=capacity_factor)
    if not isinstance(impl, ExpertImpl):
        raise TypeError(f"implementation '{spec.name}': its factory made a {type(impl).__name__}, not an ExpertImpl")
    impl.name = spec.name
    return impl
