"""A full decoder built from a :class:`~tpsbench.models.ModelSpec`, to run what the cost model counts."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from tpsbench.models import ModelSpec
from tpsbench.nn.layers import Attention, RMSNorm, SwiGLU
from tpsbench.nn.moe import MoEFeedForward


def attention_for(spec: ModelSpec, device: torch.device | str | None = None) -> Attention:
    """The attention layer of a model (its heads, key/value heads, head width, biases and qk-norm)."""
    return Attention(spec.d_model, spec.n_heads, qk_norm=spec.qk_norm, rope_theta=spec.rope_theta,
                     norm_eps=spec.norm_eps, n_kv_heads=spec.kv_heads, head_dim=spec.head_dim,
                     qk_norm_per_head=spec.qk_norm_per_head, qkv_bias=spec.qkv_bias, device=device)


class Block(nn.Module):
    """Pre-norm llama block, or OLMo-2's reordered norm (``h = x + norm(f(x))``) when the spec says so."""

    def __init__(self, spec: ModelSpec, *, impl: str = "loop", device: torch.device | str | None = None) -> None:
        super().__init__()
        d = spec.d_model
        self.reordered_norm = spec.reordered_norm
        self.attention = attention_for(spec, device)
        self.attention_norm = RMSNorm(d, spec.norm_eps, device=device)
        if spec.moe is not None:
            self.feed_forward: nn.Module = MoEFeedForward(d, spec.moe, impl=impl, device=device)
        else:
            assert spec.ffn_hidden is not None
            self.feed_forward = SwiGLU(d, spec.ffn_hidden, device=device)
        self.feed_forward_norm = RMSNorm(d, spec.norm_eps, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reordered_norm:
            h = x + self.attention_norm(self.attention(x))
            return h + self.feed_forward_norm(self.feed_forward(h))
        h = x + self.attention(self.attention_norm(x))
        return h + self.feed_forward(self.feed_forward_norm(h))


class Transformer(nn.Module):
    def __init__(self, spec: ModelSpec, *, impl: str = "loop", device: torch.device | str | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.embeddings = nn.Embedding(spec.vocab_size, spec.d_model, device=device)
        self.blocks = nn.ModuleList(Block(spec, impl=impl, device=device) for _ in range(spec.n_layers))
        self.final_norm = RMSNorm(spec.d_model, spec.norm_eps, device=device)
        self.lm_head = nn.Linear(spec.d_model, spec.vocab_size, bias=False, device=device)
        if spec.tie_embeddings:
            self.lm_head.weight = self.embeddings.weight
        # "full": activation checkpointing of every block (torch.utils.checkpoint, non-reentrant): the block keeps
        # only its input and runs its forward again in the backward, as torchtitan's activation_checkpoint "full"
        self.recompute = "none"
        if device is None or torch.device(device).type != "meta":
            self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        # Plain N(0, 0.02) everywhere (OLMo-core's InitMethod.normal); norms keep their ones.
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(input_ids)
        for block in self.blocks:
            if self.recompute == "full" and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.lm_head(self.final_norm(x))

    def aux_loss(self) -> torch.Tensor | None:
        """Sum of the MoE load-balancing and z-losses of the last forward (None for dense models)."""
        # an MoE layer (or its expert-parallel version, tpsbench.distributed.ep) keeps the losses of its last forward
        losses = [b.feed_forward.aux_loss for b in self.blocks
                  if getattr(b.feed_forward, "aux_loss", None) is not None]
        return torch.stack(losses).sum() if losses else None

    def training_loss(self, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = self(input_ids)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten())
        aux = self.aux_loss()
        return loss if aux is None else loss + aux


def build_model(spec: ModelSpec, *, impl: str = "loop", device: torch.device | str | None = None) -> Transformer:
    """The model of ``spec``; ``impl`` picks the MoE expert implementation (ignored for dense models)."""
    return Transformer(spec, impl=impl, device=device)


def moe_layers(model: nn.Module) -> list[MoEFeedForward]:
    return [m for m in model.modules() if isinstance(m, MoEFeedForward)]


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
