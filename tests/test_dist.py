"""torch.distributed (issue 20) on the CPU with gloo under torchrun: the expert-parallel MoE layer's outputs and
every gradient equal the single-process layer's (tpsbench/dist/check_ep.py: uneven splits, an expert no token
chooses, skewed routing; loop, grouped, capacity), and a training step's gradients and parameters after AdamW
equal the single-process step's with FSDP2, expert parallelism and both (tpsbench/dist/check_train.py). Each
check has a control that must fail (experts on the wrong rank; gradients summed instead of averaged) and reports
it as caught."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tpsbench.dist.check_ep import CASES
from tpsbench.dist.ep import ExpertParallelError, experts_per_rank


def _torchrun(ranks: int, module: str) -> list[str]:
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                           str(ranks), "-m", module], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith(("ok", "FAIL"))]
    assert all(line.startswith(f"ok   {ranks} ranks") for line in lines), lines
    return lines


@pytest.mark.parametrize("ranks", [2, 4])
def test_expert_parallel_layer_equals_the_single_process_layer(ranks):
    lines = _torchrun(ranks, "tpsbench.dist.check_ep")
    assert len(lines) == len(CASES) and "control: experts on the wrong rank: caught" in lines[-1]


@pytest.mark.parametrize("ranks", [2, 4])
def test_a_distributed_step_equals_the_single_process_step(ranks):
    lines = _torchrun(ranks, "tpsbench.dist.check_train")
    assert [line.split(", ")[1].split(":")[0] for line in lines[:4]] == [
        "fsdp step of moe_tiny", "fsdp step of dense_tiny", "ep step of moe_tiny", "fsdp+ep step of moe_tiny"]
    # summed over N ranks instead of averaged: the gradients are N times too large, off by N - 1 relative
    assert f"control (gradients summed, not averaged): caught, gradients {ranks - 1:.2e}" in lines[4]


@pytest.mark.parametrize("module", ["tpsbench.dist.check_ep", "tpsbench.dist.check_train"])
def test_the_checks_refuse_to_run_outside_torchrun(module):
    done = subprocess.run([sys.executable, "-m", module], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 2 and "run under torchrun" in done.stderr


def test_experts_must_split_evenly_over_the_group():
    assert experts_per_rank(64, 8) == 8
    with pytest.raises(ExpertParallelError, match="64 experts cannot be split evenly over 3"):
        experts_per_rank(64, 3)
