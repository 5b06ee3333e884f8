"""What-if variants (``BASE:key=value,...``): every count recomputed from the changed spec, one canonical name
whichever way the variant is typed, every command on them, and each mistake one line."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from tpsbench.cli import main
from tpsbench.costmodel.ops import get_policy
from tpsbench.costmodel.step import flops_per_token, train_workload
from tpsbench.models import get_model

HF = Path(__file__).resolve().parent / "configs" / "hf"


def test_a_variant_is_its_base_with_the_keys_changed_and_every_count_follows():
    base = get_model("moe_1b")
    variant = get_model("moe_1b:experts=64,top_k=8")
    assert base.moe is not None and variant.moe is not None
    assert variant == replace(base, name="moe_1b:num_experts=64,top_k=8", olmo_name="", olmo_factory=None,
                              olmo_factory_note="", moe=replace(base.moe, num_experts=64, top_k=8))
    e, h, d, layers = 64, base.moe.expert_hidden, base.d_model, base.n_layers
    assert base.total_params - variant.total_params == layers * (base.moe.num_experts - e) * (3 * d * h + d)
    router = (base.moe.num_experts - e) * d  # every token scores every expert
    assert variant.active_params - base.active_params == layers * ((8 - base.moe.top_k) * 3 * d * h - router)
    for convention in ("6N", "olmo", "exact"):
        w = [train_workload(m, "dropless", 2048, get_policy("amp_bf16")) for m in (base, variant)]
        assert flops_per_token(w[1], convention) > flops_per_token(w[0], convention), convention
    assert "variant 'moe_1b:experts=64,top_k=8'" in dict(variant.sources)["moe.num_experts"]


def test_one_what_if_has_one_name_however_it_is_typed():
    names = {get_model(t).name for t in ("dense_1b:layers=24", "dense_1b:n_layers=24", "dense_1b: layers = 24")}
    assert names == {"dense_1b:n_layers=24"}
    assert get_model("moe_1b:top_k=8,experts=64").name == "moe_1b:num_experts=64,top_k=8"
    assert get_model(get_model("dense_1b:layers=24").name).n_layers == 24  # the name reads back


def test_a_variant_of_a_config_file_and_of_the_moe_type():
    qwen = get_model(f"{HF / 'Qwen3-30B-A3B.json'}:experts=64,layers=24")
    assert (qwen.name, qwen.n_layers, qwen.moe.num_experts) == ("Qwen3-30B-A3B:n_layers=24,num_experts=64", 24, 64)
    assert get_model("moe_1b:type=dropless").trained_impl == "dropless"
    capacity = get_model("olmoe_1b_7b:type=capacity,capacity_factor=1.5")
    assert capacity.moe is not None and capacity.moe.capacity_factor == 1.5 and capacity.trained_impl == "capacity"


def test_predict_names_the_variant(capsys):
    assert main(["predict", "--gpu", "h100", "--model", "moe_1b:experts=64", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"]["name"] == "moe_1b:num_experts=64"
    assert out["model"]["total_params"] == get_model("moe_1b:num_experts=64").total_params
    assert main(["predict", "--gpu", "h100", "--model", "dense_1b:layers=24", "--summary"]) == 0


def test_a_run_of_a_variant_records_it_and_compares_where_the_base_is_unknown(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["run", "--device", "cpu", "--model", "dense_tiny:layers=1,seq_len=64", "--mode", "e2e",
                 "--batch", "128", "--reps", "2", "--min-time", "0.001", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["config"]["model_spec"]["name"] == "dense_tiny:n_layers=1,seq_len=64"
    assert doc["config"]["model_spec"]["n_layers"] == 1
    capsys.readouterr()
    assert main(["compare", str(out), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["throughput"]
    assert rows and all(r["point"].startswith("dense_tiny:n_layers=1,seq_len=64 ") for r in rows)


BAD = [
    ("moe_1b:experts=x", "num_experts=x: expected an integer"),
    ("moe_1b:foo=1", "'foo=1' is not key=value with a known key"),
    ("moe_1b:qk_norm=maybe", "qk_norm=maybe: expected true or false"),
    ("moe_1b:type=sometimes", "type=sometimes: expected"),
    ("dense_1b:experts=8", "dense_1b is dense; expert keys need an MoE base"),
    ("moe_1b:ffn_hidden=1024", "moe_1b is an MoE"),
    ("moe_1b:top_k=0", "moe.top_k = 0: must be in [1"),
    ("moe_1b:layers=0", "n_layers = 0: must be positive"),
    ("dense_1b:heads=7", "n_heads = 7: does not divide d_model"),
    ("olmoe_1b_7b:capacity_factor=2", "olmoe_1b_7b is dropless; add type=capacity"),
    ("olmoe_1b_7b:type=capacity", "type=capacity needs capacity_factor"),
    ("moe_1b:type=dropless,capacity_factor=2", "a dropless MoE has no capacity_factor"),
    ("nobody:layers=2", "unknown model 'nobody'"),
]


@pytest.mark.parametrize(("text", "said"), BAD, ids=[t for t, _ in BAD])
def test_a_bad_variant_is_one_line(text, said, capsys):
    assert main(["predict", "--gpu", "h100", "--model", text]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and said in err, err


def test_worth_maps_a_run_to_a_variant_and_explain_reads_one(tmp_path, capsys):
    root = Path(__file__).resolve().parents[1]
    assert main(["worth", "--losses", str(root / "tests/fixtures/wandb-curves.csv"), "--target-loss", "3.45",
                 "--map", "dense_135m-lr3e-3=dense_135m:layers=20", "--gpu", "h100", "--json"]) == 0
    assert '"dense_135m:n_layers=20"' in capsys.readouterr().out
    csv = tmp_path / "measured.csv"
    csv.write_text("model,gpu,tokens_per_s,tokens,impl,global_tokens\n"
                   "moe_1b:experts=64,h100_sxm,50000,32768,capacity,32768\n")
    assert main(["explain", "--measured", str(csv), "--json"]) == 0
    assert "moe_1b:num_experts=64" in capsys.readouterr().out
