"""Every command that prints tables fits the width it is given: COLUMNS, else the terminal's, else 100 columns in a
pipe. No line of `list`, `predict --summary`, `compare`, `explain`, `worth` or `check` is wider, tables and prose
alike (cells and long lines wrap, a value too wide for its column folds instead of being cut)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tpsbench.cli import main
from tpsbench.report.tables import PIPED_WIDTH, output_width

ROOT = Path(__file__).resolve().parents[1]
H100 = ["results/h100-validation/h100-dense_135m.json", "results/h100-validation/h100-moe_1b.json"]
LOSSES = ["--losses", "tests/fixtures/wandb-curves.csv", "--map", "moe_1b-run1=moe_1b", "--map",
          "moe_1b-run1-resume=moe_1b", "--map", "dense_135m-lr3e-3=dense_135m", "--target-loss", "3.45"]
COMMANDS = {
    "list models": ["list", "models"],
    "list gpus": ["list", "gpus"],
    "list impls": ["list", "impls"],
    "predict --summary": ["predict", "--gpu", "h100", "--model", "moe_1b", "--summary"],
    "predict": ["predict", "--gpu", "rtx5090", "--model", "moe_1b_a390m", "--batch", "16384,32768"],
    "predict --dist": ["predict", "--gpu", "h100", "--model", "olmoe_1b_7b", "--gpus", "8", "--dist", "fsdp+ep"],
    "compare": ["compare", *H100],
    "explain": ["explain", "--measured", "results/examples/h100-measured.csv"],
    "worth": ["worth", *LOSSES, "--throughput", *H100, "--gpu", "rtx5090", "--price", "h100=2.5"],
    "check": ["check", "--baseline", "results/h100-kernels/rows/kernels-olmoe_1b_7b.json", "--current",
              "results/baselines/h100_sxm-olmoe_1b_7b-moe-layer.json"],
    "validate": ["validate", *H100, "--summary"],
}


@pytest.mark.parametrize("width", [100, 132])
@pytest.mark.parametrize("name", list(COMMANDS))
def test_no_line_is_wider_than_the_width(name, width, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("COLUMNS", str(width))
    assert main(COMMANDS[name]) in (0, 1)  # check exits 1: the files hold regressions
    out = capsys.readouterr().out
    widest = max(out.splitlines(), key=len)
    assert len(widest) <= width, f"{name}: a line of {len(widest)} columns: {widest!r}"


def test_the_width_is_columns_else_the_terminals_else_100_in_a_pipe(monkeypatch):
    monkeypatch.setenv("COLUMNS", "77")
    assert output_width() == 77
    monkeypatch.delenv("COLUMNS")
    monkeypatch.setattr("sys.stdout.isatty", lambda: False)
    assert output_width() == PIPED_WIDTH == 100
    monkeypatch.setenv("COLUMNS", "not a number")
    assert output_width() == 100
