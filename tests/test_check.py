"""`tpsbench check`: direction-aware, noise-aware regression decisions, and the CLI's exit codes."""

from __future__ import annotations

import json

import pytest
from results_factory import doc, point

from tpsbench.analysis.check import Outcome, check, judge
from tpsbench.analysis.points import entries_from_doc
from tpsbench.cli import main


def _micro(median: float, iqr_rel: float = 0.01, **kw) -> dict:
    return point(kind="micro", layer="moe", impl="triton", mode="fwd_bwd", median=median, iqr_rel=iqr_rel, **kw)


def _check(base: list[dict], cur: list[dict], threshold: float = 0.05):
    return check(entries_from_doc(doc("moe_1b", base)), entries_from_doc(doc("moe_1b", cur)), threshold=threshold)


@pytest.mark.parametrize("base, cur, up, noise, outcome", [
    (100, 104, False, 0.01, Outcome.UNCHANGED),  # 4% < 5% threshold
    (100, 110, False, 0.01, Outcome.REGRESSION),  # time up 10%, noise 1%
    (100, 90, False, 0.01, Outcome.IMPROVEMENT),  # time down 10%
    (100, 110, False, 0.20, Outcome.WITHIN_NOISE),  # 10% change, but single reps spread 20%
    (100, 90, True, 0.01, Outcome.REGRESSION),  # tokens/s down 10%
    (100, 110, True, 0.01, Outcome.IMPROVEMENT),
    (100, 75, True, 0.20, Outcome.REGRESSION),  # 25% drop is beyond a 20% noise
])
def test_judge_is_direction_and_noise_aware(base, cur, up, noise, outcome):
    assert judge(base, cur, up, noise, 0.05) is outcome


def test_improvement_regression_and_noise_on_results():
    r = _check([_micro(0.010), _micro(0.010, tokens=16384), _micro(0.010, tokens=8192),
                point(impl="capacity", median=0.10)],
               [_micro(0.012), _micro(0.008, tokens=16384), _micro(0.011, iqr_rel=0.3, tokens=8192),
                point(impl="capacity", median=0.101)])
    outcomes = [row.outcome for row in r.rows]
    assert outcomes == [Outcome.REGRESSION, Outcome.IMPROVEMENT, Outcome.WITHIN_NOISE, Outcome.UNCHANGED]
    assert r.rows[0].metric == "median_ms" and not r.rows[0].higher_is_better
    assert r.rows[0].change == pytest.approx(0.2)
    assert r.rows[2].noise == pytest.approx(0.3)  # the larger relative IQR of the two runs
    assert r.rows[3].metric == "tokens_per_s" and r.rows[3].higher_is_better
    assert r.failed


def test_only_improvements_and_noise_pass():
    r = _check([_micro(0.010), _micro(0.010, tokens=8192)], [_micro(0.009), _micro(0.0108, iqr_rel=0.1, tokens=8192)])
    assert [row.outcome for row in r.rows] == [Outcome.IMPROVEMENT, Outcome.WITHIN_NOISE]
    assert not r.failed


def test_failed_missing_new_and_fixed_points():
    r = _check([_micro(0.01), _micro(0.01, tokens=16384), _micro(0.01, tokens=8192, status="oom")],
               [_micro(0.01, status="oom"), _micro(0.01, tokens=8192), _micro(0.01, tokens=4096)])
    by = {row.label: row.outcome for row in r.rows}
    assert by["moe_1b moe fwd_bwd/triton @ 32,768"] is Outcome.FAILED
    assert by["moe_1b moe fwd_bwd/triton @ 16,384"] is Outcome.MISSING
    assert by["moe_1b moe fwd_bwd/triton @ 8,192"] is Outcome.FIXED
    assert by["moe_1b moe fwd_bwd/triton @ 4,096"] is Outcome.NEW
    assert r.failed


def _write(tmp_path, name, d):
    p = tmp_path / name
    p.write_text(json.dumps(d))
    return str(p)


def test_check_cli_exit_codes_and_markdown(tmp_path, capsys):
    base = _write(tmp_path, "base.json", doc("moe_1b", [_micro(0.010)]))
    slower = _write(tmp_path, "slow.json", doc("moe_1b", [_micro(0.013)]))
    faster = _write(tmp_path, "fast.json", doc("moe_1b", [_micro(0.008)]))
    assert main(["check", "--baseline", base, "--current", slower, "--markdown", str(tmp_path / "s.md")]) == 1
    out = capsys.readouterr().out
    assert out.startswith("### tpsbench check: FAIL") and "| regression ✗ |" in out
    assert (tmp_path / "s.md").read_text().startswith("### tpsbench check: FAIL")
    assert main(["check", "--baseline", base, "--current", faster]) == 0
    assert "PASS" in capsys.readouterr().out
    assert main(["check", "--baseline", base, "--current", slower, "--threshold", "50"]) == 0  # 30% < 50%
    capsys.readouterr()
    assert main(["check", "--baseline", base, "--current", slower, "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["rows"][0]["outcome"] == "regression"


def test_check_cli_refuses_unlike_runs(tmp_path, capsys):
    base = _write(tmp_path, "base.json", doc("moe_1b", [_micro(0.010)]))
    other_gpu = _write(tmp_path, "h200.json", doc("moe_1b", [_micro(0.010)], gpu="h200"))
    other_model = _write(tmp_path, "olmoe.json", doc("olmoe_1b_7b", [_micro(0.010)]))
    assert main(["check", "--baseline", base, "--current", other_gpu]) == 2
    assert "--allow-gpu-mismatch" in capsys.readouterr().err
    assert main(["check", "--baseline", base, "--current", other_gpu, "--allow-gpu-mismatch"]) == 0
    assert main(["check", "--baseline", base, "--current", other_model]) == 2
    assert "same model" in capsys.readouterr().err


def test_check_reruns_the_baseline_configuration(tmp_path, capsys, monkeypatch):
    """Without --current the baseline's points are measured again on this machine (CPU here)."""
    monkeypatch.chdir(tmp_path)
    base = tmp_path / "base.json"
    assert main(["run", "--device", "cpu", "--model", "moe_tiny", "--mode", "micro", "--layers", "moe",
                 "--impl", "capacity", "--no-stages", "--reps", "3", "--out", str(base)]) == 0
    capsys.readouterr()
    # a 1000% threshold: the verdict must not depend on CPU timing noise; the path is what is tested
    code = main(["check", "--baseline", str(base), "--threshold", "1000", "--out", str(tmp_path / "cur.json")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "PASS: 3 points: 3 unchanged" in out
    cur = json.loads((tmp_path / "cur.json").read_text())
    assert [p["mode"] for p in cur["points"]] == ["fwd", "bwd", "fwd_bwd"]


def test_allow_missing_reports_but_passes():
    base = [_micro(0.01), _micro(0.01, tokens=16384)]
    cur = [_micro(0.0101)]
    assert _check(base, cur).failed
    r = check(entries_from_doc(doc("moe_1b", base)), entries_from_doc(doc("moe_1b", cur)), allow_missing=True)
    assert not r.failed and r.count(Outcome.MISSING) == 1
