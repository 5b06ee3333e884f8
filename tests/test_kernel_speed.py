"""Kernel-speed suite (pytest-benchmark) for a GPU CI: the MoE layer of each zoo MoE model, forward,
backward and both, per implementation, at the users' microbatch. Skipped without CUDA.

    pytest tests/test_kernel_speed.py -m gpu --benchmark-autosave               # record a baseline
    pytest tests/test_kernel_speed.py -m gpu --benchmark-compare --benchmark-compare-fail=median:10%

Each round synchronises the GPU, so pytest-benchmark's wall clock covers the kernels.
TPSBENCH_BENCH_TOKENS overrides the 32,768 tokens.
"""

import os

import pytest
import torch

from tpsbench.models import get_model
from tpsbench.nn.experts import make_impl
from tpsbench.nn.moe import MoEFeedForward

TOKENS = int(os.environ.get("TPSBENCH_BENCH_TOKENS", "32768"))
MODELS = ["moe_1b", "moe_1b_a390m", "olmoe_1b_7b"]
IMPLS = ["triton", "grouped", "capacity", "loop"]


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["fwd", "bwd", "fwd_bwd"])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("model", MODELS)
def test_moe_layer_speed(benchmark, model, impl, mode):
    spec = get_model(model)
    torch.manual_seed(0)
    layer = MoEFeedForward(spec.d_model, spec.moe, device="cuda")
    layer.set_impl(make_impl(impl, capacity_factor=spec.moe.capacity_factor))
    x = torch.randn(TOKENS, spec.d_model, device="cuda", requires_grad=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        grad = torch.randn_like(layer(x))
    benchmark.group = f"{model} {mode}"
    benchmark.extra_info.update({"tokens": TOKENS, "impl": impl, "gpu": torch.cuda.get_device_name()})

    def forward():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return layer(x)

    def run_fwd():
        forward()
        torch.cuda.synchronize()

    def run_fwd_bwd():
        forward().backward(grad)
        torch.cuda.synchronize()

    def setup_bwd():
        layer.zero_grad(set_to_none=True)
        out = forward()
        torch.cuda.synchronize()
        return (out,), {}

    def run_bwd(out):
        out.backward(grad)
        torch.cuda.synchronize()

    if mode == "bwd":
        benchmark.pedantic(run_bwd, setup=setup_bwd, rounds=10, warmup_rounds=2)
    else:
        benchmark.pedantic(run_fwd if mode == "fwd" else run_fwd_bwd, rounds=10, warmup_rounds=2)
