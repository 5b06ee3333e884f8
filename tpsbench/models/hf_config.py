"""Hugging Face ``config.json`` files of the llama, mistral, mixtral, qwen2, qwen2_moe, qwen3, qwen3_moe, olmo2 and
olmoe families, read without importing transformers.

Each family is a row of ``FAMILIES``: which keys hold its experts, where its biases and qk-norm are, what a key
absent from the file means (the defaults of transformers' config class). Every model here is a decoder of
RMSNorm, RoPE and SwiGLU blocks that trained dropless (transformers computes every routed token). A setting the
spec cannot represent (sliding-window attention, biases on all four attention projections or on the MLP, layers
without experts in an MoE, partial RoPE, another activation) is one line naming the key. Keys that change no
count (token ids, dtype, cache and generation settings, RoPE frequency scaling, router normalisation) are not
read; docs/models.md lists what is. tests/test_hf_config.py holds the totals to transformers' own models.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from tpsbench.errors import ParsedObject
from tpsbench.models.config_tree import ConfigTable, errors_at, has_json_type
from tpsbench.models.fields import source_key
from tpsbench.models.spec import ModelError, ModelSpec, MoESpec, SpecValues


class QkNorm(Enum):
    NONE = "none"
    WHOLE = "whole"  # over the whole query and key projections (OLMo 2, OLMoE)
    PER_HEAD = "per_head"  # over each head's width (Qwen3)


@dataclass(frozen=True, slots=True)
class ExpertKeys:
    """Where a family's config holds its experts."""

    experts: tuple[str, ...]  # the first key present gives the count (transformers renamed some)
    hidden: str
    lb_default: float  # router_aux_loss_coef when absent
    shared: str | None = None  # shared expert's hidden size (0: none), gated by a sigmoid
    layer_choice: bool = False  # has decoder_sparse_step and mlp_only_layers (MoE on some layers only)


@dataclass(frozen=True, slots=True)
class Family:
    norm_eps: float  # rms_norm_eps when absent
    rope_theta: float = 10_000.0
    qk_norm: QkNorm = QkNorm.NONE
    reordered_norm: bool = False
    qkv_bias: bool | str = False  # True: always (Qwen2); a key: that key, default true (Qwen2-MoE)
    experts: ExpertKeys | None = None
    sliding_switch: str | None = None  # a key that must be true for sliding_window to apply (Qwen)


FAMILIES: dict[str, Family] = {
    "llama": Family(norm_eps=1e-6),
    "mistral": Family(norm_eps=1e-6),
    "mixtral": Family(norm_eps=1e-5, rope_theta=1e6,
                      experts=ExpertKeys(("num_local_experts", "num_experts"), "intermediate_size", 0.001)),
    "qwen2": Family(norm_eps=1e-6, qkv_bias=True, sliding_switch="use_sliding_window"),
    "qwen2_moe": Family(norm_eps=1e-6, qkv_bias="qkv_bias", sliding_switch="use_sliding_window",
                        experts=ExpertKeys(("num_experts",), "moe_intermediate_size", 0.001,
                                           shared="shared_expert_intermediate_size", layer_choice=True)),
    "qwen3": Family(norm_eps=1e-6, qk_norm=QkNorm.PER_HEAD, sliding_switch="use_sliding_window"),
    "qwen3_moe": Family(norm_eps=1e-6, qk_norm=QkNorm.PER_HEAD, sliding_switch="use_sliding_window",
                        experts=ExpertKeys(("num_experts", "num_local_experts"), "moe_intermediate_size", 0.001,
                                           layer_choice=True)),
    "olmo2": Family(norm_eps=1e-5, qk_norm=QkNorm.WHOLE, reordered_norm=True),
    "olmoe": Family(norm_eps=1e-5, qk_norm=QkNorm.WHOLE,
                    experts=ExpertKeys(("num_experts", "num_local_experts"), "intermediate_size", 0.01)),
}


class _Config(ConfigTable):
    """The config's top-level keys (a flat object: nothing is refused for being unread), each value's source kept."""

    def __init__(self, doc: ParsedObject, where: str, family: str) -> None:
        super().__init__(where, "", doc, ignorable=())
        self.doc, self.family = doc, family
        self.sources: dict[str, str] = {}

    def get(self, key: str, kind: type, default: object = None, *, attr: str | None = None) -> object:
        if self.doc.get(key) is None and default is None:
            raise self.error(key, f"missing (a {self.family} config gives it)")
        value = self.value(key, kind, default)
        if attr and self.doc.get(key) is not None:
            self.sources[attr] = f"{self.where}: {key}"
        return value

    def refuse_if(self, key: str, condition: bool, why: str) -> None:
        if condition:
            raise self.error(key, f"{self.doc.get(key)!r}: {why} is not modelled by tpsbench")


def _rope(cfg: _Config, family: Family) -> float:
    """RoPE base from transformers 5's ``rope_parameters`` or the older top-level ``rope_theta``; partial RoPE is
    refused, frequency scaling (llama3, yarn) changes no count and is not read."""
    params = cfg.doc.get("rope_parameters")
    nested = params if isinstance(params, dict) else {}
    partial = nested.get("partial_rotary_factor", cfg.doc.get("partial_rotary_factor", 1.0))
    cfg.refuse_if("partial_rotary_factor", partial not in (None, 1, 1.0), "partial RoPE")
    if "rope_theta" in nested:
        theta = nested["rope_theta"]
        if not has_json_type(theta, float):
            raise cfg.error("rope_parameters.rope_theta", f"expected a number, got {theta!r}")
        cfg.sources["rope_theta"] = f"{cfg.where}: rope_parameters.rope_theta"
        return float(theta)
    return cfg.get("rope_theta", float, family.rope_theta, attr="rope_theta")  # type: ignore[return-value]


def _refusals(cfg: _Config, family: Family) -> None:
    doc = cfg.doc
    cfg.refuse_if("hidden_act", doc.get("hidden_act", "silu") != "silu", "an activation other than SwiGLU's silu")
    sliding = doc.get("sliding_window") not in (None, 0)
    if family.sliding_switch is not None:
        sliding = sliding and bool(doc.get(family.sliding_switch))
    cfg.refuse_if("sliding_window", sliding, "sliding-window attention")
    layer_types = doc.get("layer_types")
    cfg.refuse_if("layer_types", isinstance(layer_types, list) and any(t != "full_attention" for t in layer_types),
                  "a layer that is not full attention")
    cfg.refuse_if("attention_bias", bool(doc.get("attention_bias")), "a bias on all four attention projections")
    cfg.refuse_if("mlp_bias", bool(doc.get("mlp_bias")), "an MLP bias")
    if family.experts is not None and family.experts.layer_choice:
        cfg.refuse_if("decoder_sparse_step", doc.get("decoder_sparse_step", 1) != 1, "MoE on some layers only")
        cfg.refuse_if("mlp_only_layers", bool(doc.get("mlp_only_layers")), "dense layers inside an MoE model")


def _experts(cfg: _Config, keys: ExpertKeys) -> MoESpec:
    count_key = next((k for k in keys.experts if cfg.doc.get(k) is not None), keys.experts[0])
    shared = cfg.get(keys.shared, int, 0, attr="moe.shared_hidden") if keys.shared else 0
    moe = MoESpec(
        num_experts=cfg.get(count_key, int, attr="moe.num_experts"),  # type: ignore[arg-type]
        top_k=cfg.get("num_experts_per_tok", int, attr="moe.top_k"),  # type: ignore[arg-type]
        expert_hidden=cfg.get(keys.hidden, int, attr="moe.expert_hidden"),  # type: ignore[arg-type]
        shared_hidden=shared or None, shared_gate=bool(shared), capacity_factor=None,  # type: ignore[arg-type]
        lb_loss_weight=cfg.get("router_aux_loss_coef", float, keys.lb_default,  # type: ignore[arg-type]
                               attr="moe.lb_loss_weight"),
        z_loss_weight=cfg.get("router_z_loss_coef", float, 0.0, attr="moe.z_loss_weight"))  # type: ignore[arg-type]
    return moe


def spec_from_hugging_face(doc: ParsedObject, where: str, name: str) -> ModelSpec:
    """The model a Hugging Face config describes, named ``name``."""
    with errors_at(where):
        return _spec(doc, where, name)


def _spec(doc: ParsedObject, where: str, name: str) -> ModelSpec:
    model_type = doc.get("model_type")
    if model_type not in FAMILIES:
        raise ModelError(f"{where}: model_type {model_type!r} is not read by tpsbench; it reads "
                         f"{', '.join(FAMILIES)} (or write a model file: docs/models.md)")
    family = FAMILIES[str(model_type)]
    cfg = _Config(doc, where, str(model_type))
    _refusals(cfg, family)
    heads = cfg.get("num_attention_heads", int, attr="n_heads")
    values: SpecValues = {
        "d_model": cfg.get("hidden_size", int, attr="d_model"),
        "n_layers": cfg.get("num_hidden_layers", int, attr="n_layers"),
        "n_heads": heads,
        "n_kv_heads": cfg.get("num_key_value_heads", int, heads, attr="n_kv_heads"),
        "vocab_size": cfg.get("vocab_size", int, attr="vocab_size"),
        "tie_embeddings": cfg.get("tie_word_embeddings", bool, False, attr="tie_embeddings"),
        "norm_eps": cfg.get("rms_norm_eps", float, family.norm_eps, attr="norm_eps"),
        "rope_theta": _rope(cfg, family),
        "qk_norm": family.qk_norm is not QkNorm.NONE,
        "qk_norm_per_head": family.qk_norm is QkNorm.PER_HEAD,
        "reordered_norm": family.reordered_norm,
        "qkv_bias": family.qkv_bias if isinstance(family.qkv_bias, bool)
        else cfg.get(family.qkv_bias, bool, True, attr="qkv_bias"),
    }
    if doc.get("head_dim") is not None:
        values["head_width"] = cfg.get("head_dim", int, attr="head_width")
    if family.experts is None:
        values["ffn_hidden"] = cfg.get("intermediate_size", int, attr="ffn_hidden")
    else:
        values["moe"] = _experts(cfg, family.experts)
    family_note = f"{where}: model_type {model_type}"
    for attr in ("qk_norm", "qk_norm_per_head", "reordered_norm"):
        cfg.sources.setdefault(attr, family_note)
    if isinstance(family.qkv_bias, bool):
        cfg.sources["qkv_bias"] = family_note
    sources = tuple((source_key(attr), text) for attr, text in cfg.sources.items())
    return ModelSpec(name=name, olmo_name="", origin=where, sources=sources,
                     **values)  # type: ignore[arg-type]
