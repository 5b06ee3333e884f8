"""Correctness before speed: every expert implementation computes the same function and gradients."""

import pytest
import torch

from tpsbench.impls import baseline, get_impl, moe_impls
from tpsbench.models import MoESpec
from tpsbench.nn.experts import CapacityExperts, LoopExperts, grouped_mm_path, make_impl
from tpsbench.nn.moe import MoEFeedForward


def _run(layer, x, impl, grad_out):
    layer.set_impl(impl)
    layer.zero_grad(set_to_none=True)
    xi = x.detach().clone().requires_grad_(True)
    out = layer(xi)
    (out * grad_out).sum().backward()
    grads = {name: p.grad.detach().clone() for name, p in layer.named_parameters()}
    return out.detach(), xi.grad.detach(), grads


def _compare(a, b, tol=1e-5):
    out_a, gx_a, g_a = a
    out_b, gx_b, g_b = b
    torch.testing.assert_close(out_a, out_b, rtol=tol, atol=tol)
    torch.testing.assert_close(gx_a, gx_b, rtol=tol, atol=tol)
    assert g_a.keys() == g_b.keys()
    for name in g_a:
        torch.testing.assert_close(g_a[name], g_b[name], rtol=tol, atol=tol, msg=name)


CASES = [
    # (tokens, d, experts, top_k, hidden, shared, routing)
    (37, 24, 7, 1, 40, None, "learned"),  # odd token and expert counts
    (50, 32, 16, 4, 12, 20, "learned"),
    (64, 16, 8, 8, 8, None, "learned"),  # top-8: every expert gets every token
    (3, 16, 16, 1, 8, 8, "learned"),  # most experts get zero tokens
    (45, 20, 9, 4, 28, None, "skewed"),
    (48, 24, 6, 2, 12, 12, "uniform"),
]


def assert_matches_baseline(name: str, case: tuple = CASES[1]) -> None:
    """An implementation computes the baseline's function and gradients (tpsbench.impls marks the baseline);
    one that drops tokens gets room for every assignment, so it must drop none."""
    tokens, d, e, k, h, shared, routing = case
    torch.manual_seed(tokens * 1000 + e)
    spec = MoESpec(num_experts=e, top_k=k, expert_hidden=h, shared_hidden=shared)
    layer = MoEFeedForward(d, spec)
    layer.router.set_routing(routing, skew=1.5, seed=3)
    x = torch.randn(tokens, d)
    grad_out = torch.randn(tokens, d)
    ref = _run(layer, x, make_impl(baseline().name), grad_out)
    impl = make_impl(name, capacity_factor=float(e) if get_impl(name).pads_to_capacity else None)
    _compare(ref, _run(layer, x, impl, grad_out))


CPU_IMPLS = [i.name for i in moe_impls() if not i.needs_gpu and not i.baseline]


@pytest.mark.parametrize("name", CPU_IMPLS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"T{c[0]}-E{c[2]}-k{c[3]}-{c[6]}")
def test_every_cpu_implementation_matches_the_baseline_in_fp32(name, case):
    assert_matches_baseline(name, case)


def test_the_baseline_is_the_per_expert_loop():
    assert baseline().name == "loop" and isinstance(make_impl(baseline().name), LoopExperts)
    assert {"grouped", "capacity"} <= set(CPU_IMPLS)  # the GPU-only triton is checked in tests/test_kernels.py


def test_loop_matches_float64_reference():
    torch.manual_seed(0)
    spec = MoESpec(num_experts=5, top_k=2, expert_hidden=12, shared_hidden=None)
    layer = MoEFeedForward(16, spec).double()
    x = torch.randn(21, 16, dtype=torch.float64)
    out = layer(x)
    route = layer.last_route
    ref = torch.zeros_like(x)
    w = layer.experts
    for t in range(21):
        for j in range(2):
            e = int(route.expert_indices[t, j])
            y = (torch.nn.functional.silu(x[t] @ w.w1[e]) * (x[t] @ w.w3[e])) @ w.w2[e]
            ref[t] += route.expert_weights[t, j] * y
    torch.testing.assert_close(out, ref)


def test_capacity_drops_assignments_past_capacity():
    torch.manual_seed(1)
    spec = MoESpec(num_experts=4, top_k=1, expert_hidden=8, shared_hidden=None)
    layer = MoEFeedForward(16, spec)
    layer.router.set_routing("skewed", skew=3.0, seed=0)  # most tokens to expert 0
    impl = CapacityExperts(capacity_factor=1.0)
    layer.set_impl(impl)
    x = torch.randn(64, 16)
    out = layer(x)
    route = layer.last_route
    p = impl.permute(x, route, layer.experts)
    cap = impl.capacity(64, 1, 4)
    assert cap == 16
    kept = int(p.kept)
    assert kept == int(route.tokens_per_expert.clamp(max=cap).sum()) < 64
    # Dropped tokens (sent to the scratch slot E*C) get a zero routed output.
    dropped = set(p.token_index[p.slots == 4 * cap].tolist())
    assert len(dropped) == 64 - kept
    assert all(out[t].abs().max() == 0 for t in dropped)
    assert all(out[t].abs().max() > 0 for t in set(range(64)) - dropped)


def test_uniform_routing_is_balanced():
    spec = MoESpec(num_experts=8, top_k=2, expert_hidden=8, shared_hidden=None)
    layer = MoEFeedForward(16, spec)
    layer.router.set_routing("uniform")
    layer(torch.randn(64, 16))
    counts = layer.last_route.tokens_per_expert
    assert counts.tolist() == [16] * 8
    assert (layer.last_route.expert_indices[:, 0] != layer.last_route.expert_indices[:, 1]).all()


def test_skewed_routing_is_skewed_and_distinct():
    spec = MoESpec(num_experts=16, top_k=4, expert_hidden=8, shared_hidden=None)
    layer = MoEFeedForward(16, spec)
    layer.router.set_routing("skewed", skew=1.2, seed=0)
    layer(torch.randn(512, 16))
    idx = layer.last_route.expert_indices
    assert all(len(set(row.tolist())) == 4 for row in idx)
    counts = layer.last_route.tokens_per_expert.float()
    assert counts.max() / counts.mean() > 2


def test_grouped_path_on_cpu_is_fallback():
    assert grouped_mm_path(torch.device("cpu"), torch.float32) == "fallback"


def test_make_impl_unknown():
    with pytest.raises(ValueError, match="unknown MoE implementation"):
        make_impl("groupd")
