"""Expert parallelism for one MoE layer on ``torch.distributed``: rank r of an expert-parallel group of
N ranks holds experts [r E/N, (r+1) E/N); every rank routes its own tokens with the replicated router, sends
each (token, expert) assignment's row to the rank holding the expert, the experts run there with any registered
implementation (tpsbench.impls), and the outputs come back to be weighted and summed per token.

The exchange is the one torchtitan's and megablocks' expert parallelism use: the per-rank assignment counts
first (``all_to_all_single`` of N integers), copied to the host (a GPU->CPU sync: the split sizes of the next
collective must be host integers), then the rows with uneven splits (``all_to_all_single`` with
``output_split_sizes`` / ``input_split_sizes``, in an autograd function whose backward is the reverse
exchange), and the outputs back the same way.
The list form ``dist.all_to_all`` is not used: gloo lacks it before PyTorch PR #165435.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.distributed as dist
from torch import nn

from tpsbench.models import MoESpec
from tpsbench.nn.experts import ExpertImpl, make_impl
from tpsbench.nn.moe import ExpertWeights, MoEFeedForward, RouterOutput
from tpsbench.options import experts_per_rank


@dataclass(frozen=True, slots=True)
class Exchange:
    """What one dispatch sent and received: the split sizes (host integers) of both directions."""

    send: list[int]  # rows this rank sends to each rank
    recv: list[int]  # rows this rank receives from each rank

    @property
    def received(self) -> int:
        return sum(self.recv)


def exchange_counts(dest: torch.Tensor, group_size: int, group: dist.ProcessGroup | None) -> Exchange:
    """Each rank's assignment count per destination rank, exchanged (one all_to_all of N integers)."""
    send = torch.zeros(group_size, dtype=torch.int64, device=dest.device).scatter_add_(0, dest, torch.ones_like(dest))
    recv = torch.empty_like(send)
    dist.all_to_all_single(recv, send, group=group)
    return Exchange(send.tolist(), recv.tolist())  # the host sync expert parallelism needs


@dataclass(frozen=True, slots=True)
class DispatchPlan:
    """One rank's assignments sorted by destination: their token, router weight and expert on the destination."""

    token: torch.Tensor  # [A] the token of each assignment
    weight: torch.Tensor  # [A] its router probability
    local_expert: torch.Tensor  # [A] its expert's index on the destination rank
    exchange: Exchange


@dataclass(frozen=True, slots=True)
class CastExperts:
    """Expert weights cast for one forward (what the implementations read: ``w1, w3: [E, d, h]``, ``w2: [E, h, d]``)."""

    w1: torch.Tensor
    w3: torch.Tensor
    w2: torch.Tensor


class _AllToAll(torch.autograd.Function):
    """``all_to_all_single`` with uneven splits whose backward is the reverse exchange. torch's own autograd
    versions: ``torch.distributed.nn.functional``'s is deprecated (a FutureWarning on every call in torch 2.13),
    and the functional-collectives one left a C++ thread that aborted gloo processes at exit in 1 of 10 runs
    here; this one uses only ``dist.all_to_all_single``."""

    @staticmethod
    def forward(ctx, rows: torch.Tensor, recv: list[int], send: list[int],  # type: ignore[override]
                group: dist.ProcessGroup) -> torch.Tensor:
        ctx.recv, ctx.send, ctx.group = recv, send, group
        out = rows.new_empty((sum(recv), *rows.shape[1:]))
        dist.all_to_all_single(out, rows.contiguous(), recv, send, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        back = grad.new_empty((sum(ctx.send), *grad.shape[1:]))
        dist.all_to_all_single(back, grad.contiguous(), ctx.send, ctx.recv, group=ctx.group)
        return back, None, None, None


class ExpertParallelMoE(nn.Module):
    """An :class:`~tpsbench.nn.moe.MoEFeedForward` whose routed experts are sharded over ``group``: the router
    and the shared expert are replicated (data-parallel), the experts are this rank's slice."""

    def __init__(self, d_model: int, spec: MoESpec, *, impl: str = "loop", group: dist.ProcessGroup | None = None,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        self.group = group
        self.group_size = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        self.local_experts = experts_per_rank(spec.num_experts, self.group_size)
        self.spec = spec
        # the replicated parts are those of the single-process layer; only the experts are a slice
        self.dense = MoEFeedForward(d_model, spec, impl=impl, device=device)
        self.dense.experts = ExpertWeights(d_model, replace(spec, num_experts=self.local_experts), device=device)
        self.impl: ExpertImpl = make_impl(impl, capacity_factor=spec.capacity_factor)
        self.last_exchange: Exchange | None = None

    @property
    def aux_loss(self) -> torch.Tensor | None:
        """The load-balancing and z-losses of this rank's last forward (of its own tokens)."""
        return self.dense.aux_loss

    def _pg(self) -> dist.ProcessGroup:
        return self.group if self.group is not None else dist.group.WORLD  # type: ignore[return-value]

    @property
    def first_expert(self) -> int:
        return self.rank * self.local_experts

    def load_from(self, full: MoEFeedForward) -> None:
        """Take the weights of a single-process layer: the replicated parts whole, this rank's experts."""
        lo, hi = self.first_expert, self.first_expert + self.local_experts
        with torch.no_grad():
            self.dense.router.weight.copy_(full.router.weight)
            for name in ("w1", "w3", "w2"):
                getattr(self.dense.experts, name).copy_(getattr(full.experts, name)[lo:hi])
            if full.shared is not None and self.dense.shared is not None:
                self.dense.shared.load_state_dict(full.shared.state_dict())

    def plan(self, route: RouterOutput) -> DispatchPlan:
        """This rank's assignments in destination order, and the exchanged counts (the host sync)."""
        k = route.expert_indices.shape[1]
        expert = route.expert_indices.flatten()
        order = torch.argsort(expert, stable=True)  # by expert, hence by destination rank
        expert_sorted = expert[order]
        dest = expert_sorted // self.local_experts
        ex = exchange_counts(dest, self.group_size, self.group)
        self.last_exchange = ex
        return DispatchPlan(order // k, route.expert_weights.flatten()[order],
                            (expert_sorted - dest * self.local_experts).contiguous(), ex)

    def exchange(self, rows: torch.Tensor, recv: list[int], send: list[int]) -> torch.Tensor:
        """Rows to the ranks of their experts (dispatch: ``recv, send``) or back (combine: ``send, recv``), with
        autograd (:class:`_AllToAll`)."""
        return _AllToAll.apply(rows, recv, send, self._pg())

    def routed(self, flat: torch.Tensor, route: RouterOutput) -> torch.Tensor:
        """The routed-expert output ``[T, d]`` of this rank's tokens, computed on the ranks of their experts."""
        p = self.plan(route)
        token, weight, ex = p.token, p.weight, p.exchange
        rows = self.exchange(flat[token], ex.recv, ex.send)
        local = torch.empty(ex.received, dtype=torch.int64, device=flat.device)
        dist.all_to_all_single(local, p.local_expert, ex.recv, ex.send, group=self.group)
        out = self._compute(rows, local)
        back = self.exchange(out, ex.send, ex.recv)
        weighted = back * weight.unsqueeze(-1).to(back.dtype)
        return torch.zeros(flat.shape, dtype=weighted.dtype, device=flat.device).index_add(0, token, weighted)

    def _compute(self, rows: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
        """Each received row through its (local) expert, by the registered implementation: one assignment per
        row, weight 1 (the router's weight is applied where the token lives)."""
        counts = torch.zeros(self.local_experts, dtype=torch.int64, device=rows.device).scatter_add_(
            0, local, torch.ones_like(local))
        zero = rows.new_zeros(())
        route = RouterOutput(local.unsqueeze(-1), torch.ones(len(local), 1, device=rows.device), counts, zero, zero)
        experts = self.dense.experts
        if experts.w1.dtype != rows.dtype and not torch.is_autocast_enabled(rows.device.type):
            # FSDP's mixed precision hands the layer bf16 rows while the experts (expert parallelism's, not FSDP's)
            # stay fp32: computed in the rows' dtype, as autocast would, the gradients flowing back to fp32
            experts = CastExperts(*(w.to(rows.dtype) for w in (experts.w1, experts.w3, experts.w2)))
        return self.impl.forward(rows, route, experts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        route = self.dense.router(flat)
        self.dense.aux_loss = route.lb_loss + route.z_loss
        self.dense.last_route = route
        return self.dense.mix(flat, self.routed(flat, route)).reshape(shape)
