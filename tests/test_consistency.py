"""A layer whose forward-and-backward measured faster than its backward alone ran on a busy machine: its points
are flagged 'inconsistent' in the run's table, with one warning, instead of being shown as results."""

from __future__ import annotations

import json

from results_factory import doc, noisy_samples, point

from tpsbench.analysis.consistency import inconsistent_points
from tpsbench.report.run import run_notes, run_table
from tpsbench.results.io import parse_results
from tpsbench.results.upgrade import upgrade


def _layer(fwd: float, bwd: float, fwd_bwd: float, layer: str = "attention") -> list[dict]:
    return [point(kind="micro", layer=layer, impl=None, mode=mode, tokens=256, median=median,
                  samples=noisy_samples(median, 0.02, 10, i))
            for i, (mode, median) in enumerate((("fwd", fwd), ("bwd", bwd), ("fwd_bwd", fwd_bwd)))]


def _run(points: list[dict]):
    return parse_results(upgrade(doc("moe_tiny", points, gpu=None, device="cpu")), "test")


def test_a_slow_backward_repetition_set_is_flagged_not_reported():
    # attention as the quick start once printed it: bwd 128 ms, fwd_bwd 10.8 ms; the mlp is consistent
    run = _run(_layer(0.00092, 0.128, 0.0108) + _layer(0.001, 0.002, 0.0031, layer="mlp"))
    flagged = inconsistent_points(run)
    assert sorted(flagged) == [0, 1, 2] and "fwd_bwd 10.800 ms < 0.9x bwd 128.000 ms" in flagged[0]
    table = run_table(run)
    status = table.columns.index("status")
    assert [row[status] for row in table.rows] == ["inconsistent"] * 3 + ["ok"] * 3
    warnings = [line for line in run_notes(run) if "inconsistent" in line]
    assert len(warnings) == 1 and "3 layer points" in warnings[0] and "rerun them on a quiet machine" in warnings[0]


def test_timing_noise_within_the_tolerance_is_not_flagged():
    run = _run(_layer(0.001, 0.002, 0.00185))  # fwd_bwd at 0.925x bwd: noise, not a contradiction
    assert inconsistent_points(run) == {}
    assert not any("inconsistent" in line for line in run_notes(run))


def test_compare_and_every_analysis_read_inconsistent_points_as_not_results(tmp_path, capsys):
    from tpsbench.cli import main
    from tpsbench.results.points import points_from_doc

    run = _run(_layer(0.00092, 0.128, 0.0108) + _layer(0.001, 0.002, 0.0031, layer="mlp"))
    points = points_from_doc(run, "busy.json")
    assert [p.status for p in points] == ["inconsistent"] * 3 + ["ok"] * 3
    assert not any(p.ok for p in points[:3]) and "the machine was busy" in (points[0].error or "")
    path = tmp_path / "busy.json"
    path.write_text(json.dumps(upgrade(doc("moe_tiny", _layer(0.00092, 0.128, 0.0108)
                                           + _layer(0.001, 0.002, 0.0031, layer="mlp"), gpu=None, device="cpu"))))
    assert main(["compare", str(path), "--all-points"]) == 0
    out = capsys.readouterr().out
    assert "3 points are inconsistent" in out and "left out of every ratio" in out
