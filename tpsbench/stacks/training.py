"""A built training step, ready to time, whatever stack built it: forward and backward of every microbatch, the
optimizer, clearing the gradients; and the MoE routing facts it can report (load balance of the last step)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

from tpsbench.costmodel import DTypePolicy


@dataclass(frozen=True, slots=True)
class RoutingFacts:
    """An MoE point's routing, as measured (the names are the results schema's ``Raw`` fields)."""

    tokens_per_expert_max: float | None = None
    tokens_per_expert_mean: float | None = None
    tokens_per_expert_max_over_mean: float | None = None
    tokens_per_expert_max_over_mean_per_layer: list[float] | None = None
    experts_with_zero_tokens: int | None = None
    grouped_mm_path: str | None = None
    dropped_fraction: float | None = None
    host_syncs: int | None = None


@dataclass(slots=True)
class Training:
    """One stack's training step: ``microbatches`` runs forward and backward of every microbatch,
    ``optimizer_step`` the optimizer (and whatever precedes it: gradient clipping), ``zero_grad`` clears."""

    microbatches: Callable[[], None]
    optimizer_step: Callable[[], None]
    zero_grad: Callable[[], None]
    params: int
    routing: Callable[[], RoutingFacts]
    recipe: dict[str, str] | None = None  # what ran, for stacks other than tpsbench's
    # the MoE layers' per-expert counts of the last forward ([E] tensors, no host sync); None: not known
    expert_counts: Callable[[], list[torch.Tensor]] | None = None


def random_tokens(vocab: int, tokens: int, seq: int, device: torch.device, seed: int) -> tuple[torch.Tensor, ...]:
    """Random token ids and labels (never zeros: id 0 is often padding)."""
    g = torch.Generator(device=device).manual_seed(seed + 1)
    ids = torch.randint(1, vocab, (tokens // seq, seq), generator=g, device=device)
    labels = torch.randint(1, vocab, (tokens // seq, seq), generator=g, device=device)
    return ids, labels


def load_balance(per_layer: list[torch.Tensor]) -> RoutingFacts:
    """Load balance of the last step's routing, over the MoE layers ([E] assignments per expert each)."""
    if not per_layer:
        return RoutingFacts()
    counts = torch.stack([c.float() for c in per_layer])  # [layers, E]
    ratio = counts.max(dim=1).values / counts.mean(dim=1)
    return RoutingFacts(tokens_per_expert_max=float(counts.max()), tokens_per_expert_mean=float(counts.mean()),
                        tokens_per_expert_max_over_mean=float(ratio.max()),
                        tokens_per_expert_max_over_mean_per_layer=[float(v) for v in ratio])


def model_training(model: torch.nn.Module, opt: torch.optim.Optimizer, ids: torch.Tensor, labels: torch.Tensor,
                   accumulation: int, policy: DTypePolicy, device: torch.device, *,
                   after_backward: Callable[[], None] | None = None, recipe: dict[str, str] | None = None) -> Training:
    """The step of a built tpsbench model: ``accumulation`` microbatches under the policy's autocast, then
    ``after_backward`` (a distributed step's gradient reduction), the optimizer, zero_grad."""
    from tpsbench.nn.transformer import moe_layers

    def autocast() -> contextlib.AbstractContextManager[None]:
        return torch.autocast(device.type, dtype=torch.bfloat16) if policy.autocast else contextlib.nullcontext()

    def microbatches() -> None:
        for _ in range(accumulation):
            with autocast():
                loss = model.training_loss(ids, labels)
            (loss / accumulation).backward()
        if after_backward is not None:
            after_backward()

    def expert_counts() -> list[torch.Tensor]:
        return [m.last_route.tokens_per_expert for m in moe_layers(model) if m.last_route is not None]

    return Training(microbatches, opt.step, lambda: opt.zero_grad(set_to_none=True),
                    sum(p.numel() for p in model.parameters()), lambda: load_balance(expert_counts()), recipe,
                    expert_counts)
