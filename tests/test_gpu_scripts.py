"""The prepared GPU script of issue 21 (tools/gpu_evidence.sh) on the CPU: its dry run runs the same stages with the
tiny models, packs what finished into the one tarball, and skips what its time budget cannot hold, saying so."""

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
    assert "== outlier: skipped" in log  # the last stage never fits a 22 s budget
