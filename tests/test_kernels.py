"""Triton MoE kernels against the torch reference: the fused router, the routing plan, and the experts'
forward and every gradient.

On the CPU the kernels run in Triton's interpreter (TRITON_INTERPRET=1 must be set before triton is
imported, hence a subprocess) with fp32 and fp16 inputs; bf16 is checked on a GPU, because the
interpreter's bf16 tl.dot is wrong (kernels/interpret.py).
"""

import os
import subprocess
import sys

import kernel_check
import pytest
import torch
from guard import HANG_GUARD_S

HERE = os.path.dirname(__file__)


@pytest.mark.slow
def test_triton_kernels_match_reference_in_interpreter(tmp_path):
    """fp32 and fp16, each in its own interpreter process, side by side: the interpreter is single-threaded
    Python, 31 s per dtype on CI's two cores one after the other. Output goes to files (a full pipe would stall
    a process while the other is waited for)."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    procs = {}
    for name in ("float32", "float16"):
        with open(tmp_path / f"{name}.log", "w") as log:
            procs[name] = subprocess.Popen([sys.executable, os.path.join(HERE, "kernel_check.py"), name], env=env,
                                           stdout=log, stderr=subprocess.STDOUT)
    for name, proc in procs.items():
        proc.wait(timeout=HANG_GUARD_S)
        out = (tmp_path / f"{name}.log").read_text()
        assert proc.returncode == 0, f"{name}: {out[-3000:]}"
        assert out.strip().endswith("ALL OK"), name


def test_down_bwd_rejects_an_unknown_variant():
    from tpsbench.nn.experts import triton_kernels

    kernels = triton_kernels()
    with pytest.raises(ValueError, match="use one of"):
        kernels.down_bwd(None, None, None, None, None, "fast")
    with pytest.raises(ValueError, match="use one of"), kernels.forced_down_bwd("fast"):
        pass


def test_forcing_a_variant_is_scoped_to_its_block():
    from tpsbench.nn.experts import triton_kernels

    kernels = triton_kernels()
    with kernels.forced_down_bwd("split"):
        assert kernels.down_bwd_variant(None, None, None, None, None) == "split"
        with kernels.forced_down_bwd("fused"):
            assert kernels.down_bwd_variant(None, None, None, None, None) == "fused"
        assert kernels.down_bwd_variant(None, None, None, None, None) == "split"


@pytest.mark.gpu
@pytest.mark.parametrize("down_bwd", ["fused", "split"])
@pytest.mark.parametrize("case", kernel_check.CASES)
def test_triton_kernels_bf16_on_gpu(case, down_bwd):
    kernel_check.run_case(*case, dtype=torch.bfloat16, device="cuda", down_bwd=down_bwd)


@pytest.mark.gpu
@pytest.mark.parametrize("case", kernel_check.CASES[:3])
def test_triton_kernels_bf16_with_fp32_master_weights_on_gpu(case):
    kernel_check.run_case(*case, dtype=torch.bfloat16, device="cuda", master=torch.float32)


@pytest.mark.gpu
@pytest.mark.parametrize("case", kernel_check.ROUTER_CASES)
def test_fused_router_on_gpu(case):
    kernel_check.check_router(*case, device="cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("case", kernel_check.PLAN_CASES)
def test_routing_plan_on_gpu(case):
    for block_m in (64, 128):
        kernel_check.check_plan(*case, block_m=block_m, device="cuda")
