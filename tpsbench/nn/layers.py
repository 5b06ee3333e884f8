"""Llama-style building blocks, shaped like OLMo-core's (same parameters, same names where it matters).

RMSNorm, rotary position embedding, causal SDPA attention with optional (non-head-wise) qk-norm, and
the SwiGLU feed-forward. No bias anywhere, as in the users' configs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """RMSNorm with a learned scale, computed in fp32 and returned in the input dtype."""

    def __init__(self, width: int, eps: float = 1e-5, *, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(width, device=device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.float()).to(x.dtype)


def rope_tables(
    seq_len: int, head_dim: int, theta: float, device: torch.device | str | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables ``[seq_len, head_dim]`` for rotate-half RoPE (Su et al. 2021)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim))
    pos = torch.arange(seq_len, dtype=torch.float32, device=device)
    freqs = torch.outer(pos, inv_freq)
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``x``: ``[batch, heads, seq, head_dim]``."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return (x * cos.to(x.dtype) + rotated * sin.to(x.dtype)).to(x.dtype)


class Attention(nn.Module):
    """Causal self-attention: ``n_heads`` query heads of ``head_dim``, ``n_kv_heads`` key/value heads (grouped-query
    attention when fewer, each shared by ``n_heads / n_kv_heads`` query heads), RoPE, optional qk-norm over the
    whole projection (OLMo-core's default) or over each head (``qk_norm_per_head``, Qwen3's)."""

    def __init__(
        self, d_model: int, n_heads: int, *, qk_norm: bool, rope_theta: float, norm_eps: float = 1e-5,
        n_kv_heads: int | None = None, head_dim: int | None = None, qk_norm_per_head: bool = False,
        qkv_bias: bool = False, device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads or n_heads
        self.head_dim = head_dim or d_model // n_heads
        self.rope_theta = rope_theta
        q_width, kv_width = n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        self.w_q = nn.Linear(d_model, q_width, bias=qkv_bias, device=device)
        self.w_k = nn.Linear(d_model, kv_width, bias=qkv_bias, device=device)
        self.w_v = nn.Linear(d_model, kv_width, bias=qkv_bias, device=device)
        self.w_out = nn.Linear(q_width, d_model, bias=False, device=device)
        self.qk_norm_per_head = qk_norm_per_head
        q_norm_width, k_norm_width = (self.head_dim, self.head_dim) if qk_norm_per_head else (q_width, kv_width)
        self.q_norm = RMSNorm(q_norm_width, norm_eps, device=device) if qk_norm else None
        self.k_norm = RMSNorm(k_norm_width, norm_eps, device=device) if qk_norm else None
        self._rope_cache: dict[tuple[int, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    def _rope(self, seq_len: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (seq_len, device)
        if key not in self._rope_cache:
            self._rope_cache[key] = rope_tables(seq_len, self.head_dim, self.rope_theta, device)
        return self._rope_cache[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        q, k, v = self.w_q(x), self.w_k(x), self.w_v(x)
        if self.q_norm is not None and self.k_norm is not None and not self.qk_norm_per_head:
            q, k = self.q_norm(q), self.k_norm(k)
        q = q.view(b, s, self.n_heads, self.head_dim)
        k, v = (t.view(b, s, self.n_kv_heads, self.head_dim) for t in (k, v))
        if self.q_norm is not None and self.k_norm is not None and self.qk_norm_per_head:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        cos, sin = self._rope(s, x.device)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if self.n_kv_heads == self.n_heads:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # each key/value head serves n_heads / n_kv_heads query heads (torch >= 2.5)
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        return self.w_out(out.transpose(1, 2).reshape(b, s, self.n_heads * self.head_dim))


class SwiGLU(nn.Module):
    """``w2(silu(w1 x) * w3 x)`` (Shazeer 2020), OLMo-core's FeedForward."""

    def __init__(self, d_model: int, hidden: int, *, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.w1 = nn.Linear(d_model, hidden, bias=False, device=device)
        self.w3 = nn.Linear(d_model, hidden, bias=False, device=device)
        self.w2 = nn.Linear(hidden, d_model, bias=False, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))
