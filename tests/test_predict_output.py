"""`predict` says what each number is: the expected step first, the roofline floor beside it, each line naming
which; the per-op table's expected column (with the GPU's idle time) sums to the expected step; MFU at both
speeds. Golden files hold the summary at 100 columns for two GPUs and a dense and an MoE model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tpsbench.cli import main
from tpsbench.costmodel import Workload, get_policy
from tpsbench.estimate.step import expected_for
from tpsbench.models import get_model
from tpsbench.profiles import load_profile
from tpsbench.report.predict import IDLE_ROW, prediction_table
from tpsbench.roofline import predict

GOLDEN = Path(__file__).resolve().parent / "golden"
CASES = [(gpu, model) for gpu in ("h100_sxm", "rtx5090") for model in ("dense_135m", "moe_1b")]


@pytest.mark.parametrize(("gpu", "model"), CASES)
def test_the_summary_is_its_golden(gpu, model, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    assert main(["predict", "--gpu", gpu, "--model", model, "--summary"]) == 0
    assert capsys.readouterr().out == (GOLDEN / f"predict-{gpu}-{model}.txt").read_text()


@pytest.mark.parametrize(("gpu", "model"), CASES)
def test_every_number_of_the_summary_says_expected_or_floor(gpu, model, capsys):
    assert main(["predict", "--gpu", gpu, "--model", model, "--summary"]) == 0  # unwrapped (250 columns)
    out = capsys.readouterr().out
    head, _, ridge = out.partition("Ridge point")
    lines = [line for line in head.splitlines() if re.search(r"\d", line)]
    lead = [line for line in lines if not line.startswith("does not fit")]  # a way out comes first when needed
    assert lead[0].startswith("expected step") and any(line.startswith("floor step") for line in lines)
    for line in lines:
        assert "expected" in line or "floor" in line, line
    assert "of the floor's forward+backward time" in ridge  # the memory-bound shares below it are the floor's
    mfu = next(line for line in lines if line.startswith("MFU"))
    assert re.search(r"expected 6N [\d.]+%, olmo [\d.]+%, exact [\d.]+%; floor 6N [\d.]+%", mfu)
    assert len(re.findall(r"^  most expected time: (?:[\w.]+ \d+% \([\d.]+ ms\)(?:, )?){3}$", head, re.M)) == 1


@pytest.mark.parametrize(("gpu", "model"), CASES)
def test_the_expected_column_sums_to_the_expected_step(gpu, model):
    spec, profile = get_model(model), load_profile(gpu)
    w = Workload(model=spec, tokens=32768, seq_len=spec.seq_len, impl=spec.trained_impl,
                 capacity_factor=spec.moe.capacity_factor if spec.moe else None, policy=get_policy("amp_bf16"))
    p, s = predict(w, profile), expected_for(w, profile)
    assert s.expected is not None
    t = prediction_table(p, s.expected)
    column = t.columns.index("expected ms")
    values = [float(row[column]) for row in t.rows]
    assert t.rows[-1][0] == IDLE_ROW
    assert sum(values) == pytest.approx(s.expected.seconds * 1e3, abs=1e-3 * len(values))
    floors = [float(row[t.columns.index("floor ms")]) for row in t.rows[:-1]]
    assert sum(floors) == pytest.approx(p.microbatch_step_s * 1e3, abs=1e-3 * len(floors))


def test_a_step_that_does_not_fit_says_so_first_with_a_way_out_that_fits(capsys):
    assert main(["predict", "--gpu", "rtx5090", "--model", "moe_1b", "--summary"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("does not fit: expected memory 57.1 GB needed, 34.0 GB usable on rtx5090; what fits: ")
    batch = re.search(r"--batch (\d+) \(", first)
    assert batch is not None and "--gpus 2 --dist fsdp" in first
    assert main(["predict", "--gpu", "rtx5090", "--model", "moe_1b", "--batch", batch.group(1), "--summary"]) == 0
    out = capsys.readouterr().out
    assert "does not fit" not in out and "fits on rtx5090" in out  # the way out it proposed does fit
    assert main(["predict", "--gpu", "h100", "--model", "moe_1b", "--summary"]) == 0
    assert "does not fit" not in capsys.readouterr().out  # nothing proposed for a step that fits
