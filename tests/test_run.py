"""`tpsbench run` on the CPU: a full sweep, its results file, interruption, OOM handling, bad input."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from guard import HANG_GUARD_S

from tpsbench.bench import micro, runner
from tpsbench.bench.timing import TimingConfig
from tpsbench.cli import main
from tpsbench.costmodel import POLICIES
from tpsbench.models import get_model
from tpsbench.options import RoutingMode, RunMode, Stage
from tpsbench.results import load_dataframe, load_results
from tpsbench.stacks import get_stack


@pytest.mark.parametrize("model", ["moe_tiny", "dense_tiny"])
def test_cpu_run_writes_loadable_results(model, tmp_path, capsys):
    out = tmp_path / "run.json"
    assert main(["run", "--device", "cpu", "--model", model, "--out", str(out)]) == 0
    doc = load_results(out)
    assert doc.status == "complete"
    df = load_dataframe(out)
    assert len(df) == len(doc.points) > 0
    assert set(df["status"]) == {"ok"}
    assert (df["stats.median"] > 0).all()
    assert (df["derived.tokens_per_s"] > 0).all()
    e2e = df[df["kind"] == "e2e"]
    assert len(e2e) == (5 if model == "moe_tiny" else 1)
    assert e2e["prediction"].isna().all()  # no GPU profile on the CPU: prediction is null, not a guess
    if model == "moe_tiny":
        moe = df[(df["layer"] == "moe") & (df["mode"] == "fwd_bwd")]
        assert set(moe["impl"]) == {"loop", "grouped", "capacity"}
        assert (moe["raw.tokens_per_expert_max"] >= moe["raw.tokens_per_expert_mean"]).all()
        stages = df[df["mode"].str.startswith("stage:")]
        assert len(stages) == 3 * len(Stage)
    assert "results:" in capsys.readouterr().out
    # one intra-op thread on a shared CPU, torch's own count given back after; a layer's modes timed in rounds
    assert doc.machine.torch_threads == (1 if "OMP_NUM_THREADS" not in os.environ else torch.get_num_threads())
    assert doc.machine.load_average is not None
    layer_modes = df[df["mode"].isin(["fwd", "bwd", "fwd_bwd"]) & (df["kind"] == "micro")]
    assert set(layer_modes["raw.timer"]) == {"perf_counter_interleaved"}
    assert set(df[df["kind"] == "e2e"]["raw.timer"]) == {"perf_counter"}


def test_run_without_gpu_says_what_to_do(capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main(["run", "--model", "moe_tiny"]) == 2
    err = capsys.readouterr().err
    assert "--device cpu" in err and "tpsbench predict" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(("argv", "needle"), [
    (["--impl", "groupd"], "did you mean grouped"),
    (["--batch", "100"], "closest valid choices (tokens): 64, 128"),
    (["--model", "dense_tiny", "--impl", "grouped"], "dense_tiny is dense (it has no MoE layer); drop --impl"),
    (["--gpu", "h100"], "does not apply"),
    (["--dtype", "amp_bf16"], "needs a GPU"),
    (["--global-batch", "300"], "not a multiple"),
])
def test_run_bad_input(argv, needle, capsys):
    assert main(["run", "--device", "cpu", "--model", "moe_tiny", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1


def test_oom_point_is_recorded_and_sweep_goes_on(tmp_path, monkeypatch):
    real_run = micro.MicroBench.run

    def flaky(self, case, trace=None):
        if case.layer == "attention" and case.mode == "bwd":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_run(self, case, trace)

    monkeypatch.setattr(micro.MicroBench, "run", flaky)
    cfg = runner.RunConfig(model=get_model("dense_tiny"), profile=None, device="cpu", batches=[128], seq_len=64,
                           impls=[], mode=RunMode.MICRO, routing=RoutingMode.LEARNED, skew=1.2,
                           policy=POLICIES["fp32"], stack=get_stack("tpsbench"),
                           micro_timing=TimingConfig(0, 2, 0.0))
    out = tmp_path / "r.json"
    runner.execute(cfg, out)
    points = load_results(out).points
    statuses = {(p.layer, p.mode): p.status for p in points}
    assert statuses[("attention", "bwd")] == "oom"
    assert statuses[("mlp", "fwd_bwd")] == "ok"  # later points still measured
    assert len(points) == 6


# The sweep as `tpsbench run` runs it, made to wait for the signal once two points are on disk: the test never
# races it. Ctrl-C's handler is set explicitly: a process started from a background job inherits SIGINT ignored (and
# Python then installs no handler), which once let the sweep run on through the signal to all 41 points, and once
# left it waiting forever. It waits in short sleeps, not signal.pause(): a signal taken by another of torch's
# threads would not wake pause(), while the interpreter checks for one after every sleep.
PAUSED_RUN = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
from tpsbench.results import ResultsWriter
add = ResultsWriter.add
def add_then_wait(self, point):
    add(self, point)
    while len(self.doc.points) == 2:
        time.sleep(0.05)
ResultsWriter.add = add_then_wait
from tpsbench.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_killed_sweep_keeps_finished_points(tmp_path, sig):
    out = tmp_path / "r.json"
    cmd = [sys.executable, "-c", PAUSED_RUN, "run", "--device", "cpu", "--model", "moe_tiny", "--out", str(out),
           "--reps", "2", "--min-time", "0.001"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not (out.exists() and len(json.loads(out.read_text())["points"]) >= 2):  # by count, not by a deadline
        assert proc.poll() is None, "the sweep ended before it could be stopped"
        time.sleep(0.1)
    os.kill(proc.pid, sig)
    code = proc.wait(timeout=HANG_GUARD_S)
    doc = load_results(out)  # valid JSON, right schema
    assert len(doc.points) == 2
    assert all(p.status == "ok" for p in doc.points)
    if sig == signal.SIGINT:
        assert code == 130 and doc.status == "interrupted"
    else:
        assert doc.status == "running"
    assert len(load_dataframe(out)) == len(doc.points)
