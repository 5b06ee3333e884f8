"""Hugging Face configs as models: nine families, each held to transformers building the same config on the
meta device (total parameters to the parameter; active ones to the experts transformers builds), the published
totals of the model cards, and every setting the spec cannot represent refused in one line."""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path

import pytest

from tpsbench.cli import main
from tpsbench.models import get_model
from tpsbench.models.hf_config import FAMILIES

CONFIGS = Path(__file__).resolve().parent / "configs" / "hf"
FILES = sorted(p.name for p in CONFIGS.glob("*.json"))
needs_transformers = pytest.mark.skipif(importlib.util.find_spec("transformers") is None,
                                        reason="transformers not installed (the hf extra)")
# Model cards' totals and active parameters, in billions as published (tests/configs/hf/README.md cites each)
# and the unit of their last digit (the cards round, or cut: Qwen3-30B-A3B's 3.35B active is published as 3.3B)
PUBLISHED = {"Llama-3.1-8B.json": (8.03, None, 0.01), "Mixtral-8x7B-v0.1.json": (46.7, 12.9, 0.1),
             "Qwen3-30B-A3B.json": (30.5, 3.3, 0.1), "OLMoE-1B-7B-0924.json": (6.9, 1.3, 0.1),
             "Qwen1.5-MoE-A2.7B.json": (14.3, 2.7, 0.1)}


def _transformers_model(path: Path):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    doc = json.loads(path.read_text())
    config = AutoConfig.for_model(doc.pop("model_type"), **doc)
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        return AutoModelForCausalLM.from_config(config)


def test_every_family_has_a_config_checked():
    families = {json.loads((CONFIGS / f).read_text())["model_type"] for f in FILES}
    assert families == set(FAMILIES)


@needs_transformers
@pytest.mark.parametrize("name", FILES)
def test_total_and_active_parameters_equal_what_transformers_builds(name):
    spec = get_model(str(CONFIGS / name))
    model = _transformers_model(CONFIGS / name)
    total = sum(p.numel() for p in model.parameters())  # tied weights once
    assert spec.total_params == total
    experts = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    if spec.moe is None:
        assert experts == 0 and spec.active_params == total
    else:  # the routed experts' tensors, all E of them, of which each token uses top_k
        moe = spec.moe
        assert experts == spec.n_layers * moe.routed_expert_params(spec.d_model)
        assert spec.active_params == total - experts * (moe.num_experts - moe.top_k) // moe.num_experts


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_counts_agree_with_the_model_cards_to_their_last_digit(name):
    spec = get_model(str(CONFIGS / name))
    total, active, unit = PUBLISHED[name]
    assert abs(spec.total_params / 1e9 - total) < unit
    if active is not None:
        assert abs(spec.active_params / 1e9 - active) < unit


def test_what_each_family_brings():
    qwen3 = get_model(str(CONFIGS / "Qwen3-0.6B.json"))
    assert qwen3.tie_embeddings and qwen3.qk_norm_per_head and qwen3.head_dim == 128 and qwen3.kv_heads == 8
    assert get_model(str(CONFIGS / "Qwen2-7B.json")).qkv_bias
    qwen_moe = get_model(str(CONFIGS / "Qwen1.5-MoE-A2.7B.json"))
    assert qwen_moe.qkv_bias and qwen_moe.moe is not None and qwen_moe.moe.shared_gate
    assert qwen_moe.moe.shared_hidden == 5632
    olmo2 = get_model(str(CONFIGS / "OLMo-2-1124-7B.json"))
    assert olmo2.reordered_norm and olmo2.qk_norm and not olmo2.qk_norm_per_head
    llama = get_model(str(CONFIGS / "Llama-3.1-8B.json"))
    assert (llama.rope_theta, llama.kv_heads, llama.norm_eps) == (500_000.0, 8, 1e-5)
    mixtral = get_model(str(CONFIGS / "Mixtral-8x7B-v0.1.json"))
    assert mixtral.moe is not None and mixtral.moe.lb_loss_weight == 0.02 and mixtral.trained_impl == "dropless"
    assert dict(mixtral.sources)["moe.num_experts"].endswith("num_local_experts")


def test_transformers_5_rope_parameters_are_read(tmp_path):
    doc = json.loads((CONFIGS / "Llama-3.1-8B.json").read_text())
    del doc["rope_theta"]
    doc["rope_parameters"] = {"rope_theta": 250_000.0, "rope_type": "llama3", "factor": 8.0}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(doc))
    assert get_model(str(path)).rope_theta == 250_000.0


def test_predict_runs_on_a_hugging_face_config(capsys):
    assert main(["predict", "--gpu", "h100_sxm", "--model", str(CONFIGS / "Qwen3-30B-A3B.json"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"]["total_params"] == 30_532_122_624
    assert {p["impl"] for p in out["predictions"]} == {"dropless"}


REFUSED = [  # (file, key, value, what the one line must say)
    ("Llama-3.1-8B.json", "model_type", "gpt2", "model_type 'gpt2' is not read by tpsbench; it reads llama"),
    ("Mistral-7B-v0.3.json", "sliding_window", 4096, "sliding_window: 4096: sliding-window attention"),
    ("Qwen2-7B.json", "use_sliding_window", True, "sliding_window: 131072: sliding-window attention"),
    ("Llama-3.1-8B.json", "attention_bias", True, "attention_bias: True: a bias on all four"),
    ("Llama-3.1-8B.json", "mlp_bias", True, "mlp_bias: True: an MLP bias"),
    ("Llama-3.1-8B.json", "hidden_act", "gelu", "hidden_act: 'gelu'"),
    ("Llama-3.1-8B.json", "partial_rotary_factor", 0.5, "partial RoPE"),
    ("Qwen3-0.6B.json", "layer_types", ["full_attention", "sliding_attention"], "layer_types"),
    ("Qwen3-30B-A3B.json", "mlp_only_layers", [0, 1], "mlp_only_layers: [0, 1]: dense layers inside an MoE"),
    ("Qwen1.5-MoE-A2.7B.json", "decoder_sparse_step", 2, "decoder_sparse_step: 2: MoE on some layers only"),
    ("Mixtral-8x7B-v0.1.json", "num_experts_per_tok", 9, "moe.top_k = 9: must be in [1, num_experts = 8]"),
    ("OLMoE-1B-7B-0924.json", "hidden_size", None, "hidden_size: missing"),
    ("OLMoE-1B-7B-0924.json", "hidden_size", "2048", "hidden_size: expected int, got '2048'"),
    ("OLMoE-1B-7B-0924.json", "vocab_size", 0, "vocab_size = 0: must be positive"),
    ("Qwen2-7B.json", "num_key_value_heads", 5, "n_kv_heads = 5: does not divide n_heads = 28"),
    ("Qwen3-0.6B.json", "tie_word_embeddings", "true", "tie_word_embeddings: expected bool"),
]


@pytest.mark.parametrize(("name", "key", "value", "said"), REFUSED, ids=[f"{n}:{k}" for n, k, _, _ in REFUSED])
def test_a_setting_the_model_cannot_represent_is_one_line(name, key, value, said, tmp_path, capsys):
    doc = json.loads((CONFIGS / name).read_text())
    if value is None:
        del doc[key]
    else:
        doc[key] = value
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    assert main(["predict", "--gpu", "h100", "--model", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and said in err, err
