"""The expected-time model's commands: predict's expected estimate and memory verdict, validate, fit, run's
memory skip and --trace."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from results_factory import doc, point

from tpsbench.bench import e2e
from tpsbench.bench.config import RunConfig
from tpsbench.bench.runner import _memory_skip
from tpsbench.cli import main
from tpsbench.costmodel import get_policy
from tpsbench.models import get_model
from tpsbench.options import RoutingMode, RunMode
from tpsbench.profiles import load_profile
from tpsbench.stacks import get_stack

ROOT = Path(__file__).resolve().parent.parent
RUN = str(ROOT / "results/h100-validation/h100-moe_1b.json")


def test_predict_json_has_floor_and_expected(capsys):
    assert main(["predict", "--gpu", "h100", "--model", "moe_1b", "--impl", "grouped", "--json"]) == 0
    pred = json.loads(capsys.readouterr().out)["predictions"][0]
    exp = pred["expected"]
    assert pred["totals"]["microbatch_step_ms"] / 1e3 == pytest.approx(exp["floor_s"], rel=1e-6)
    assert exp["expected_s"] > 2 * exp["floor_s"]  # the floor is far from what an H100 measures (0.233 s)
    assert exp["efficiency_basis"] == "fitted" and exp["memory"]["fits"] is True
    assert 0 <= exp["gpu_idle_fraction"] <= 1


def test_predict_says_does_not_fit_for_moe_1b_a390m_at_32768_tokens_on_80gb(capsys):
    assert main(["predict", "--gpu", "h100", "--model", "moe_1b_a390m", "--impl", "grouped", "--summary"]) == 0
    out = capsys.readouterr().out
    assert "does not fit on h100_sxm" in out


def test_predict_rtx5090_grouped_models_the_fallback(capsys):
    assert main(["predict", "--gpu", "rtx5090", "--model", "moe_1b", "--impl", "grouped", "--summary"]) == 0
    out = capsys.readouterr().out
    assert "no fast path on rtx5090 (compute capability 12.0)" in out and "GPU->CPU syncs" in out
    assert "transferred from h100_sxm (other architecture" in out


def test_predict_estimate_floor_leads_with_the_roofline(capsys):
    assert main(["predict", "--gpu", "h100", "--model", "dense_135m", "--estimate", "floor", "--compile"]) == 0
    out = capsys.readouterr().out
    assert out.index("Ridge point") < out.index("expected step") and "compiled" in out


def test_validate_prints_errors_by_kind(capsys):
    assert main(["validate", RUN, "--summary"]) == 0
    out = capsys.readouterr().out
    assert "Absolute errors by kind of point" in out and "moe layer" in out and "stage" in out
    assert "h100_sxm: estimated with h100_sxm's table, fitted" in out  # which table, said
    assert "in-sample: the table was fitted to 1 of these 1 files" in out  # and that these errors are in-sample


def test_validate_json(capsys):
    assert main(["validate", RUN, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    steps = [p for p in doc["points"] if p["kind"] == "step"]
    assert len(steps) == 4 and all(p["expected_peak_bytes"] for p in steps)
    assert {s["kind"] for s in doc["summary"]} == {"step", "moe layer", "layer", "stage"}
    assert doc["tables"]["h100_sxm"].startswith("h100_sxm's table, fitted; in-sample: the table was fitted to 1 of")
    assert all(p["in_sample"] for p in doc["points"])  # the committed run is one the table was fitted to


@pytest.mark.parametrize("argv,needle", [
    (["validate", "no-such.json"], "no such results file"),
    (["fit", RUN, "--gpu", "h100", "-o", "x.toml", "--calibration", "no-such.json"],
     "no-such.json: no such calibration file"),
    (["validate", RUN, "--table", "no-such.toml"], "no-such.toml: cannot read"),
])
def test_bad_input_is_one_line(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1


def test_validate_of_a_cpu_run_says_what_it_needs(tmp_path, capsys):
    path = tmp_path / "cpu.json"
    path.write_text(json.dumps(doc("dense_135m", [point()], gpu=None, device="cpu")))
    assert main(["validate", str(path)]) == 2
    assert "no measured GPU points" in capsys.readouterr().err


def test_run_skips_a_training_step_predicted_not_to_fit_unless_forced():
    cfg = RunConfig(model=get_model("moe_1b_a390m"), profile=load_profile("h100"), device="cuda", batches=[32768],
                    seq_len=2048, impls=["grouped", "dense_active"], mode=RunMode.E2E, routing=RoutingMode.LEARNED,
                    skew=1.2, policy=get_policy("amp_bf16"), stack=get_stack("tpsbench"))
    spec = get_model("moe_1b_a390m")
    big, small = e2e.e2e_cases(spec, ["grouped", "dense_active"], [32768], None)
    why = _memory_skip(big, cfg)
    assert why is not None and "predicted not to fit" in why and "--force" in why
    assert _memory_skip(small, cfg) is None  # dense_active ran at 63.8 GB
    forced = replace(cfg, force=True)
    assert _memory_skip(big, forced) is None


def test_run_trace_writes_a_chrome_trace_per_point(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["run", "--device", "cpu", "--model", "moe_tiny", "--impl", "grouped", "--mode", "e2e", "--reps", "2",
                 "--min-time", "0.01", "--trace", str(tmp_path / "traces"), "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    trace = doc["points"][0]["raw"]["trace"]
    assert trace["reason"] is None
    events = json.loads(Path(trace["path"]).read_text())["traceEvents"]
    assert any("aten::" in str(e.get("name", "")) for e in events)
    summary = Path(trace["summary"]).read_text()  # the per-op table next to the trace, by host self time
    assert summary.startswith("ops by host self time") and "aten::mm" in summary and "Self CPU" in summary
