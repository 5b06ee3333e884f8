"""`predict --vs`: a gap between two models' expected steps taken apart by op group; the groups sum to the gap, a
difference only in the MoE layer lands in the FFN layer's groups, one only in qk-norm in the qk-norm group."""

from __future__ import annotations

import json

import pytest

from tpsbench.cli import main
from tpsbench.costmodel import Workload, get_policy
from tpsbench.costmodel.step import train_workload
from tpsbench.estimate.attribution import OpGroup, gap, op_group, parameters_by_group, step_by_group
from tpsbench.estimate.step import expected_for
from tpsbench.models import get_model, zoo_models
from tpsbench.profiles import load_profile


def _by_group(name: str, gpu: str = "h100_sxm"):
    m = get_model(name)
    w = Workload(model=m, tokens=32768, seq_len=2048, impl=m.trained_impl,
                 capacity_factor=m.moe.capacity_factor if m.moe else None, policy=get_policy("amp_bf16"))
    e = expected_for(w, load_profile(gpu)).expected
    assert e is not None
    by = step_by_group(m, e)
    assert by.total_s == pytest.approx(e.seconds, rel=1e-12)  # the groups are the whole step
    return by


@pytest.mark.parametrize("name", sorted(zoo_models()))
def test_every_parameter_and_op_has_a_group(name):
    m = get_model(name)
    assert sum(parameters_by_group(m).values()) == m.total_params
    w = Workload(model=m, tokens=2 * m.seq_len, seq_len=m.seq_len, impl=m.trained_impl,
                 capacity_factor=m.moe.capacity_factor if m.moe else None, policy=get_policy("amp_bf16"))
    e = expected_for(w, load_profile("h100_sxm")).expected
    assert e is not None
    assert all(op_group(r.op.name) is not None or r.op.name.startswith("optim.") for r in e.rows)


def test_the_groups_sum_to_the_gap():
    g = gap(_by_group("dense_135m"), _by_group("moe_1b"))
    assert sum(r.gap_s for r in g.rows) == pytest.approx(g.gap_s, rel=1e-12)
    assert g.ffn_layer_s() + g.other_s() == pytest.approx(g.gap_s, rel=1e-12)
    qk = next(r for r in g.rows if r.group is OpGroup.QK_NORM)
    assert 0.3 < qk.gap_s / g.gap_s < 0.7  # qk-norm, not the MoE, is a large part of this dense/MoE gap


def test_a_difference_only_in_the_moe_layer_is_all_in_the_ffn_layer():
    g = gap(_by_group("moe_1b"), _by_group("moe_1b:top_k=2"))
    assert g.gap_s > 0 and abs(g.other_s()) < 1e-9 * g.gap_s + 1e-12
    assert {r.group for r in g.rows if abs(r.gap_s) > 1e-12} <= {grp for grp in OpGroup if grp.is_ffn_layer}


def test_a_difference_only_in_qk_norm_is_in_the_qk_norm_group():
    g = gap(_by_group("moe_1b:qk_norm=false"), _by_group("moe_1b"))
    moved = {r.group: r.gap_s for r in g.rows if abs(r.gap_s) > 1e-9}
    assert set(moved) <= {OpGroup.QK_NORM, OpGroup.IDLE}  # the timeline's idle time answers a little
    assert moved[OpGroup.QK_NORM] == pytest.approx(g.gap_s, rel=0.02)


def test_predict_vs_prints_the_attribution(capsys):
    assert main(["predict", "--model", "dense_135m", "--vs", "moe_1b", "--gpu", "h100_sxm"]) == 0
    out = capsys.readouterr().out
    assert "moe_1b's step is +52.34 ms against dense_135m's" in out and "the FFN layer" in out
    assert "qk-norm" in out and "share of gap" in out
    assert main(["predict", "--model", "dense_135m", "--vs", "moe_1b", "--gpu", "h100_sxm", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    [g] = doc["gaps"]
    assert sum(r["gap_s"] for r in g["groups"]) == pytest.approx(g["gap_s"])
    assert main(["predict", "--model", "dense_135m", "--vs", "nobody", "--gpu", "h100_sxm"]) == 2
    assert "unknown model 'nobody'" in capsys.readouterr().err


def test_vs_is_one_gpu(capsys):
    assert main(["predict", "--model", "dense_135m", "--vs", "moe_1b", "--gpu", "h100", "--gpus", "8",
                 "--dist", "fsdp"]) == 2
    assert "--vs compares two models on one GPU" in capsys.readouterr().err


def test_a_measured_gap_is_the_expected_groups_plus_what_the_model_leaves_out(tmp_path, capsys):
    """explain: the users' H100 rows, one measured at a global batch of 4 microbatches: times are per microbatch,
    the expected groups sum to the expected gap, and measured = expected + not accounted."""
    csv = tmp_path / "m.csv"
    csv.write_text("model,gpu,tokens_per_s,tokens,impl,global_tokens\n"
                   "dense_135m,h100_sxm,210594,32768,,131072\nmoe_1b,h100_sxm,134987,32768,capacity,32768\n")
    assert main(["explain", "--measured", str(csv), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    [g] = doc["measured_gaps"]
    assert (g["a"], g["b"], g["impl"], g["tokens"]) == ("dense_135m", "moe_1b", "capacity", 32768)
    assert g["a_measured_s"] == pytest.approx(32768 / 210594) and g["b_measured_s"] == pytest.approx(32768 / 134987)
    assert sum(r["gap_s"] for r in g["groups"]) == pytest.approx(g["expected_gap_s"], rel=1e-9)
    assert g["measured_gap_s"] == pytest.approx(g["expected_gap_s"] + g["unaccounted_s"], rel=1e-9)
    # the dense step estimated at its global batch of 4 microbatches, then taken at one microbatch's share
    dense = sum(r["a_s"] for r in g["groups"])
    w = train_workload(get_model("dense_135m"), "dense", 32768, get_policy("amp_bf16"))
    four = expected_for(w, load_profile("h100_sxm"), accumulation=4).expected
    assert four is not None and dense == pytest.approx(four.seconds / 4, rel=1e-9)
    assert step_by_group(get_model("dense_135m"), four).total_s == pytest.approx(four.seconds, rel=1e-12)
    [row] = doc["gaps"]
    assert row["beyond_expected"] == pytest.approx(row["measured"] / row["expected"])

    assert main(["explain", "--measured", str(csv)]) == 0
    out = capsys.readouterr().out
    assert "moe_1b (capacity) against dense_135m on h100_sxm" in out and "not accounted for by the expected" in out


def test_compare_takes_measured_dense_moe_steps_apart_the_same_way(capsys):
    files = ["results/h100-validation/h100-dense_135m.json", "results/h100-validation/h100-moe_1b.json"]
    assert main(["compare", *files, "--json"]) == 0
    gaps = json.loads(capsys.readouterr().out)["measured_gaps"]
    assert gaps and {g["impl"] for g in gaps} >= {"capacity", "grouped"}
    for g in gaps:
        assert sum(r["gap_s"] for r in g["groups"]) == pytest.approx(g["expected_gap_s"], rel=1e-9)
        assert g["measured_gap_s"] == pytest.approx(g["b_measured_s"] - g["a_measured_s"])
    assert main(["compare", *files, "--estimate", "floor"]) == 0
    assert "not accounted for by the expected model" not in capsys.readouterr().out  # expected-only view
