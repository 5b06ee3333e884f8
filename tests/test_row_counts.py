"""raw.row_counts: distinct and new per-expert row counts step by step (what a per-expert GEMM loop meets as new
shapes), on hand-fed counts and on real CPU training steps with learned and uniform routing."""

import json

import torch

from tpsbench.bench.row_counts import row_count_churn
from tpsbench.cli import main


def test_new_counts_are_those_no_earlier_step_had():
    t = torch.tensor
    steps = [[t([3, 5]), t([5, 8])], [t([3, 6]), t([8, 8])], [t([6, 5]), t([3, 3])]]
    r = row_count_churn(steps)
    assert r is not None and (r.steps, r.expert_gemms_per_step) == (3, 4)
    assert r.distinct_per_step == [3, 3, 3]  # {3,5,8}, {3,6,8}, {3,5,6}
    assert r.new_per_step == [3, 1, 0]  # 6 is new in the second step; the third has none
    assert row_count_churn([]) is None and row_count_churn([[], []]) is None  # a dense model


def _row_counts(tmp_path, routing: str) -> dict:
    out = tmp_path / f"{routing}.json"
    assert main(["run", "--device", "cpu", "--model", "moe_tiny", "--impl", "loop", "--mode", "e2e", "--reps", "4",
                 "--min-time", "0.001", "--routing", routing, "--no-gpu-time", "--out", str(out)]) == 0
    return json.loads(out.read_text())["points"][0]["raw"]["row_counts"]


def test_uniform_routing_repeats_its_counts_and_learned_routing_moves(tmp_path):
    uniform = _row_counts(tmp_path, "uniform")
    assert uniform["steps"] >= 5 and uniform["expert_gemms_per_step"] > 0
    assert uniform["new_per_step"][0] >= 1 and not any(uniform["new_per_step"][1:])
    learned = _row_counts(tmp_path, "learned")
    assert learned["steps"] == uniform["steps"]
    assert sum(learned["new_per_step"][1:]) > 0  # the optimizer moves the router, and its counts with it


def test_run_notes_say_how_many_row_counts_were_new_and_how_imbalanced_the_router_was(tmp_path):
    from tpsbench.report.run import run_notes
    from tpsbench.results import load_results

    out = tmp_path / "loop.json"
    assert main(["run", "--device", "cpu", "--model", "moe_tiny", "--impl", "loop", "--mode", "e2e", "--reps", "4",
                 "--min-time", "0.001", "--no-gpu-time", "--out", str(out)]) == 0
    doc = load_results(out)
    rc = doc.points[0].raw.row_counts
    median_new = sorted(rc.new_per_step[1:])[len(rc.new_per_step[1:]) // 2]
    notes = run_notes(doc)
    assert (f"moe_tiny train step/loop @ 256: {median_new} of its {rc.expert_gemms_per_step} per-expert row counts "
            "were new in a step after the first (median)") in "\n".join(notes)
    ratio = doc.points[0].raw.tokens_per_expert_max_over_mean
    assert any(n.startswith(f"NOTE: the learned router was up to {ratio:.1f}x imbalanced") for n in notes) \
        == (ratio >= 2.0)
