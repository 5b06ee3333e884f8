"""Check the Triton MoE kernels against the per-expert loop reference; a script (run under
TRITON_INTERPRET=1 on the CPU by test_kernels.py) and a module (imported by the GPU tests).

The routing is computed once in fp32 and fed to both implementations, so they compute the same function;
inputs are rounded to the tested dtype and the reference runs in float64 (CPU) or float32 (GPU) on the
rounded values. Error is ||triton - ref|| / ||ref|| per output and gradient (device METHOD.md).
"""

from __future__ import annotations

import sys

import torch

from tpsbench.models import MoESpec
from tpsbench.nn.experts import LoopExperts, TritonExperts
from tpsbench.nn.moe import MoEFeedForward, RouterOutput

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


def run_case(tokens: int, d: int, e: int, k: int, h: int, routing: str, dtype: torch.dtype, device: str) -> dict:
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
    got = _run(TritonExperts(), x, route, weights, grad, dtype)
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


def main(dtype_name: str) -> None:
    dtype = getattr(torch, dtype_name)
    for case in CASES:
        errors = run_case(*case, dtype=dtype, device="cpu")
        print(case, dtype_name, {k: f"{v:.1e}" for k, v in errors.items()}, flush=True)
    print("ALL OK")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "float32")
