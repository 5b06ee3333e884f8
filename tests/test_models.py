"""Zoo entries: parameter counts equal OLMo-core's, and the real modules have exactly that many."""

import pytest
import torch

from tpsbench.errors import UnknownNameError
from tpsbench.models import get_model, llama_ffn_hidden, zoo_models
from tpsbench.nn.transformer import build_model, count_parameters

# Derived by hand from OLMo-core's TransformerConfig.num_params / num_active_params, vocab 50304:
#   total  = V*d (embedding) + L * (4d^2 [+ 2d qk-norm] + 2d norms + FFN) + d*V + d (LM head + final norm)
#   FFN    = 3*d*h (dense) | d*E + 3*d*h*E + 3*d*h_shared (MoE); active: E -> top_k in the expert term.
# e.g. moe_1b: per layer 4*768^2 + 2*768 + 2*768 + 768*256 + 3*768*128*256 + 3*768*128 = 78,351,360;
#   x12 = 940,216,320; + 2*50304*768 + 768 = 1,017,484,032.
EXPECTED = {
    "dense_tiny": (196_928, 196_928),
    "moe_tiny": (210_496, 136_768),
    "dense_1m": (1_663_248, 1_663_248),
    "dense_60m": (57_520_512, 57_520_512),
    "dense_135m": (162_220_800, 162_220_800),
    "dense_271m": (308_577_280, 308_577_280),
    "dense_1b": (1_130_964_992, 1_130_964_992),
    "dense_7b": (6_888_361_984, 6_888_361_984),
    "moe_1b": (1_017_484_032, 115_053_312),
    "moe_1b_a390m": (1_040_063_616, 371_203_200),
    "olmoe_1b_7b": (6_919_161_856, 1_282_017_280),
    # not an OLMo-core model: torchtitan's Qwen3-30B-A3B, whose total its docs print (30,532,122,624 parameters);
    # per layer 2*2048*4096 + 2*2048*512 (grouped-query attention) + 2*128 (head-wise qk-norm) + 2*2048
    # + 2048*128 + 3*2048*768*128 = 623,120,640; x48 + 2*151936*2048 + 2048
    "qwen3_30b_a3b": (30_532_122_624, 3_353_032_704),
}


def test_every_zoo_model_has_expected_counts():
    assert set(EXPECTED) == set(zoo_models())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_param_counts_match_olmo_core(name):
    spec = get_model(name)
    assert (spec.total_params, spec.active_params) == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_module_has_the_counted_parameters(name):
    # Built on the meta device: real module structure, no memory, any size.
    model = build_model(get_model(name), device="meta")
    assert count_parameters(model) == EXPECTED[name][0]


def test_ffn_widths_follow_llama_like_rule():
    assert llama_ffn_hidden(768) == 2048
    assert llama_ffn_hidden(1024) == 2816
    assert llama_ffn_hidden(2048) == 5632
    assert llama_ffn_hidden(4096) == 11008
    assert llama_ffn_hidden(384, 1.5) == 1536
    assert llama_ffn_hidden(16, 1.0) == 256


@pytest.mark.parametrize(("alias", "name"), [
    ("olmo2_1M", "dense_1m"), ("olmo2_60M", "dense_60m"), ("llama2_135M", "dense_135m"),
    ("llama2_271M", "dense_271m"), ("llama2_1B", "dense_1b"), ("llama2_7B", "dense_7b"),
    ("smallmoe_1B", "moe_1b"), ("smallmoe_1B_A390M", "moe_1b_a390m"), ("olmoe_1B_7B", "olmoe_1b_7b"),
    ("SMALLMOE_1b", "moe_1b"),
])
def test_olmo_core_aliases(alias, name):
    assert get_model(alias).name == name


def test_unknown_model_names_closest_choices():
    with pytest.raises(UnknownNameError, match="did you mean moe_1b"):
        get_model("moe_1bb")


def test_active_fractions_match_design_table():
    assert get_model("moe_1b").active_fraction == pytest.approx(0.113, abs=0.005)  # "~11% active"
    assert get_model("moe_1b_a390m").active_fraction == pytest.approx(0.357, abs=0.005)  # "~36% active"


def test_moe_forward_backward_small_model_runs_and_routes_every_token():
    torch.manual_seed(0)
    spec = get_model("moe_tiny")
    model = build_model(spec)
    ids = torch.randint(0, spec.vocab_size, (2, spec.seq_len))
    loss = model.training_loss(ids, ids)
    loss.backward()
    assert torch.isfinite(loss)
    for block in model.blocks:
        counts = block.feed_forward.last_route.tokens_per_expert
        assert int(counts.sum()) == ids.numel() * spec.moe.top_k
        assert block.feed_forward.experts.w1.grad is not None
