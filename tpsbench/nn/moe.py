"""The MoE feed-forward: softmax top-k router with load-balancing and z-loss, routed SwiGLU experts,
optional shared expert.

Expert weights are stacked tensors ``w1, w3: [E, d, h]`` and ``w2: [E, h, d]`` so that every expert
implementation (this file's per-expert loop, and the grouped / capacity / Triton ones that build on
it) shares one parameter layout and can be compared on the same weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tpsbench.models import MoESpec
from tpsbench.nn.layers import SwiGLU


@dataclass(frozen=True, slots=True)
class RouterOutput:
    expert_indices: torch.Tensor  # [T, k] int64
    expert_weights: torch.Tensor  # [T, k] router probabilities of the chosen experts (fp32)
    tokens_per_expert: torch.Tensor  # [E] int64
    lb_loss: torch.Tensor  # scalar, already weighted
    z_loss: torch.Tensor  # scalar, already weighted


class Router(nn.Module):
    """Softmax router (OLMo-core MoERouter, default gating): ``d x E`` weights, no bias."""

    def __init__(self, d_model: int, spec: MoESpec, *, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.num_experts = spec.num_experts
        self.top_k = spec.top_k
        self.lb_loss_weight = spec.lb_loss_weight
        self.z_loss_weight = spec.z_loss_weight
        self.weight = nn.Parameter(torch.empty(spec.num_experts, d_model, device=device))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> RouterOutput:
        logits = F.linear(x, self.weight).float()  # [T, E]
        probs = logits.softmax(dim=-1)
        weights, indices = probs.topk(self.top_k, dim=-1)
        counts = torch.bincount(indices.flatten(), minlength=self.num_experts)
        # Switch-Transformer load-balancing loss: E * sum_e f_e * P_e, f_e the fraction of token-expert
        # assignments to e, P_e the mean router probability of e (Fedus et al. 2021, eq. 4).
        frac = counts.to(probs.dtype) / indices.numel()
        lb = self.lb_loss_weight * self.num_experts * (frac * probs.mean(dim=0)).sum()
        # Router z-loss: mean squared log-sum-exp of the logits (Zoph et al. 2022, ST-MoE eq. 5).
        z = self.z_loss_weight * torch.logsumexp(logits, dim=-1).pow(2).mean()
        return RouterOutput(indices, weights, counts, lb, z)


class ExpertWeights(nn.Module):
    """Stacked SwiGLU expert weights ``w1, w3: [E, d, h]``, ``w2: [E, h, d]``."""

    def __init__(self, d_model: int, spec: MoESpec, *, device: torch.device | str | None = None) -> None:
        super().__init__()
        e, h = spec.num_experts, spec.expert_hidden
        self.w1 = nn.Parameter(torch.empty(e, d_model, h, device=device))
        self.w3 = nn.Parameter(torch.empty(e, d_model, h, device=device))
        self.w2 = nn.Parameter(torch.empty(e, h, d_model, device=device))
        for w in (self.w1, self.w3, self.w2):
            nn.init.normal_(w, std=0.02)


def loop_experts(x: torch.Tensor, route: RouterOutput, experts: ExpertWeights) -> torch.Tensor:
    """Dropless reference: one SwiGLU per expert over the tokens routed to it, outputs weighted by
    router probability and summed back per token. ``x``: ``[T, d]``."""
    k = route.expert_indices.shape[1]
    flat_expert = route.expert_indices.flatten()  # assignment a = token a // k, slot a % k
    order = torch.argsort(flat_expert, stable=True)
    token_of = order // k
    out = torch.zeros_like(x)
    counts = route.tokens_per_expert.tolist()  # host sync: the loop needs Python ints
    # unbind once: indexing w1[e] per expert would make autograd build a full-size zero gradient
    # for every expert (E x the weight bytes); unbind's backward stacks the E gradients once.
    w1s, w3s, w2s = experts.w1.unbind(0), experts.w3.unbind(0), experts.w2.unbind(0)
    start = 0
    for e, n in enumerate(counts):
        if n == 0:
            continue
        sel = order[start:start + n]
        rows = token_of[start:start + n]
        xe = x[rows]
        ye = (F.silu(xe @ w1s[e]) * (xe @ w3s[e])) @ w2s[e]
        w = route.expert_weights.flatten()[sel].unsqueeze(-1).to(ye.dtype)
        out = out.index_add(0, rows, ye * w)
        start += n
    return out


class MoEFeedForward(nn.Module):
    """Router + routed experts (+ shared expert mixed as shared/(k+1) + routed*k/(k+1))."""

    def __init__(self, d_model: int, spec: MoESpec, *, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.router = Router(d_model, spec, device=device)
        self.experts = ExpertWeights(d_model, spec, device=device)
        self.shared = SwiGLU(d_model, spec.shared_hidden, device=device) if spec.shared_hidden else None
        self.aux_loss: torch.Tensor | None = None  # lb + z loss of the last forward
        self.last_tokens_per_expert: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        route = self.router(flat)
        self.aux_loss = route.lb_loss + route.z_loss
        self.last_tokens_per_expert = route.tokens_per_expert.detach()
        routed = loop_experts(flat, route, self.experts)
        if self.shared is not None:
            k = self.spec.top_k
            routed = self.shared(flat) * (1.0 / (k + 1)) + routed * (k / (k + 1))
        return routed.reshape(shape)
