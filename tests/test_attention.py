"""Grouped-query attention with a free head width and head-wise qk-norm (Qwen3's) against a reference written out
in float64: each key/value head serves its group of query heads, the norm runs over each head's width."""

import math

import pytest
import torch

from tpsbench.nn.layers import Attention, rope_tables


def reference(layer: Attention, x: torch.Tensor) -> torch.Tensor:
    b, s, _ = x.shape
    h, kvh, hd = layer.n_heads, layer.n_kv_heads, layer.head_dim
    x = x.double()
    q, k, v = (x @ w.weight.double().T for w in (layer.w_q, layer.w_k, layer.w_v))

    def rms(t: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + 1e-6) * weight.double()

    assert layer.q_norm is not None and layer.k_norm is not None
    if not layer.qk_norm_per_head:  # over the whole projection, before it is split into heads
        q, k = rms(q, layer.q_norm.weight), rms(k, layer.k_norm.weight)
    q, k, v = q.view(b, s, h, hd), k.view(b, s, kvh, hd), v.view(b, s, kvh, hd)
    if layer.qk_norm_per_head:
        q, k = rms(q, layer.q_norm.weight), rms(k, layer.k_norm.weight)
    cos, sin = (t.double() for t in rope_tables(s, hd, layer.rope_theta, None))
    out = torch.empty(b, s, h, hd, dtype=torch.float64)
    mask = torch.ones(s, s, dtype=torch.bool).tril()
    for head in range(h):
        kv_head = head // (h // kvh)  # query heads 0..h/kvh-1 share key/value head 0, and so on
        qh, kh, vh = q[:, :, head], k[:, :, kv_head], v[:, :, kv_head]
        qh = qh * cos + torch.cat([-qh[..., hd // 2:], qh[..., : hd // 2]], -1) * sin
        kh = kh * cos + torch.cat([-kh[..., hd // 2:], kh[..., : hd // 2]], -1) * sin
        scores = (qh @ kh.transpose(-1, -2)) / math.sqrt(hd)
        out[:, :, head] = scores.masked_fill(~mask, float("-inf")).softmax(-1) @ vh
    return out.reshape(b, s, h * hd) @ layer.w_out.weight.double().T


@pytest.mark.parametrize(("heads", "kv_heads", "head_dim", "per_head"), [(4, 4, 4, False), (8, 2, 8, True),
                                                                         (8, 1, 4, True), (4, 2, 8, False)])
def test_attention_equals_the_reference(heads, kv_heads, head_dim, per_head):
    torch.manual_seed(0)
    d = 16
    layer = Attention(d, heads, qk_norm=True, rope_theta=1e6, norm_eps=1e-6, n_kv_heads=kv_heads, head_dim=head_dim,
                      qk_norm_per_head=per_head)
    with torch.no_grad():
        for norm in (layer.q_norm, layer.k_norm):
            assert norm is not None
            norm.weight.uniform_(0.5, 1.5)  # not ones: a norm over the wrong width would go unseen
    assert layer.w_q.weight.shape == (heads * head_dim, d) and layer.w_k.weight.shape == (kv_heads * head_dim, d)
    x = torch.randn(2, 12, d)
    got = layer(x)
    assert got.shape == (2, 12, d)
    torch.testing.assert_close(got.double(), reference(layer, x), rtol=1e-4, atol=1e-5)


def test_a_norm_over_the_whole_projection_is_not_the_per_head_norm():
    """The control: the same weights with the other qk-norm give a different output (the reference can tell)."""
    torch.manual_seed(0)
    per_head = Attention(16, 8, qk_norm=True, rope_theta=1e6, n_kv_heads=2, head_dim=8, qk_norm_per_head=True)
    x = torch.randn(1, 6, 16)
    whole = Attention(16, 8, qk_norm=True, rope_theta=1e6, n_kv_heads=2, head_dim=8, qk_norm_per_head=False)
    whole.load_state_dict({k: v for k, v in per_head.state_dict().items() if "norm" not in k}, strict=False)
    assert not torch.allclose(per_head(x), whole(x), atol=1e-3)
