"""`tpsbench check`: direction-aware, noise-aware regression decisions, and the CLI's exit codes."""

from __future__ import annotations

import json

import pytest
from results_factory import doc, entries, noisy_samples, point

from tpsbench.analysis.check import (
    Interval,
    MetricCheck,
    Outcome,
    change_interval,
    check,
    judge,
    repetitions_needed,
)
from tpsbench.cli import main


def _micro(median: float, iqr_rel: float = 0.01, **kw) -> dict:
    return point(kind="micro", layer="moe", impl="triton", mode="fwd_bwd", median=median, iqr_rel=iqr_rel, **kw)


def _check(base: list[dict], cur: list[dict], threshold: float = 0.05):
    return check(entries(doc("moe_1b", base)), entries(doc("moe_1b", cur)), threshold=threshold)


@pytest.mark.parametrize("low, high, up, outcome", [
    (-0.04, 0.04, False, Outcome.UNCHANGED),  # the whole interval within the 5% threshold
    (0.08, 0.12, False, Outcome.REGRESSION),  # time up 8-12%
    (-0.12, -0.08, False, Outcome.IMPROVEMENT),
    (0.02, 0.15, False, Outcome.WITHIN_NOISE),  # straddles +5%: more repetitions would decide
    (-0.12, -0.08, True, Outcome.REGRESSION),  # tokens/s down 8-12%
    (0.08, 0.12, True, Outcome.IMPROVEMENT),
    (-0.30, 0.30, True, Outcome.WITHIN_NOISE),
])
def test_judge_is_direction_aware_on_the_interval(low, high, up, outcome):
    assert judge(Interval(low, high), up, 0.05) is outcome


def _slowdown(slowdown: float, iqr_rel: float, n: int, seed: int = 1) -> MetricCheck:
    base = noisy_samples(0.010, iqr_rel, n, seed)
    cur = noisy_samples(0.010 * (1 + slowdown), iqr_rel, n, seed + 100)
    r = _check([_micro(0.010, samples=base)], [_micro(0.010 * (1 + slowdown), samples=cur)])
    return r.rows[0]


def test_twenty_percent_slowdown_fails_at_n30_and_14_percent_iqr():
    row = _slowdown(0.20, 0.14, 30)
    assert row.outcome is Outcome.REGRESSION
    assert row.interval is not None and 0.05 < row.interval.low < 0.20 < row.interval.high


def test_two_percent_slowdown_passes_at_n30_and_14_percent_iqr():
    row = _slowdown(0.02, 0.14, 30)
    assert not row.outcome.fails
    assert row.interval is not None and row.interval.low < 0.02 < row.interval.high


def test_twenty_percent_slowdown_is_within_noise_at_n5_and_50_percent_iqr():
    row = _slowdown(0.20, 0.50, 5)
    assert row.outcome is Outcome.WITHIN_NOISE
    assert "repetitions per run" in row.detail  # what to do next


def test_ten_percent_slowdown_fails_at_one_percent_iqr():
    assert _slowdown(0.10, 0.01, 30).outcome is Outcome.REGRESSION


def test_the_old_iqr_rule_would_have_passed_this_regression():
    # 20% slower with a 25% relative IQR: the old rule ("larger than either run's IQR") said within noise
    row = _slowdown(0.20, 0.25, 60)
    assert row.outcome is Outcome.REGRESSION


def test_tokens_per_s_interval_is_the_inverse_of_the_time_ratio():
    base, cur = noisy_samples(0.1, 0.05, 30, 3), noisy_samples(0.125, 0.05, 30, 4)
    t = change_interval(base, cur, higher_is_better=False)
    r = change_interval(base, cur, higher_is_better=True)
    assert r.low == pytest.approx(1 / (1 + t.high) - 1) and r.high == pytest.approx(1 / (1 + t.low) - 1)
    assert r.high < -0.05  # 25% more time is 20% fewer tokens/s


def test_interval_is_seeded_and_reproducible():
    base, cur = noisy_samples(0.1, 0.2, 10, 5), noisy_samples(0.1, 0.2, 10, 6)
    assert change_interval(base, cur, higher_is_better=False) == change_interval(base, cur, higher_is_better=False)


def test_repetitions_needed_scales_with_the_noise():
    # normal samples: the median's standard error is about 1.2533 sigma / sqrt(n), sigma = IQR / 1.349, so a
    # 95% interval of the ratio of two medians is +-1.96 * sqrt(2) * 0.929 * IQR_rel / sqrt(n) = +-5% at
    # n = (51.5 * IQR_rel)^2: 52 for 14%, 2.1 (-> the minimum, 10) for 1%. The bootstrap reads the median's
    # spread off the samples themselves (33 for this seed's 400 samples, whose density at the median is higher
    # than the normal curve's): the order of magnitude and the quadratic scaling are what is checked.
    n14 = repetitions_needed(noisy_samples(0.01, 0.14, 400, 7), 0.05)
    assert 25 <= n14 <= 80
    assert repetitions_needed(noisy_samples(0.01, 0.01, 400, 8), 0.05) == 10
    assert repetitions_needed(noisy_samples(0.01, 0.28, 400, 9), 0.05) == pytest.approx(4 * n14, rel=0.3)


def test_improvement_regression_and_noise_on_results():
    r = _check([_micro(0.010, samples=noisy_samples(0.010, 0.01, 20, 1)),
                _micro(0.010, tokens=16384, samples=noisy_samples(0.010, 0.01, 20, 2)),
                _micro(0.010, tokens=8192, samples=noisy_samples(0.010, 0.3, 8, 3)),
                point(impl="capacity", median=0.10)],
               [_micro(0.012, samples=noisy_samples(0.012, 0.01, 20, 4)),
                _micro(0.008, tokens=16384, samples=noisy_samples(0.008, 0.01, 20, 5)),
                _micro(0.011, tokens=8192, samples=noisy_samples(0.011, 0.3, 8, 6)),
                point(impl="capacity", median=0.101)])
    outcomes = [row.outcome for row in r.rows]
    assert outcomes == [Outcome.REGRESSION, Outcome.IMPROVEMENT, Outcome.WITHIN_NOISE, Outcome.UNCHANGED]
    assert r.rows[0].metric == "median_ms" and not r.rows[0].higher_is_better
    assert r.rows[0].change == pytest.approx(0.2)
    assert r.rows[3].metric == "tokens_per_s" and r.rows[3].higher_is_better
    assert r.failed


def test_only_improvements_and_noise_pass():
    r = _check([_micro(0.010, samples=noisy_samples(0.010, 0.01, 20, 1)),
                _micro(0.010, tokens=8192, samples=noisy_samples(0.010, 0.2, 6, 2))],
               [_micro(0.009, samples=noisy_samples(0.009, 0.01, 20, 3)),
                _micro(0.0108, tokens=8192, samples=noisy_samples(0.0108, 0.2, 6, 4))])
    assert [row.outcome for row in r.rows] == [Outcome.IMPROVEMENT, Outcome.WITHIN_NOISE]
    assert not r.failed


def test_points_with_one_sample_are_judged_by_their_medians_and_say_so():
    b, c = _micro(0.010, samples=[0.010]), _micro(0.013, samples=[0.013])  # one repetition each: no interval
    row = _check([b], [c]).rows[0]
    assert row.outcome is Outcome.REGRESSION and row.interval is None and "no interval" in row.detail


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
    assert out.startswith("tpsbench check: FAIL") and "regression ✗" in out  # a table for the terminal
    md = (tmp_path / "s.md").read_text()
    assert md.startswith("### tpsbench check: FAIL") and "| regression ✗ |" in md  # markdown for a job summary
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


def test_check_reruns_the_baseline_configuration(tmp_path, capsys, monkeypatch, fixed_clock):
    """Without --current the baseline's points are measured again on this machine (CPU here). The timer is
    replaced by one that returns fixed samples, so the outcome cannot depend on how loaded the machine is."""
    monkeypatch.chdir(tmp_path)
    base = tmp_path / "base.json"
    assert main(["run", "--device", "cpu", "--model", "moe_tiny", "--mode", "micro", "--layers", "moe",
                 "--impl", "capacity", "--no-stages", "--reps", "3", "--out", str(base)]) == 0
    capsys.readouterr()
    code = main(["check", "--baseline", str(base), "--out", str(tmp_path / "cur.json")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "PASS: 3 points: 3 unchanged" in out
    cur = json.loads((tmp_path / "cur.json").read_text())
    assert [p["mode"] for p in cur["points"]] == ["fwd", "bwd", "fwd_bwd"]


def test_allow_missing_reports_but_passes():
    base = [_micro(0.01), _micro(0.01, tokens=16384)]
    cur = [_micro(0.0101)]
    assert _check(base, cur).failed
    r = check(entries(doc("moe_1b", base)), entries(doc("moe_1b", cur)), allow_missing=True)
    assert not r.failed and r.count(Outcome.MISSING) == 1


def test_within_noise_says_how_many_repetitions_there_are_and_when_more_would_not_help():
    few = _slowdown(0.20, 0.50, 5)
    assert few.outcome is Outcome.WITHIN_NOISE and few.detail.endswith("repetitions per run, 5 now")
    # quiet samples and a change right at the threshold: the interval is narrow, more repetitions decide nothing
    at = next(r for s in range(1, 40) if (r := _slowdown(0.05, 0.01, 60, seed=s)).outcome is Outcome.WITHIN_NOISE)
    assert "60 repetitions already narrow the interval" in at.detail and "rerun both" in at.detail


def test_checking_a_file_against_itself_warns(tmp_path, capsys):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(doc("moe_1b", [_micro(0.010, samples=noisy_samples(0.010, 0.02, 10, 1))])))
    assert main(["check", "--baseline", str(path), "--current", str(path)]) == 0
    err = capsys.readouterr().err
    assert "baseline and current hold the same measurements" in err and len(err.strip().splitlines()) == 1
