"""Golden outputs: `compare`, `explain` and `check` on the committed H100 results print exactly what is stored
under tests/golden/ (captured from the code of commit 7498b34, before the structure rework; a change of
behaviour updates the golden file in the same commit, on purpose). The expected-time model added a table to
`compare` and two columns to `explain`: with `--estimate floor` both print exactly what they printed before it
(the `-floor` goldens, the files of 7498b34 renamed); the default output has its own goldens.
`compare --all-points --json` of every committed results file pins every number the analyses read from it
(the expected estimates' key, new, aside)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from committed import COMMITTED_RUNS

from tpsbench.cli import main

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden"

VALIDATION = [f"results/h100-validation/h100-{m}{c}.json" for m in ("dense_135m", "moe_1b") for c in ("", "-compile")]
COUNTERS = ["results/h100-counters/validated/counters-dense_135m.json",
            "results/h100-counters/validated/counters-moe_1b.json"]
RUNS = COMMITTED_RUNS


@pytest.fixture(autouse=True)
def _at_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # the outputs name the files by their paths from the repository root
    monkeypatch.setenv("COLUMNS", "100")  # what a pipe gets: the terminal goldens are wrapped to it


def _run(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().out


@pytest.mark.parametrize("estimate", ["expected", "floor"])
@pytest.mark.parametrize(("name", "files"), [("h100-validation", VALIDATION), ("h100-counters", COUNTERS)])
def test_compare_golden(name, files, estimate, capsys, tmp_path):
    md = tmp_path / "report.md"
    code, out = _run(["compare", *files, "--markdown", str(md), "--estimate", estimate], capsys)
    assert code == 0
    name += "-floor" if estimate == "floor" else ""
    assert md.read_text() == (GOLDEN / f"compare-{name}.md").read_text()
    expected = (GOLDEN / f"compare-{name}.txt").read_text().replace("/tmp/golden/compare-validation.md", str(md))
    expected = expected.replace("/tmp/golden/compare-counters.md", str(md))
    assert out.replace(str(md), "MD").replace("\n", "") == expected.replace(str(md), "MD").replace("\n", "")


@pytest.mark.parametrize("estimate", ["expected", "floor"])
def test_explain_golden(estimate, capsys, tmp_path):
    md = tmp_path / "explain.md"
    code, out = _run(["explain", "--measured", "results/examples/h100-measured.csv", "--markdown", str(md),
                      "--estimate", estimate], capsys)
    assert code == 0
    name = "explain-h100-measured" + ("-floor" if estimate == "floor" else "")
    assert md.read_text() == (GOLDEN / f"{name}.md").read_text()
    expected = (GOLDEN / f"{name}.txt").read_text().replace("/tmp/golden/explain.md", "MD")
    assert out.replace(str(md), "MD").replace("\n", "") == expected.replace("\n", "")


@pytest.mark.parametrize(("model", "baseline"), [
    ("olmoe_1b_7b", "results/h100-kernels/rows/kernels-olmoe_1b_7b.json"),
    ("moe_1b", "results/h100-kernels/store-h-tile-order/kernels-moe_1b.json"),
])
def test_check_golden(model, baseline, capsys, tmp_path):
    md = tmp_path / "check.md"
    code, out = _run(["check", "--baseline", baseline, "--current",
                      f"results/baselines/h100_sxm-{model}-moe-layer.json", "--markdown", str(md)], capsys)
    assert code == 1  # both hold regressions
    assert md.read_text() == (GOLDEN / f"check-{model}.md").read_text()  # a job summary's section
    assert out == (GOLDEN / f"check-{model}.txt").read_text()  # the terminal's table


@pytest.mark.parametrize("path", RUNS, ids=lambda p: str(p.relative_to(ROOT / "results")))
def test_every_committed_run_compares_to_the_same_numbers(path, capsys):
    code, out = _run(["compare", str(path.relative_to(ROOT)), "--all-points", "--json"], capsys)
    assert code == 0
    name = str(path.relative_to(ROOT / "results")).replace("/", "__")
    doc = json.loads(out)
    expected = doc.pop("expected")  # the expected-time model's rows: one per ok GPU training step, with its basis
    doc.pop("measured_gaps")  # the expected model's again (tests/test_gap.py holds them to their own sums)
    doc["notes"] = [n for n in doc["notes"] if not n.startswith("expected estimates marked in-sample")]  # the table's
    assert all(x["basis"] and x["gpu"] != "cpu" for x in expected)
    assert doc == json.loads((GOLDEN / "compare-json" / name).read_text())


def test_plan_golden(capsys, tmp_path):
    """`plan` with a published law (no resamples: the intervals are the seeded throughput draws alone), a model
    only FSDP holds, a price, on both GPUs: the tables, notes and answers as stored, at 100 columns and as
    markdown."""
    md = tmp_path / "plan.md"
    code, out = _run(["plan", "--published", "ludziejewski2025", "--candidates", "dense_1b", "moe_1b", "moe_1b_a390m",
                      "dense_7b", "--gpu", "h100_sxm", "rtx5090", "--target-loss", "2.9", "--price", "h100_sxm=2.5",
                      "--price", "rtx5090=0.6", "--gpus", "2", "--markdown", str(md)], capsys)
    assert code == 0
    assert out.replace(str(md), "/tmp/golden/plan.md") == (GOLDEN / "plan-published.txt").read_text()
    assert md.read_text() == (GOLDEN / "plan-published.md").read_text()
