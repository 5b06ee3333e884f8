"""torch.distributed on the CPU with gloo under torchrun: the expert-parallel MoE layer's outputs and
every gradient equal the single-process layer's (tests/dist_check_ep.py: uneven splits, an expert no token
chooses, skewed routing; loop, grouped, capacity), and a training step's gradients and parameters after AdamW
equal the single-process step's with FSDP2, expert parallelism and both (tests/dist_check_train.py). Each
check has a control that must fail (experts on the wrong rank; gradients summed instead of averaged) and reports
it as caught."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from dist_check_ep import CASES
from guard import HANG_GUARD_S

from tpsbench.models import get_model
from tpsbench.options import DistError, DistLayout, experts_per_rank

TESTS = Path(__file__).resolve().parent


def _torchrun(ranks: int, script: str) -> list[str]:
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                           str(ranks), str(TESTS / f"{script}.py")], capture_output=True, text=True,
                          timeout=HANG_GUARD_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith(("ok", "FAIL"))]
    assert all(line.startswith(f"ok   {ranks} ranks") for line in lines), lines
    return lines


@pytest.mark.parametrize("ranks", [2, 4])
def test_expert_parallel_layer_equals_the_single_process_layer(ranks):
    lines = _torchrun(ranks, "dist_check_ep")
    assert len(lines) == len(CASES) and "control: experts on the wrong rank: caught" in lines[-1]


@pytest.mark.parametrize("ranks", [2, 4])
def test_a_distributed_step_equals_the_single_process_step(ranks):
    lines = _torchrun(ranks, "dist_check_train")
    half = ranks // 2
    assert [line.split(", ")[1].split(":")[0] for line in lines[:11]] == [
        "fsdp step of moe_tiny", "fsdp step of dense_tiny", "ep step of moe_tiny", "fsdp+ep step of moe_tiny",
        "fsdp+ep step of moe_tiny (activation checkpointing full)",
        f"ep step of moe_tiny (expert-parallel groups of {half})",
        f"fsdp+ep step of moe_tiny (expert-parallel groups of {half})",
        "fsdp step of dense_tiny (bf16 gathers)", "fsdp+ep step of moe_tiny (bf16 gathers)",
        f"fsdp step of dense_tiny (hybrid sharding over groups of {half})",
        f"fsdp+ep step of moe_tiny (hybrid sharding over groups of {half})"]
    # summed over N ranks instead of averaged: the gradients are N times too large, off by N - 1 relative
    assert all("blocks computed in torch.bfloat16, gradients torch.float32" in line for line in lines[7:9])
    assert f"control (gradients summed, not averaged): caught, gradients {ranks - 1:.2e}" in lines[11]
    assert "control (expert replicas not all-reduced): caught" in lines[12]


@pytest.mark.parametrize("script", ["dist_check_ep", "dist_check_train"])
def test_the_checks_refuse_to_run_outside_torchrun(script):
    done = subprocess.run([sys.executable, str(TESTS / f"{script}.py")], capture_output=True, text=True,
                          timeout=HANG_GUARD_S, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 2 and "run under torchrun" in done.stderr


def test_experts_must_split_evenly_over_the_group():
    assert experts_per_rank(64, 8) == 8
    with pytest.raises(DistError, match="64 experts cannot be split evenly over 3"):
        experts_per_rank(64, 3)


def _run_dist(tmp_path, ranks: int, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                           str(ranks), "-m", "tpsbench", "run", "--device", "cpu", "--model", "moe_tiny", *args],
                          capture_output=True, text=True, timeout=HANG_GUARD_S, cwd=tmp_path,
                          env={**os.environ, **(env or {})})


def test_run_dist_ep_writes_a_results_file_that_compare_reads_next_to_one_process(tmp_path, capsys):
    from tpsbench.cli import main
    from tpsbench.results.io import load_results

    out = tmp_path / "ep.json"
    done = _run_dist(tmp_path, 2, "--dist", "ep", "--out", str(out))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    doc = load_results(out)
    assert doc.status == "complete" and doc.config.dist == "ep" and doc.config.world_size == 2
    assert [p.impl for p in doc.points] == ["loop", "grouped", "capacity"]  # the brackets have no experts
    for p in doc.points:
        d = p.raw.dist
        assert p.status == "ok" and d.world_size == 2 and len(d.per_rank_median_s) == 2
        assert d.max_median_s == max(d.per_rank_median_s) and d.straggler >= 1.0
        assert d.tokens_per_s_total == 2 * d.tokens_per_s_per_gpu
        assert p.derived.tokens_per_s == d.tokens_per_s_per_gpu  # the table's tokens/s are per GPU
    one = tmp_path / "one.json"
    assert main(["run", "--device", "cpu", "--model", "moe_tiny", "--mode", "e2e", "--impl", "grouped", "--reps", "2",
                 "--out", str(one)]) == 0
    capsys.readouterr()
    assert main(["compare", str(one), str(out), "--json"]) == 0
    doc_cmp = json.loads(capsys.readouterr().out)
    labels = [row["point"] for row in doc_cmp["throughput"]]
    assert "moe_tiny train step/grouped @ 256" in labels
    assert "moe_tiny train step/grouped @ 256 (ep x2, per GPU)" in labels
    [scaling] = doc_cmp["scaling"]  # the one step measured both ways
    assert scaling["efficiency"] == pytest.approx(scaling["per_gpu_tokens_per_s"] / scaling["single_tokens_per_s"])
    assert scaling["per_gpu_tokens_per_s"] == doc.points[1].derived.tokens_per_s


def test_a_failing_rank_is_named_in_one_line_and_rank_0_keeps_the_finished_points(tmp_path):
    from tpsbench.results.io import load_results

    out = tmp_path / "ep.json"
    done = _run_dist(tmp_path, 2, "--dist", "ep", "--out", str(out), env={"TPSBENCH_FAIL_RANK": "1"})
    assert done.returncode != 0
    ours = [line for line in done.stderr.splitlines() if line.startswith("tpsbench run: error:")]
    assert ours == ["tpsbench run: error: rank 1 failed at 'moe_tiny train step/grouped @ 256 (ep x2, per GPU)': "
                    "RuntimeError: failure injected by TPSBENCH_FAIL_RANK=1"]
    # rank 0 either sees the collective fail (a line that says so, not an error of its own) or is stopped by
    # torchrun's SIGTERM; either way it marks the file, which keeps the point finished before the failure
    assert all("another rank left the run" in line for line in done.stderr.splitlines()
               if line.startswith("tpsbench run: rank 0"))
    doc = load_results(out)
    assert doc.status == "interrupted"
    assert [p.impl for p in doc.points] == ["loop"] and doc.points[0].status == "ok"


@pytest.mark.parametrize(("ranks", "args", "needle"), [
    (3, ["--dist", "ep"], "8 experts cannot be split evenly over 3 expert-parallel ranks"),
    (2, ["--dist", "ep", "--dist-backend", "nccl"], "--dist-backend nccl is not available for --device cpu"),
    (2, ["--dist", "fsdp", "--mode", "all"], "the micro benchmarks time expert parallelism's exchanges"),
])
def test_bad_distributed_runs_are_one_line_exit_2(tmp_path, ranks, args, needle):
    done = _run_dist(tmp_path, ranks, *args, "--out", str(tmp_path / "x.json"))
    ours = [line for line in done.stderr.splitlines() if line.startswith("tpsbench run: error:")]
    assert len(ours) == 1 and needle in ours[0], done.stderr[-2000:]  # rank 0's line; the others exit quietly
    assert "exitcode  : 2" in done.stderr  # every rank exits 2
    assert not (tmp_path / "x.json").exists()


def test_dist_without_torchrun_is_one_line_exit_2(capsys):
    from tpsbench.cli import main

    assert main(["run", "--device", "cpu", "--model", "moe_tiny", "--dist", "ep"]) == 2
    err = capsys.readouterr().err
    assert "runs one process per GPU under torchrun" in err and err.count("\n") == 1


def test_dispatch_and_combine_micro_points_with_bytes_and_imbalance(tmp_path, capsys):
    from tpsbench.cli import main
    from tpsbench.results.io import load_results

    out = tmp_path / "comm.json"
    done = _run_dist(tmp_path, 2, "--dist", "ep", "--mode", "micro", "--out", str(out))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    doc = load_results(out)
    points = {(p.layer, p.mode, p.routing): p for p in doc.points}
    assert len(doc.points) == 12 == len(points)  # dispatch/combine x fwd/bwd x three routings, 256 tokens per rank
    uniform = points[("ep.dispatch", "fwd", "uniform")].raw.dist
    # moe_tiny: top-2 of 8 experts, d_model 64, fp32 on the CPU; uniform routing sends half of each rank's
    # 256 x 2 rows to the other rank: 256 rows x 64 x 4 bytes
    assert uniform.bytes_sent_per_rank == [256 * 64 * 4] * 2 and uniform.received_max_over_mean == 1.0
    assert points[("ep.combine", "bwd", "uniform")].raw.dist.bytes_sent_per_rank == [256 * 64 * 4] * 2
    assert points[("ep.dispatch", "fwd", "skewed")].raw.dist.received_max_over_mean > 1.2
    for p in doc.points:
        assert p.derived.achieved_gbs == pytest.approx(sum(p.raw.dist.bytes_sent_per_rank) / 2 / p.stats.median / 1e9)
    assert main(["compare", str(out), "--all-points"]) == 0  # fwd and bwd points are not compare's headline
    assert "ep.dispatch fwd @ 256 (ep x2, per GPU)" in capsys.readouterr().out


def test_micro_benchmarks_need_expert_parallelism(tmp_path):
    done = _run_dist(tmp_path, 2, "--dist", "fsdp", "--mode", "micro", "--out", str(tmp_path / "x.json"))
    ours = [line for line in done.stderr.splitlines() if line.startswith("tpsbench run: error:")]
    assert len(ours) == 1 and "the micro benchmarks time expert parallelism's exchanges" in ours[0]


def test_expert_parallel_groups_smaller_than_the_world(tmp_path):
    """--ep-size 2 --shard-size 2 on 4 ranks: two expert-parallel groups of 2 (each rank holds 4 of moe_tiny's 8
    experts, each expert on two ranks) and FSDP's shards over pairs, replicated across them; the file says so, and
    the exchanges' bytes are those of a group of 2: uniform routing sends half of a rank's 256 x 2 rows to its one
    partner."""
    from tpsbench.results.io import load_results

    out = tmp_path / "groups.json"
    done = _run_dist(tmp_path, 4, "--dist", "fsdp+ep", "--ep-size", "2", "--shard-size", "2", "--fsdp-param-dtype",
                     "bf16", "--impl", "grouped", "--mode", "all", "--out", str(out))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    doc = load_results(out)
    assert doc.config.ep_size == 2 and doc.config.shard_size == 2 and doc.config.world_size == 4
    assert doc.config.fsdp_param_dtype == "bf16"
    step = next(p for p in doc.points if p.kind == "e2e")
    assert step.status == "ok"
    assert step.label == ("moe_tiny train step/grouped @ 256 (fsdp+ep x4, expert groups of 2, shard groups of 2, "
                          "bf16 gathers, per GPU)")
    uniform = next(p for p in doc.points if (p.layer, p.mode, p.routing) == ("ep.dispatch", "fwd", "uniform"))
    assert uniform.raw.dist.bytes_sent_per_rank == [256 * 64 * 4] * 4


def _check(mode: str, world: int, ep_size: int | None = None, shard_size: int | None = None,
           param_dtype: str | None = None) -> None:
    from tpsbench.distributed.train import check_layout

    layout = DistLayout.from_flags(mode, world, ep_size=ep_size, shard_size=shard_size, param_dtype=param_dtype)
    assert layout is not None
    check_layout(layout, get_model("moe_tiny"), ["grouped"])


def test_a_group_size_that_does_not_fit_is_refused_before_any_process_group():
    with pytest.raises(DistError, match="--ep-size 3 does not divide the 4 ranks"):
        _check("ep", 4, 3)
    with pytest.raises(DistError, match="8 experts cannot be split evenly over --ep-size 16"):
        _check("ep", 16, 16)
    with pytest.raises(DistError, match="use it with --dist ep or fsdp\\+ep"):
        _check("fsdp", 4, 2)


def test_ep_size_without_dist_is_one_line_exit_2(capsys):
    from tpsbench.cli import main

    assert main(["run", "--device", "cpu", "--model", "moe_tiny", "--ep-size", "2"]) == 2
    err = capsys.readouterr().err
    assert "--ep-size 2 sizes the expert-parallel groups of a distributed step: add --dist ep or fsdp+ep" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(("args", "needle"), [
    (["--shard-size", "2"], "--shard-size 2 sizes FSDP's shard groups of a distributed step"),
    (["--fsdp-param-dtype", "bf16"], "--fsdp-param-dtype bf16 is FSDP's mixed precision of a distributed step"),
])
def test_layout_flags_without_dist_are_one_line_exit_2(capsys, args, needle):
    from tpsbench.cli import main

    assert main(["run", "--device", "cpu", "--model", "moe_tiny", *args]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1


def test_a_shard_size_that_does_not_fit_is_refused():
    with pytest.raises(DistError, match="--shard-size 3 does not divide the 4 ranks"):
        _check("fsdp", 4, None, 3)
    with pytest.raises(DistError, match="use it with --dist fsdp or fsdp\\+ep"):
        _check("ep", 4, None, 2)
    with pytest.raises(DistError, match="--fsdp-param-dtype bf16 is FSDP's mixed precision"):
        _check("ep", 4, None, None, "bf16")
