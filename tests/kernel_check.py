"""Check the Triton MoE kernels against torch references; a script (run under TRITON_INTERPRET=1 on the
CPU by test_kernels.py) and a module (imported by the GPU tests): the fused router against the torch
Router, the routing plan against a stable argsort, the expert kernels against the per-expert loop.

The routing is computed once in fp32 and fed to both implementations, so they compute the same function;
inputs are rounded to the tested dtype and the reference runs in float64 (CPU) or float32 (GPU) on the
rounded values. Error is ||triton - ref|| / ||ref|| per output and gradient.
"""

from __future__ import annotations

import sys

import torch

from tpsbench.models import MoESpec
from tpsbench.nn.experts import LoopExperts, TritonExperts, triton_kernels
from tpsbench.nn.moe import MoEFeedForward, Router, RouterOutput

TOLERANCE = {torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 2e-2}
CASES = [
    (37, 48, 7, 1, 40, "learned"),
    (50, 32, 16, 4, 24, "learned"),
    (24, 32, 8, 8, 16, "learned"),
    (3, 32, 16, 1, 16, "learned"),
    (45, 40, 9, 4, 28, "skewed"),
]


class _Weights(torch.nn.Module):
    def __init__(self, w1: torch.Tensor, w3: torch.Tensor, w2: torch.Tensor) -> None:
        super().__init__()
        self.w1, self.w3, self.w2 = (torch.nn.Parameter(w.clone()) for w in (w1, w3, w2))


def _run(impl, x, route, weights, grad, dtype):
    xx = x.to(dtype).clone().requires_grad_(True)
    ew = route.expert_weights.to(torch.float64 if dtype == torch.float64 else torch.float32).clone().requires_grad_()
    r = RouterOutput(route.expert_indices, ew, route.tokens_per_expert, route.lb_loss, route.z_loss)
    w = _Weights(*(t.to(dtype) for t in weights))
    out = impl.forward(xx, r, w)
    out.backward(grad.to(out.dtype))
    return {"out": out, "dx": xx.grad, "dgate": ew.grad, "dw1": w.w1.grad, "dw3": w.w3.grad, "dw2": w.w2.grad}


def _run_master(x, route, weights, grad, dtype, master):
    """The kernels on ``master``-dtype leaves (values already rounded to ``dtype``) computing in ``dtype``,
    as under autocast: the output in ``dtype``, every gradient in ``master``."""
    xx = x.to(dtype).to(master).requires_grad_(True)
    ew = route.expert_weights.float().clone().requires_grad_()
    w = [t.to(dtype).to(master).requires_grad_(True) for t in weights]
    out = triton_kernels().moe_swiglu(xx, route.expert_indices, ew, route.tokens_per_expert, *w, dtype)
    assert out.dtype == dtype, out.dtype
    out.backward(grad.to(out.dtype))
    grads = {"dx": xx.grad, "dw1": w[0].grad, "dw3": w[1].grad, "dw2": w[2].grad}
    for name, g in grads.items():
        assert g.dtype == master, f"{name} is {g.dtype}, not the master dtype {master}"
    return {"out": out, "dgate": ew.grad, **grads}


def run_case(tokens: int, d: int, e: int, k: int, h: int, routing: str, dtype: torch.dtype, device: str,
             master: torch.dtype | None = None, down_bwd: str | None = None) -> dict:
    """Triton against the loop reference; ``master``: the Triton run holds its leaves in that dtype and
    computes in ``dtype`` (fp32 master weights under bf16 autocast); ``down_bwd``: the backward's
    dH + SwiGLU-backward variant ("fused" or "split"; None: the one the kernels pick)."""
    with triton_kernels().forced_down_bwd(down_bwd):
        return _run_case(tokens, d, e, k, h, routing, dtype, device, master)


def _run_case(tokens, d, e, k, h, routing, dtype, device, master) -> dict:
    torch.manual_seed(tokens * 100 + e)
    layer = MoEFeedForward(d, MoESpec(num_experts=e, top_k=k, expert_hidden=h, shared_hidden=None)).to(device)
    layer.router.set_routing(routing, skew=1.5, seed=1)
    x = torch.randn(tokens, d, device=device).to(dtype)
    with torch.no_grad():
        route = layer.router(x.float())
    weights = [p.detach().to(dtype) for p in (layer.experts.w1, layer.experts.w3, layer.experts.w2)]
    grad = torch.randn(tokens, d, device=device).to(dtype)
    ref_dtype = torch.float64 if device == "cpu" else torch.float32
    ref = _run(LoopExperts(), x, route, weights, grad, ref_dtype)
    if master is None:
        got = _run(TritonExperts(), x, route, weights, grad, dtype)
        with torch.no_grad():  # the forward-only path (h stored, a and b not) computes the same output
            inference = TritonExperts().forward(x, route, _Weights(*weights))
        assert torch.equal(inference, got["out"].detach()), "forward without autograd differs from the training one"
    else:
        got = _run_master(x, route, weights, grad, dtype, master)
    errors = {}
    for name, r in ref.items():
        g = got[name]
        assert g is not None and g.shape == r.shape, name
        assert torch.isfinite(g).all(), f"{name}: non-finite values"
        denom = r.double().norm().item()
        err = (g.double() - r.double()).norm().item() / denom if denom else g.double().norm().item()
        errors[name] = err
        assert err < TOLERANCE[dtype], f"{name}: relative error {err:.2e} >= {TOLERANCE[dtype]:.0e} in {dtype}"
    return errors


# (tokens, experts, top-k, routing): odd sizes, more experts than assignments (experts with no tokens),
# skewed routing, a BM that does not divide any count.
PLAN_CASES = [(37, 7, 1, "learned"), (50, 16, 4, "skewed"), (24, 8, 8, "uniform"), (3, 32, 2, "learned"),
              (129, 5, 2, "skewed"), (1, 3, 1, "learned")]


def reference_plan(expert_indices: torch.Tensor, expert_weights: torch.Tensor, counts: torch.Tensor,
                   block_m: int) -> dict[str, torch.Tensor]:
    """The routing plan with torch ops: a stable argsort by expert and per-expert row tiles."""
    flat = expert_indices.flatten()
    k = expert_indices.shape[1]
    src = torch.argsort(flat, stable=True)
    row_of = torch.empty_like(src)
    row_of[src] = torch.arange(src.numel())
    offsets = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])
    e = counts.numel()
    tile_e, tile_r = [], []
    for x in range(e):
        for r in range(int(offsets[x]), int(offsets[x + 1]), block_m):
            tile_e.append(x)
            tile_r.append(r)
    bound = -(-src.numel() // block_m) + e
    tile_e += [e] * (bound - len(tile_e))
    tile_r += [0] * (bound - len(tile_r))
    return {"tok": src // k, "gate": expert_weights.flatten()[src].float(), "src": src, "row_of": row_of,
            "offsets": offsets, "tile_e": torch.tensor(tile_e), "tile_r": torch.tensor(tile_r)}


def check_plan(tokens: int, e: int, k: int, routing: str, block_m: int, device: str = "cpu") -> None:
    """route_plan (one Triton launch) equals the torch reference exactly: same order, same tiles."""
    torch.manual_seed(tokens + e)
    layer = MoEFeedForward(8, MoESpec(num_experts=e, top_k=k, expert_hidden=8, shared_hidden=None))
    layer.router.set_routing(routing, skew=1.5, seed=1)
    with torch.no_grad():
        route = layer.router(torch.randn(tokens, 8))
    ind, w, counts = (t.to(device) for t in (route.expert_indices, route.expert_weights, route.tokens_per_expert))
    plan = triton_kernels().route_plan(ind, w, counts, block_m)
    plan = plan._replace(**{f: getattr(plan, f).cpu() for f in plan._fields[:7]})
    ref = reference_plan(route.expert_indices, route.expert_weights, route.tokens_per_expert, block_m)
    assert plan.bound == ref["tile_e"].numel(), (plan.bound, ref["tile_e"].numel())
    for name, want in ref.items():
        got = getattr(plan, name)
        assert torch.equal(got.to(want.dtype), want), f"plan {name} of {tokens, e, k, routing}: {got} != {want}"


# (tokens, d, experts, top-k): odd token counts (a partial last block), E not a power of two, k = E
ROUTER_CASES = [(37, 24, 7, 1), (50, 16, 16, 4), (24, 32, 8, 8), (3, 8, 32, 2), (9, 8, 3, 3)]


def check_router(tokens: int, d: int, e: int, k: int, device: str = "cpu") -> dict[str, float]:
    """The fused router (kernels/moe_router.py) against the torch Router: the same experts and counts
    exactly; weights, both losses and the gradients of x and the router weight to fp32 rounding."""
    torch.manual_seed(tokens * 7 + e)
    router = Router(d, MoESpec(num_experts=e, top_k=k, expert_hidden=8, shared_hidden=None,
                               lb_loss_weight=0.5, z_loss_weight=0.25)).to(device)
    x = torch.randn(tokens, d, device=device)
    dweights = torch.randn(tokens, k, device=device)
    errors: dict[str, float] = {}
    # every term of the loss, then each alone: a term left out gives the kernel no gradient (None) for it
    for terms in (("weights", "lb", "z"), ("weights",), ("lb",), ("z",)):
        errors.update(_check_router_loss(router, x, dweights, terms))
    return errors


def _check_router_loss(router: Router, x: torch.Tensor, dweights: torch.Tensor, terms: tuple[str, ...]):
    results = []
    for fused in (False, True):
        xx = x.clone().requires_grad_(True)
        router.weight.grad = None
        r = router(xx, fused=fused)
        loss = {"weights": (r.expert_weights * dweights).sum(), "lb": 3.0 * r.lb_loss, "z": 5.0 * r.z_loss}
        sum(loss[t] for t in terms).backward()
        results.append({"indices": r.expert_indices, "counts": r.tokens_per_expert, "weights": r.expert_weights,
                        "lb": r.lb_loss, "z": r.z_loss, "dx": xx.grad, "dw": router.weight.grad.clone()})
    ref, got = results
    tokens, e, k = x.shape[0], router.num_experts, router.top_k
    d = x.shape[1]
    for name in ("indices", "counts"):
        assert torch.equal(got[name], ref[name]), f"router {name} of {tokens, d, e, k}: {got[name]} != {ref[name]}"
    errors = {}
    for name in ("weights", "lb", "z", "dx", "dw"):
        r, g = ref[name].double(), got[name].double()
        assert g.shape == r.shape, name
        # A gradient that is zero in exact arithmetic (top-k = E: every f_e = 1/E, lb is constant) is fp32
        # noise in both: compared absolutely below 1e-6.
        errors[name] = (g - r).norm().item() / max(r.norm().item(), 0.1)
        assert errors[name] < 1e-5, f"router {name} of {tokens, d, e, k} {terms}: relative error {errors[name]:.1e}"
    return errors


def main(dtype_name: str) -> None:
    dtype = getattr(torch, dtype_name)
    for rcase in ROUTER_CASES:
        errors = check_router(*rcase)
    print("fused router OK", flush=True)
    for case in PLAN_CASES:
        for block_m in (16, 64):
            check_plan(*case, block_m=block_m)
    print("routing plans OK", flush=True)
    if dtype != torch.float32:
        for case in CASES[:3]:
            errors = run_case(*case, dtype=dtype, device="cpu", master=torch.float32)
            print(case, dtype_name, "fp32 master", {k: f"{v:.1e}" for k, v in errors.items()}, flush=True)
    for case in CASES:
        for variant in ("fused", "split"):
            errors = run_case(*case, dtype=dtype, device="cpu", down_bwd=variant)
            print(case, dtype_name, variant, {k: f"{v:.1e}" for k, v in errors.items()}, flush=True)
    print("ALL OK")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "float32")
