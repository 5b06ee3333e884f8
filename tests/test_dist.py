"""Expert parallelism on torch.distributed (issue 20), on the CPU with gloo under torchrun: the expert-parallel
MoE layer's outputs and every gradient equal the single-process layer's (tpsbench/dist/check_ep.py: uneven
splits, an expert no token chooses, skewed routing; loop, grouped, capacity)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tpsbench.dist.check_ep import CASES
from tpsbench.dist.ep import ExpertParallelError, experts_per_rank


@pytest.mark.parametrize("ranks", [2, 4])
def test_expert_parallel_layer_equals_the_single_process_layer(ranks):
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                           str(ranks), "-m", "tpsbench.dist.check_ep"], capture_output=True, text=True, timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.startswith(("ok", "FAIL"))]
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert len(lines) == len(CASES) and all(line.startswith(f"ok   {ranks} ranks") for line in lines), lines


def test_the_check_refuses_to_run_outside_torchrun():
    done = subprocess.run([sys.executable, "-m", "tpsbench.dist.check_ep"], capture_output=True, text=True,
                          timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 2 and "run under torchrun" in done.stderr


def test_experts_must_split_evenly_over_the_group():
    assert experts_per_rank(64, 8) == 8
    with pytest.raises(ExpertParallelError, match="64 experts cannot be split evenly over 3"):
        experts_per_rank(64, 3)
