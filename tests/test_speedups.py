"""compare's speedups between GPUs: the calibrated ratios next to the datasheet's, the verdict judged by the
measured ceilings when both GPUs have them, and the expected-time model's predicted speedup."""

from __future__ import annotations

import json

import pytest
from calibration_factory import calibration_doc
from results_factory import doc, entries, point

from tpsbench.analysis.compare import compare
from tpsbench.analysis.verdict import Verdict
from tpsbench.cli import main
from tpsbench.estimate.points import estimate_point
from tpsbench.estimate.select import table_for
from tpsbench.options import Scope
from tpsbench.points import NO_IMPL, MeasuredPoint, PointKey
from tpsbench.profiles import load_profile


def _calibration(tmp_path, gpu: str, bf16: float, copy: float) -> str:
    path = tmp_path / f"cal-{gpu}.json"
    path.write_text(json.dumps(calibration_doc(bf16=bf16, torch_copy=copy, cupy_copy=None, profile=gpu)))
    return str(path)


def _pair(h100_s: float = 0.24, h200_s: float = 0.20):
    """The same dense_135m training step and MLP layer on an H100 and an H200."""
    layer = dict(kind="micro", layer="mlp", impl=None, mode="fwd_bwd", median=0.004)
    h100 = doc("dense_135m", [point(median=h100_s, predicted_s=0.05), point(**layer)])
    h200 = doc("dense_135m", [point(median=h200_s, predicted_s=0.04), point(**{**layer, "median": 0.003})],
               gpu="h200")
    return entries(h100, "h100.json") + entries(h200, "h200.json")


def test_the_verdict_uses_the_calibrated_ratios_when_both_gpus_have_them(tmp_path):
    # 1.2x: 18% from the compute ratio (1x) and 16% from the datasheet bandwidth ratio (4,800 / 3,350 = 1.43x),
    # both beyond the 15% tolerance; the calibrated copies (3,000 and 3,600 GB/s) give exactly 1.2x
    cals = [_calibration(tmp_path, "h100_sxm", 775.0, 3000.0), _calibration(tmp_path, "h200", 790.0, 3600.0)]
    without = next(s for s in compare(_pair()).speedups if "train step" in s.label)
    assert without.finding.verdict is Verdict.INCONCLUSIVE and without.ratios_used == "datasheet"
    assert without.calibrated_bandwidth_ratio is None and without.calibrated_compute_ratio is None
    c = compare(_pair(), calibrations=cals)
    step = next(s for s in c.speedups if "train step" in s.label)
    assert step.speedup == pytest.approx(1.2)
    assert step.bandwidth_ratio == pytest.approx(4800 / 3350) and step.compute_ratio == pytest.approx(1.0)
    assert step.calibrated_bandwidth_ratio == pytest.approx(1.2)
    assert step.calibrated_compute_ratio == pytest.approx(790 / 775)
    assert step.ratios_used == "calibrated" and step.finding.verdict is Verdict.BANDWIDTH
    assert "bandwidth 1.20x (calibrated)" in step.finding.evidence
    assert step.finding.values["shares"]["bandwidth_share"] == pytest.approx([1.0, 1.0], abs=0.01)


def test_one_calibrated_gpu_leaves_the_datasheet_ratios_and_says_so(tmp_path):
    c = compare(_pair(), calibrations=[_calibration(tmp_path, "h100_sxm", 775.0, 3000.0),
                                       _calibration(tmp_path, "b200", 2000.0, 7000.0)])
    assert all(s.calibrated_bandwidth_ratio is None and s.ratios_used == "datasheet" for s in c.speedups)
    assert any("calibrates b200, which none of the results ran on" in n for n in c.notes)
    assert any(n.startswith("no calibration for h200") for n in c.notes)


def test_the_expected_speedup_is_the_ratio_of_the_two_gpus_expected_times():
    c = compare(_pair())
    step = next(s for s in c.speedups if "train step" in s.label)
    layer = next(s for s in c.speedups if "mlp fwd_bwd" in s.label)

    def seconds(gpu: str, scope: Scope, layer_name: str, mode: str) -> float:
        key = PointKey(model="dense_135m", scope=scope, layer=layer_name, impl=NO_IMPL, mode=mode, tokens=32768,
                       global_tokens=32768 if scope is Scope.STEP else None, compiled=False)
        p = MeasuredPoint(key=key, source="x", gpu=gpu, gpu_name=None, policy="amp_bf16", status="ok", median_s=1.0)
        profile = load_profile(gpu)
        return estimate_point(p, table_for(profile), profile).seconds

    assert step.expected == pytest.approx(seconds("h100_sxm", Scope.STEP, "model", "train_step")
                                          / seconds("h200", Scope.STEP, "model", "train_step"))
    assert layer.expected == pytest.approx(seconds("h100_sxm", Scope.LAYER, "mlp", "fwd_bwd")
                                           / seconds("h200", Scope.LAYER, "mlp", "fwd_bwd"))
    # equal compute, 1.43x bandwidth: a mix of both, between the two ratios
    assert 1.0 < step.expected < 4800 / 3350 and 1.0 < layer.expected < 4800 / 3350
    assert f"expected {step.expected:.2f}x" in step.finding.evidence
    assert "expected speedups: h200 estimated with h200's table, transferred from h100_sxm (same architecture; " \
           "uncertainty x2)" in c.notes


def test_compare_cli_shows_the_calibrated_columns(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(doc("dense_135m", [point(median=0.24, predicted_s=0.05)])))
    b.write_text(json.dumps(doc("dense_135m", [point(median=0.20, predicted_s=0.04)], gpu="h200")))
    cal = [_calibration(tmp_path, "h100_sxm", 775.0, 3000.0), _calibration(tmp_path, "h200", 790.0, 3600.0)]
    md = tmp_path / "c.md"
    assert main(["compare", str(a), str(b), "--calibration", cal[0], "--calibration", cal[1],
                 "--markdown", str(md)]) == 0
    header, _, row = md.read_text().split("Speedup between GPUs")[1].splitlines()[2:5]
    assert "| compute (cal.) | bandwidth (cal.) | roofline | expected |" in header
    assert "| 1.20x | 1.00x | 1.43x | 1.02x | 1.20x | 1.25x |" in row and "bandwidth-bound" in row
    capsys.readouterr()
    assert main(["compare", str(a), str(b), "--calibration", cal[0], "--calibration", cal[1], "--json"]) == 0
    (s,) = json.loads(capsys.readouterr().out)["speedups"]
    assert s["calibrated_bandwidth_ratio"] == pytest.approx(1.2) and s["ratios_used"] == "calibrated"
    assert s["expected"] is not None and s["verdict"] == "bandwidth-bound"


def test_a_bad_calibration_file_is_one_line_and_exit_2(tmp_path, capsys):
    a = tmp_path / "a.json"
    a.write_text(json.dumps(doc("dense_135m", [point(median=0.24)])))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": "tpsbench.results/2"}))
    assert main(["compare", str(a), "--calibration", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.json" in err and "not a calibration file" in err
    assert main(["compare", str(a), "--calibration", str(tmp_path / "missing.json")]) == 2
    assert "run `tpsbench calibrate` first" in capsys.readouterr().err


def test_a_uniform_routing_run_is_another_workload_than_a_learned_one():
    learned = point(impl="loop", median=0.6)
    uniform = {**point(impl="loop", median=0.3), "routing": "uniform"}
    h100 = entries(doc("moe_1b_a390m", [learned]), "a.json")
    h200 = entries(doc("moe_1b_a390m", [uniform], gpu="h200"), "b.json")
    c = compare(h100 + h200)
    assert c.speedups == []  # no speedup between two workloads
    assert sorted(r.label for r in c.throughput) == ["moe_1b_a390m train step/loop @ 32,768",
                                                    "moe_1b_a390m train step/loop @ 32,768 [uniform routing]"]
    skewed = doc("moe_1b_a390m", [{**point(impl="loop"), "routing": "skewed"}])
    skewed["config"].update(routing="skewed", skew=1.2)
    assert entries(skewed)[0].label.endswith("[skewed 1.2 routing]")
