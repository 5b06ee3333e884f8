"""Commands that measure nothing start without torch (about 2-3 s to import here) or scipy (about 1 s): each runs
in a fresh interpreter and the test asserts neither was imported. Measuring commands import them when they run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from guard import HANG_GUARD_S

ROOT = Path(__file__).resolve().parents[1]
RUN = "results/h100-validation/h100-moe_1b.json"
COMMANDS = {
    "--version": ["--version"],
    "--help": ["--help"],
    "list models": ["list", "models"],
    "list gpus": ["list", "gpus", "--json"],
    "list impls": ["list", "impls"],
    "predict": ["predict", "--gpu", "h100", "--model", "moe_1b", "--summary"],
    "predict --dist": ["predict", "--gpu", "h100", "--model", "olmoe_1b_7b", "--gpus", "8", "--dist", "fsdp+ep"],
    "compare": ["compare", RUN, "results/h100-validation/h100-dense_135m.json"],
    "explain": ["explain", "--measured", "results/examples/h100-measured.csv"],
    "validate": ["validate", RUN, "--summary"],
    "check --current": ["check", "--baseline", RUN, "--current", RUN],
    "provenance": ["provenance", RUN],
    "worth": ["worth", "--losses", "tests/fixtures/wandb-curves.csv", "--map", "moe_1b-run1=moe_1b", "--map",
              "dense_135m-lr3e-3=dense_135m", "--target-loss", "3.45", "--gpu", "h100"],
    "a bad model": ["predict", "--gpu", "h100", "--model", "no_such_model"],
}
PROBE = """
import json, sys
from tpsbench.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:  # --version, --help
    code = exc.code
print(json.dumps({"code": code, "heavy": sorted(m for m in ("torch", "scipy", "pandas", "matplotlib")
                                                if m in sys.modules)}), file=sys.stderr)
"""


@pytest.mark.parametrize("name", list(COMMANDS))
def test_commands_that_measure_nothing_import_no_torch(name):
    done = subprocess.run([sys.executable, "-c", PROBE, *COMMANDS[name]], cwd=ROOT, capture_output=True, text=True,
                          timeout=HANG_GUARD_S)
    report = json.loads(done.stderr.strip().splitlines()[-1])
    assert report["code"] in (0, 1, 2, None), done.stderr[-2000:]
    # worth fits loss curves and check bootstraps intervals with scipy: statistics they compute, not a start cost
    allowed = {"scipy"} if name in ("worth", "check --current") else set()
    assert set(report["heavy"]) <= allowed, f"{name} imported {report['heavy']}"


def test_a_measuring_command_imports_torch_when_it_runs(tmp_path):
    probe = PROBE.replace("from tpsbench.cli import main", "from tpsbench.cli import main\nimport tpsbench.cli\n"
                          "assert 'torch' not in sys.modules, 'importing the CLI imported torch'")
    done = subprocess.run([sys.executable, "-c", probe, "run", "--device", "cpu", "--model", "dense_tiny", "--mode",
                           "micro", "--layers", "mlp", "--reps", "2", "--min-time", "0.001", "--out",
                           str(tmp_path / "r.json")], cwd=ROOT, capture_output=True, text=True, timeout=HANG_GUARD_S)
    report = json.loads(done.stderr.strip().splitlines()[-1])
    assert report["code"] == 0 and "torch" in report["heavy"]
