"""Time each Triton MoE kernel on its own, on the inputs of one real forward/backward (kernels/NOTES.md step 1).

    PYTHONPATH=. python3 tools/profile_moe_kernels.py --model olmoe_1b_7b --tokens 32768
    TRITON_INTERPRET=1 PYTHONPATH=. python3 tools/profile_moe_kernels.py --model moe_tiny --tokens 64 --device cpu

Prints, per launcher (forward: up_gate, down; backward: down_bwd, dx, wgrad W1+W3, wgrad W2), the
median time, its share of the sum, and the TFLOP/s of its matmul work, next to the same work done by
torch._grouped_mm on the permuted rows (where torch has it), so a slow kernel stands out before any change.
"""

from __future__ import annotations

import argparse

import torch

from tpsbench.bench.stats import summarize
from tpsbench.bench.timing import TimingConfig, time_fn
from tpsbench.models import get_model
from tpsbench.nn.experts import make_impl, triton_kernels
from tpsbench.nn.moe import MoEFeedForward


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="olmoe_1b_7b")
    ap.add_argument("--tokens", type=int, default=32768)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--trace", default="", help="comma-separated implementations (triton,grouped,...): then the whole "
                    "MoE layer fwd+bwd of each under the PyTorch profiler, top kernels by GPU time")
    args = ap.parse_args()
    k = triton_kernels()
    spec = get_model(args.model)
    moe = spec.moe
    assert moe is not None
    device = torch.device(args.device)
    dt = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    layer = MoEFeedForward(spec.d_model, moe, device=device)
    x = torch.randn(args.tokens, spec.d_model, device=device).to(dt)
    with torch.no_grad():
        route = layer.router(x.float())
    w1, w3, w2 = (w.detach().to(dt).contiguous() for w in (layer.experts.w1, layer.experts.w3, layer.experts.w2))
    plan = k.route_plan(route.expert_indices, route.expert_weights, route.tokens_per_expert)
    tok, offs = plan.tok, plan.offsets
    rows, d, h, e = tok.numel(), spec.d_model, moe.expert_hidden, moe.num_experts
    out, a, b, hid = k.moe_swiglu_forward(x, plan, w1, w3, w2)
    dout = torch.randn(args.tokens, d, device=device).to(dt)
    cfg = TimingConfig(warmup=2, min_reps=5, min_time_s=0.2 if device.type == "cuda" else 0.0, max_reps=50)

    da, db, _ = k.down_bwd(dout, plan, w2, a, b, "fused")
    chosen = k.down_bwd_variant(dout, plan, w2, a, b)
    gemm = 2.0 * rows * d * h
    # each stage through the kernels' public API (kernels/__init__.py), on the inputs of the forward above
    cases = {
        "route plan": (lambda: k.route_plan(route.expert_indices, route.expert_weights, route.tokens_per_expert),
                       0.0),
        "fwd up_gate": (lambda: k.up_gate(x, plan, w1, w3, save_for_backward=True), 2 * gemm),
        "fwd down (+gather-sum)": (lambda: k.down(hid, plan, w2, args.tokens), gemm),
        # both variants of the dH GEMM + SwiGLU backward; the sum counts the one the backward picks
        "bwd down_bwd fused": (lambda: k.down_bwd(dout, plan, w2, a, b, "fused"), gemm),
        "bwd down_bwd split": (lambda: k.down_bwd(dout, plan, w2, a, b, "split"), gemm),
        "bwd dx (+gather-sum)": (lambda: k.dx(da, db, plan, w1, w3, args.tokens, x.dtype), 2 * gemm),
        "bwd wgrad W1+W3": (lambda: k.wgrad_up_gate(x, da, db, plan, w1.dtype), 2 * gemm),
        "bwd wgrad W2": (lambda: k.wgrad_down(hid, dout, plan, w2.dtype), gemm),
    }
    if hasattr(torch, "_grouped_mm") and device.type == "cuda":
        xs = x[tok.long()]
        offs32 = offs[1:].contiguous()
        cases["grouped_mm x@W1 (reference)"] = (lambda: torch._grouped_mm(xs, w1, offs=offs32), gemm)
        cases["grouped_mm a@W2 (reference)"] = (lambda: torch._grouped_mm(a, w2, offs=offs32), gemm)
    times = {}
    for name, (fn, _) in cases.items():
        times[name] = summarize(time_fn(fn, device=device, config=cfg).samples_s).median
    counted = {n for n in times if "reference" not in n and not (n.startswith("bwd down_bwd") and chosen not in n)}
    total = sum(times[n] for n in counted)
    print(f"{args.model} tokens={args.tokens} rows={rows} d={d} h={h} E={e} dtype={dt}; down_bwd picks {chosen}")
    for name, (_, flops) in cases.items():
        t = times[name]
        share = f"{100 * t / total:5.1f}%" if name in counted else ""
        rate = f"{flops / t / 1e12:8.1f} TFLOP/s" if flops else ""
        print(f"  {name:28s} {t * 1e3:9.3f} ms {share:>6s} {rate}")
    print(f"  {'sum of Triton kernels':28s} {total * 1e3:9.3f} ms")
    del out
    if args.trace:
        trace_layer(args.model, args.tokens, device, args.trace.split(","))


def _wall_per_step(step, device: torch.device, reps: int = 20) -> float:
    import time

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) / reps


def trace_layer(model: str, tokens: int, device: torch.device, impls: list[str], top: int = 14) -> None:
    """Where the layer's GPU time goes: one profiled fwd+bwd (bf16 autocast) after warm-up, per implementation."""
    from torch.profiler import ProfilerActivity, profile

    spec = get_model(model)
    assert spec.moe is not None
    torch.manual_seed(0)
    layer = MoEFeedForward(spec.d_model, spec.moe, device=device)
    x = torch.randn(tokens, spec.d_model, device=device, requires_grad=True)
    dy = torch.randn(tokens, spec.d_model, device=device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    for impl in impls:
        layer.set_impl(make_impl(impl, capacity_factor=spec.moe.capacity_factor))

        def step() -> None:
            # Gradients cleared as the micro benchmark and a training step do (set to None): left in place,
            # every step adds into them, fp32 adds of every parameter that a real step does not run (13
            # adds, 0.72 ms of moe_1b's 3.69 ms GPU time in the first trace, 2026-11-22).
            layer.zero_grad(set_to_none=True)
            x.grad = None
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                y = layer(x)
            y.float().backward(dy)

        for _ in range(3):
            step()
        sync()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            for _ in range(3):
                step()
            sync()
        kernels = [e for e in prof.key_averages() if e.device_type.name == "CUDA" or device.type == "cpu"]
        key = "device_time_total" if device.type == "cuda" else "cpu_time_total"
        kernels.sort(key=lambda e: getattr(e, key), reverse=True)
        total = sum(getattr(e, key) for e in kernels) / 3
        print(f"{model} {impl} tokens={tokens}: GPU kernel time per fwd+bwd {total / 1e3:.3f} ms")
        for e in kernels[:top]:
            t = getattr(e, key) / 3
            print(f"  {t / 1e3:8.3f} ms {100 * t / total:5.1f}%  x{e.count // 3:<4d} {e.key[:90]}")
        # the host side: a layer whose GPU sits idle is waiting for these (self time, per fwd+bwd)
        host = sorted((e for e in prof.key_averages() if e.device_type.name == "CPU"),
                      key=lambda e: e.self_cpu_time_total, reverse=True)
        wall = _wall_per_step(step, device)
        print(f"  host: {sum(e.self_cpu_time_total for e in host) / 3e3:.3f} ms of self CPU time per fwd+bwd "
              f"(profiled); wall time per fwd+bwd unprofiled {wall * 1e3:.3f} ms")
        for e in host[:top]:
            print(f"  {e.self_cpu_time_total / 3e3:8.3f} ms cpu x{e.count // 3:<4d} {e.key[:90]}")


if __name__ == "__main__":
    main()
