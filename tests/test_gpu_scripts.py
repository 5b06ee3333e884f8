"""The prepared GPU scripts on the CPU (tools/gpu_evidence.sh, the H200 evidence run; tools/gpu_outlier.sh, the
moe_1b_a390m loop outlier): their dry runs run the same stages with the tiny models, pack what finished into one
tarball (traces into another), and skip what the stage limit or the time budget cannot hold, saying so."""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from guard import HANG_GUARD_S

ROOT = Path(__file__).resolve().parents[1]


def _dry_run(script: str, out: Path, **env: str) -> subprocess.CompletedProcess:
    """A GPU script's dry run on the CPU; what runs is set by stage counts and budgets that do not race the clock
    (the budget far above what a dry run takes, or below what any stage needs)."""
    env = {**os.environ, "DRY_RUN": "1", "OUT": str(out), "BUDGET_S": "100000", **env,
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}  # this interpreter is the script's python3
    done = subprocess.run(["bash", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done


def test_the_evidence_script_packs_what_finished_and_skips_what_does_not_fit(tmp_path):
    _dry_run("tools/gpu_evidence.sh", tmp_path, MAX_STAGES="2")  # calibrate (its --help in a dry run), e2e-dense
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evidence.log", "evidence.tar.gz", "nvidia-smi-q.txt"]
    with tarfile.open(tmp_path / "evidence.tar.gz") as tar:
        names = {Path(n).name for n in tar.getnames()}
    assert "e2e-dense_tiny.json" in names and "e2e-dense.log" in names  # the first run finished and was packed
    log = (tmp_path / "evidence.log").read_text()
    assert "== e2e-dense: exit 0" in log
    assert "== e2e-moe: skipped, the limit of 2 stages was reached" in log
    assert "== outlier-layer: skipped" in log and "e2e-moe_tiny.json" not in names


def test_a_stage_that_does_not_fit_the_time_left_is_skipped(tmp_path):
    _dry_run("tools/gpu_evidence.sh", tmp_path, BUDGET_S="10")  # under the 15 s a stage needs at the least
    log = (tmp_path / "evidence.log").read_text()
    assert "== calibrate: skipped" in log and "== outlier-layer: skipped" in log and ": exit" not in log


def test_the_outlier_script_runs_its_four_measurements_and_keeps_traces_apart(tmp_path):
    _dry_run("tools/gpu_outlier.sh", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evidence.log", "evidence.tar.gz", "nvidia-smi-q.txt",
                                                           "traces.tar.gz"]
    log = (tmp_path / "evidence.log").read_text()
    for name in ("shape-churn", "outlier-learned", "outlier-uniform", "outlier-layer"):
        assert f"== {name}: exit 0" in log
    with tarfile.open(tmp_path / "evidence.tar.gz") as tar:
        names = {Path(n).name for n in tar.getnames()}
    assert {"e2e-moe_tiny-outlier.json", "e2e-moe_tiny-outlier-uniform.json", "layers-moe_tiny-outlier.json",
            "moe_tiny_train_step_loop_128.ops.txt", "shape-churn.log"} <= names
    assert not any(n.endswith(".trace.json") for n in names)  # the traces travel in their own tarball
    with tarfile.open(tmp_path / "traces.tar.gz") as tar:
        assert "traces/moe_tiny_train_step_loop_128.trace.json" in tar.getnames()


def _as_h200(src: Path, dst: Path, scale: float) -> None:
    """A committed H100 results file as if the H200 had measured it ``scale`` x as long (a test input only)."""
    d = json.loads(src.read_text())
    d["config"]["gpu_profile"] = d["machine"]["profile"] = "h200"
    d["machine"]["gpu_name"] = "NVIDIA H200"
    for p in d["points"]:
        if p.get("stats"):
            for k in ("median", "q1", "q3", "min", "max", "mean"):
                if p["stats"].get(k) is not None:
                    p["stats"][k] *= scale
            p["raw"]["samples_s"] = [x * scale for x in p["raw"]["samples_s"]]
        if p.get("prediction"):
            p["prediction"]["profile"] = "h200"
    dst.write_text(json.dumps(d))


def test_the_h200_report_compares_plots_validates_and_checks_from_files(tmp_path):
    evidence, baselines = tmp_path / "h200-evidence", tmp_path / "baselines"
    evidence.mkdir()
    baselines.mkdir()
    counters = ROOT / "results/h100-counters/validated"
    _as_h200(counters / "counters-dense_135m.json", evidence / "e2e-dense_135m.json", 0.8)
    _as_h200(ROOT / "results/baselines/h100_sxm-moe_1b-moe-layer.json", evidence / "layers-moe_1b.json", 0.9)
    env = {**os.environ, "BASELINES": str(baselines), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", "tools/h200_report.sh", str(evidence)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=HANG_GUARD_S)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "check moe_1b against" in done.stdout and "exit 0" in done.stdout
    md = (evidence / "compare.md").read_text()
    speedups = md.split("**Speedup between GPUs")[1].split("\n**")[0]
    assert "| dense_135m train step @ 32,768 | h100_sxm | h200 | 1.25x |" in speedups
    assert "| moe_1b moe fwd_bwd/triton @ 32,768 | h100_sxm | h200 | 1.11x |" in speedups
    rows = json.loads((evidence / "compare.json").read_text())["speedups"]
    assert rows and all(r["ratios_used"] == "datasheet" for r in rows)  # no H200 calibration among these files
    assert (evidence / "roofline.png").stat().st_size > 10_000
    assert "h200: estimated with h200's table, transferred from h100_sxm" in (evidence / "validate.txt").read_text()
    assert (baselines / "h200-moe_1b-moe-layer.json").exists()
    assert "unchanged" in (evidence / "check-moe_1b.md").read_text()
