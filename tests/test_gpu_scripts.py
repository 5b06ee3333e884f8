"""The prepared GPU scripts on the CPU (tools/gpu_evidence.sh for issue 21, tools/gpu_outlier.sh for issue 18):
their dry runs run the same stages with the tiny models, pack what finished into one tarball (traces into another),
and skip what the time budget cannot hold, saying so."""

import os
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_evidence_script_packs_what_finished_and_skips_what_does_not_fit(tmp_path):
    env = {**os.environ, "DRY_RUN": "1", "OUT": str(tmp_path), "BUDGET_S": "22",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}  # this interpreter is the script's python3
    done = subprocess.run(["bash", "tools/gpu_evidence.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evidence.log", "evidence.tar.gz", "nvidia-smi-q.txt"]
    with tarfile.open(tmp_path / "evidence.tar.gz") as tar:
        names = {Path(n).name for n in tar.getnames()}
    assert "e2e-dense_tiny.json" in names and "e2e-dense.log" in names  # the first run finished and was packed
    log = (tmp_path / "evidence.log").read_text()
    assert "== e2e-dense: exit 0" in log
    assert "== outlier-layer: skipped" in log  # the last stage never fits a 22 s budget


def test_the_outlier_script_runs_its_three_measurements_and_keeps_traces_apart(tmp_path):
    env = {**os.environ, "DRY_RUN": "1", "OUT": str(tmp_path),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", "tools/gpu_outlier.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evidence.log", "evidence.tar.gz", "nvidia-smi-q.txt",
                                                           "traces.tar.gz"]
    log = (tmp_path / "evidence.log").read_text()
    for name in ("outlier-learned", "outlier-uniform", "outlier-layer"):
        assert f"== {name}: exit 0" in log
    with tarfile.open(tmp_path / "evidence.tar.gz") as tar:
        names = {Path(n).name for n in tar.getnames()}
    assert {"e2e-moe_tiny-outlier.json", "e2e-moe_tiny-outlier-uniform.json", "layers-moe_tiny-outlier.json",
            "moe_tiny-train_step_loop_128_x1.ops.txt"} <= names
    assert not any(n.endswith(".trace.json") for n in names)  # the traces travel in their own tarball
    with tarfile.open(tmp_path / "traces.tar.gz") as tar:
        assert "traces/moe_tiny-train_step_loop_128_x1.trace.json" in tar.getnames()
