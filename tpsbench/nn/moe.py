"""The MoE feed-forward: softmax top-k router with load-balancing and z-loss, routed SwiGLU experts
computed by a chosen implementation (:mod:`tpsbench.nn.experts`), optional shared expert.

Expert weights are stacked tensors ``w1, w3: [E, d, h]`` and ``w2: [E, h, d]`` so that every expert
implementation shares one parameter layout and can be compared on the same weights.

Routing modes (a benchmark dimension): ``learned`` (top-k of the router's softmax, router as
initialised), ``uniform`` (perfectly balanced: assignment ``t*k + j`` goes to expert ``(t*k + j) mod E``),
``skewed`` (each token draws k distinct experts with Zipf probabilities ``p_e ~ 1/(e+1)^s``). In every
mode the router runs and its probabilities of the chosen experts weight the outputs, so router costs and
gradients stay in the measurement.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tpsbench.models import MoESpec
from tpsbench.nn.experts import ExpertImpl, make_impl, triton_kernels
from tpsbench.nn.layers import SwiGLU

ROUTING_MODES = ("learned", "uniform", "skewed")
DEFAULT_SKEW = 1.2  # Zipf exponent for --routing skewed


@dataclass(frozen=True, slots=True)
class RouterOutput:
    expert_indices: torch.Tensor  # [T, k] int64
    expert_weights: torch.Tensor  # [T, k] router probabilities of the chosen experts (fp32)
    tokens_per_expert: torch.Tensor  # [E] int64
    lb_loss: torch.Tensor  # scalar, already weighted
    z_loss: torch.Tensor  # scalar, already weighted


def choose_experts(
    probs: torch.Tensor, top_k: int, mode: str, skew: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Expert indices ``[T, k]`` for a routing mode."""
    t, e = probs.shape
    if mode == "learned":
        return probs.topk(top_k, dim=-1).indices
    if mode == "uniform":
        flat = torch.arange(t * top_k, device=probs.device) % e
        return flat.view(t, top_k)
    if mode == "skewed":
        ranks = torch.arange(1, e + 1, device=probs.device, dtype=torch.float32)
        zipf = ranks.pow(-skew)
        return torch.multinomial(zipf.expand(t, e), top_k, replacement=False, generator=generator)
    raise ValueError(f"unknown routing mode '{mode}': choose one of {', '.join(ROUTING_MODES)}")


class Router(nn.Module):
    """Softmax router (OLMo-core MoERouter, default gating): ``d x E`` weights, no bias."""

    def __init__(self, d_model: int, spec: MoESpec, *, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.num_experts = spec.num_experts
        self.top_k = spec.top_k
        self.lb_loss_weight = spec.lb_loss_weight
        self.z_loss_weight = spec.z_loss_weight
        self.weight = nn.Parameter(torch.empty(spec.num_experts, d_model, device=device))
        self.mode = "learned"
        self.skew = DEFAULT_SKEW
        self.seed = 0
        nn.init.normal_(self.weight, std=0.02)

    def set_routing(self, mode: str, skew: float = DEFAULT_SKEW, seed: int = 0) -> None:
        if mode not in ROUTING_MODES:
            raise ValueError(f"unknown routing mode '{mode}': choose one of {', '.join(ROUTING_MODES)}")
        self.mode, self.skew, self.seed = mode, skew, seed

    def _gen(self, device: torch.device) -> torch.Generator | None:
        # Re-seeded every forward: the same skewed routing for every repetition and every implementation.
        if self.mode != "skewed":
            return None
        return torch.Generator(device=device).manual_seed(self.seed)

    def forward(self, x: torch.Tensor, weight: torch.Tensor | None = None, *, fused: bool = False) -> RouterOutput:
        """``weight`` overrides the parameter (stage benchmarks pass a bf16 copy). ``fused``: softmax, top-k,
        histogram and both losses in one Triton kernel (kernels/moe_router.py; learned routing only)."""
        logits = F.linear(x, self.weight if weight is None else weight)  # [T, E]
        if fused and self.mode == "learned":
            return RouterOutput(*triton_kernels().softmax_topk_router(
                logits, self.top_k, self.lb_loss_weight, self.z_loss_weight))
        logits = logits.float()
        probs = logits.softmax(dim=-1)
        indices = choose_experts(probs, self.top_k, self.mode, self.skew, self._gen(x.device))
        weights = probs.gather(1, indices)
        # scatter_add, not bincount: CUDA bincount reads the maximum index on the host (a sync).
        flat = indices.flatten()
        counts = torch.zeros(self.num_experts, dtype=torch.int64, device=x.device).scatter_add_(
            0, flat, torch.ones_like(flat))
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


class MoEFeedForward(nn.Module):
    """Router + routed experts (+ shared expert mixed as shared/(k+1) + routed*k/(k+1), or, gated, as routed +
    sigmoid(gate) * shared)."""

    def __init__(
        self, d_model: int, spec: MoESpec, *, impl: str = "loop", device: torch.device | str | None = None
    ) -> None:
        super().__init__()
        self.spec = spec
        self.router = Router(d_model, spec, device=device)
        self.experts = ExpertWeights(d_model, spec, device=device)
        self.shared = SwiGLU(d_model, spec.shared_hidden, device=device) if spec.shared_hidden else None
        self.shared_gate = nn.Linear(d_model, 1, bias=False, device=device) if spec.shared_gate else None
        self.impl: ExpertImpl = make_impl(impl, capacity_factor=spec.capacity_factor)
        self.aux_loss: torch.Tensor | None = None  # lb + z loss of the last forward
        self.last_route: RouterOutput | None = None

    def set_impl(self, impl: ExpertImpl) -> None:
        self.impl = impl

    def mix(self, flat: torch.Tensor, routed: torch.Tensor) -> torch.Tensor:
        if self.shared is None:
            return routed
        if self.shared_gate is not None:  # Qwen2-MoE: routed + sigmoid(gate) * shared
            return routed + torch.sigmoid(self.shared_gate(flat)) * self.shared(flat)
        k = self.spec.top_k
        return self.shared(flat) * (1.0 / (k + 1)) + routed * (k / (k + 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        route = self.router(flat, fused=self.impl.fused_router)
        self.aux_loss = route.lb_loss + route.z_loss
        self.last_route = route
        routed = self.impl.forward(flat, route, self.experts)
        return self.mix(flat, routed).reshape(shape)
