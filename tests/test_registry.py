"""The implementation registry: one `register` call makes a new MoE implementation reach every command."""

from __future__ import annotations

import json

import pytest
import torch
from test_experts import assert_matches_baseline

from tpsbench import impls
from tpsbench.analysis.compare import compare
from tpsbench.cli import main
from tpsbench.costmodel import FWD_BWD, Workload, moe_ops, total_flops
from tpsbench.impls import MoEImpl, get_impl, register, unregister
from tpsbench.models import get_model
from tpsbench.nn.experts import ExpertImpl, Permuted, _dropless_permute
from tpsbench.results import load_results
from tpsbench.results.points import points_from_doc


class GatheredWeightExperts(ExpertImpl):
    """Dropless; every row is multiplied by its own expert's weights, gathered per row (bmm): a different way
    to compute the same function, as a new implementation would be."""

    def _expert_of_row(self, p: Permuted) -> torch.Tensor:
        return torch.repeat_interleave(torch.arange(p.counts.numel(), device=p.counts.device), p.counts)

    def permute(self, x, route, experts):
        return _dropless_permute(x, route)

    def up_gate(self, p, experts):
        e = self._expert_of_row(p)
        rows = p.rows.unsqueeze(1)
        return torch.bmm(rows, experts.w1[e]).squeeze(1), torch.bmm(rows, experts.w3[e]).squeeze(1)

    def down(self, h, p, experts):
        return torch.bmm(h.unsqueeze(1), experts.w2[self._expert_of_row(p)]).squeeze(1)


@pytest.fixture
def gathered():
    spec = register(MoEImpl(name="gathered", factory=GatheredWeightExperts,
                            description="dropless; each row times its own expert's gathered weights (bmm)"))
    yield spec
    unregister("gathered")


def test_list_impls_shows_it(gathered, capsys):
    assert main(["list", "impls", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    names = [i["name"] for i in listed["implementations"]]
    assert names[0] == "loop" and "gathered" in names
    assert [i["name"] for i in listed["implementations"] if i["baseline"]] == ["loop"]
    assert main(["list", "impls"]) == 0
    assert "gathered" in capsys.readouterr().out


def test_predict_accepts_it(gathered, capsys):
    assert main(["predict", "--gpu", "h100", "--model", "moe_1b", "--impl", "gathered", "--json"]) == 0
    pred = json.loads(capsys.readouterr().out)["predictions"][0]
    assert pred["impl"] == "gathered"
    # counted as the unfused dropless implementations are
    ref = Workload(model=get_model("moe_1b"), tokens=32768, seq_len=2048, impl="grouped")
    mine = Workload(model=get_model("moe_1b"), tokens=32768, seq_len=2048, impl="gathered")
    assert total_flops(moe_ops(mine), phases=FWD_BWD) == total_flops(moe_ops(ref), phases=FWD_BWD)
    assert pred["totals"]["matmul_flops_fwd_bwd"] > 0


def test_run_measures_it_in_micro_and_e2e_points(gathered, tmp_path, capsys, fixed_clock):
    """On a fixed clock: a busy machine cannot flag its layer points inconsistent and leave compare without a
    speed-up."""
    out = tmp_path / "run.json"
    assert main(["run", "--device", "cpu", "--model", "moe_tiny", "--impl", "loop,gathered", "--reps", "2",
                 "--min-time", "0.001", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    mine = [p for p in doc["points"] if p["impl"] == "gathered"]
    kinds = {(p["kind"], p["mode"]) for p in mine}
    assert {("micro", "fwd"), ("micro", "bwd"), ("micro", "fwd_bwd"), ("e2e", "train_step")} <= kinds
    assert any(p["mode"].startswith("stage:") for p in mine)  # staged by default
    assert all(p["status"] == "ok" for p in mine), [p.get("error") for p in mine]
    # compare's speed-up columns put it next to the baseline
    rows = compare(points_from_doc(load_results(out), str(out)), all_points=True).baseline_speedups
    assert {r.impl for r in rows} == {"gathered"} and all(r.baseline_impl == "loop" for r in rows)
    assert all(r.speedup == pytest.approx(r.baseline_median_s / r.median_s) for r in rows)


def test_equivalence_tests_check_it_against_the_baseline(gathered):
    assert_matches_baseline("gathered")


def test_a_wrong_implementation_fails_the_equivalence_check():
    class Wrong(GatheredWeightExperts):
        def down(self, h, p, experts):
            return 1.01 * super().down(h, p, experts)

    register(MoEImpl(name="wrong", factory=Wrong, description="off by 1%"))
    try:
        with pytest.raises(AssertionError):
            assert_matches_baseline("wrong")
    finally:
        unregister("wrong")


def test_gpu_only_implementations_are_refused_on_the_cpu_up_front(capsys):
    assert get_impl("triton").needs_gpu
    assert main(["run", "--device", "cpu", "--model", "moe_tiny", "--impl", "triton"]) == 2
    err = capsys.readouterr().err
    assert "needs a CUDA GPU" in err and len(err.strip().splitlines()) == 1


def test_registry_refuses_duplicates_and_a_second_baseline():
    with pytest.raises(ValueError, match="already registered"):
        register(MoEImpl(name="grouped", factory=GatheredWeightExperts, description="x"))
    with pytest.raises(ValueError, match="already registered"):
        register(MoEImpl(name="x", aliases=("dropless",), factory=GatheredWeightExperts, description="x"))
    with pytest.raises(ValueError, match="baseline already"):
        register(MoEImpl(name="y", baseline=True, factory=GatheredWeightExperts, description="y"))
    assert "y" not in impls.moe_impl_names()


def test_aliases_resolve_to_their_implementation():
    assert get_impl("dropless").name == "grouped"
    with pytest.raises(ValueError, match="did you mean"):
        get_impl("grupd")
