"""OLMo-core configs read without importing olmo_core: the experiment ``config.json`` its ``ConfigSaverCallback``
writes into every checkpoint folder (and W&B keeps), whose ``model`` is ``TransformerConfig.as_config_dict()``, or
that bare ``TransformerConfig`` dict.

``as_config_dict`` leaves out fields that are None, so an absent key reads as OLMo-core 3's default for it (a bias
left out is a bias: OLMo-core builds one unless ``bias`` is false). What tpsbench reads, what it passes over
(numerics and initialisation: nothing that changes parameters, FLOPs or memory) and what it refuses is listed in
docs/models.md; tests/test_olmo_config.py holds the counts to OLMo-core's own for every zoo model and for
generated configs.
"""

from __future__ import annotations

from dataclasses import dataclass

from tpsbench.errors import ParsedObject
from tpsbench.models.config_tree import ConfigTable, errors_at, read_table
from tpsbench.models.fields import source_key
from tpsbench.models.spec import ModelSpec, MoESpec, SpecValues

# Keys that change neither parameters, FLOPs nor memory: precision of a norm or RoPE, initialisation, kernels
# chosen, the loss's bookkeeping. Everything else a table holds is read or, when set, refused.
IGNORED = frozenset({
    "_CLASS_", "type", "dtype", "init_method", "init_seed", "init_std", "embedding_init_std", "embed_scale",
    "full_precision", "use_flash", "backend", "clip_qkv", "use_recompute_qkv_prep", "loss_implementation",
    "lb_loss_granularity", "scale_loss_by_num_layers", "jitter_eps", "normalize_expert_weights", "scaling",
})
BLOCKS = {"default": (False, False), "reordered_norm": (False, True), "moe": (True, False),
          "moe_reordered_norm": (True, True)}  # block name -> (MoE feed-forward, reordered norm)
RMS_NORMS = ("rms", "fused_rms", "qwen_rms")
ROPES = ("default", "fused", "complex")  # the same rotation, three implementations
NO_BIAS = "biases are not modelled (OLMo-core builds one unless bias is false)"


def is_olmo_core_config(doc: ParsedObject) -> bool:
    """An experiment config (a ``model`` object with a block) or a bare ``TransformerConfig``."""
    model = doc.get("model")
    return (isinstance(model, dict) and "block" in model) or ("block" in doc and "d_model" in doc)


@dataclass
class _Read:
    """What the tables give, with the path each value came from."""

    values: SpecValues
    sources: dict[str, str]

    def put(self, attr: str, value: object, table: ConfigTable, key: str) -> None:
        self.values[attr] = value
        self.sources[attr] = table.key_path(key)


def _norm_eps(norm: ConfigTable) -> float:
    norm.choice("name", RMS_NORMS, "default")
    norm.must_be("bias", False, "a norm " + NO_BIAS)
    if norm.raw("elementwise_affine", True) is not True:
        raise norm.error("elementwise_affine", "a norm without its weight is not modelled")
    return norm.value("eps", float, 1e-5)


def _ffn_hidden(ffn: ConfigTable) -> int:
    ffn.choice("name", ("default",), "default")
    ffn.choice("activation", ("silu",), "silu")
    ffn.must_be("bias", False, "feed-forward " + NO_BIAS)
    return ffn.value("hidden_size", int)


def _attention(att: ConfigTable, out: _Read) -> list[float]:
    """Heads, widths, qk-norm and RoPE; the qk-norm's epsilon, if any, to be checked against the block's."""
    att.choice("name", ("default",), "default")
    out.put("n_heads", att.value("n_heads", int, 16), att, "n_heads")
    for key, attr in (("n_kv_heads", "n_kv_heads"), ("head_dim", "head_width")):
        if att.raw(key, None) is not None:
            out.put(attr, att.value(key, int), att, key)
    att.must_be("bias", False, "attention " + NO_BIAS)
    rope = att.table("rope", required=True)
    assert rope is not None
    rope.choice("name", ROPES, "default")
    if rope.value("partial_rotary_factor", float, 1.0) != 1.0:
        raise rope.error("partial_rotary_factor", "partial RoPE is not modelled")
    out.put("rope_theta", rope.value("theta", float, 500_000.0), rope, "theta")
    rope.finish()
    qk = att.table("qk_norm")
    out.put("qk_norm", qk is not None, att, "qk_norm")
    out.put("qk_norm_per_head", att.value("use_head_qk_norm", bool, False), att, "use_head_qk_norm")
    return [eps for eps in [read_table(qk, _norm_eps)] if eps is not None]


def _moe(moe: ConfigTable, out: _Read) -> MoESpec:
    kind = moe.choice("name", ("default", "dropless"), "default")
    if kind == "dropless":
        moe.raw("capacity_factor", None)  # a factor left in a dropless MoE's config is unused by OLMo-core
        capacity = None
    else:  # OLMo-core's capacity MoE (name "default") takes 1.2 when the config has none
        capacity = moe.value("capacity_factor", float, 1.2)
    router = moe.table("router")
    top_k = 1
    if router is not None:
        router.choice("name", ("default",), "default")
        router.choice("gating_function", ("softmax",), "softmax")
        top_k = router.value("top_k", int, 1)
        router.finish()
    shared = read_table(moe.table("shared_mlp"), _ffn_hidden)
    for attr, key in (("num_experts", "num_experts"), ("expert_hidden", "hidden_size"), ("top_k", "router")):
        out.sources[f"moe.{attr}"] = moe.key_path(key)
    return MoESpec(num_experts=moe.value("num_experts", int, 1), top_k=top_k,
                   expert_hidden=moe.value("hidden_size", int, 256), shared_hidden=shared, capacity_factor=capacity,
                   # absent: the dataclass's 0.01, as OLMo-core's from_dict reads it; null: no load-balancing loss
                   lb_loss_weight=moe.value("lb_loss_weight", float, 0.0) if "lb_loss_weight" in moe.data else 0.01,
                   z_loss_weight=moe.value("z_loss_weight", float, 0.0))


def _block(block: ConfigTable, out: _Read) -> list[float]:
    """The block's attention, norms and feed-forward; every norm epsilon found."""
    name = block.choice("name", tuple(BLOCKS), "default")
    is_moe, reordered = BLOCKS[name]
    out.put("reordered_norm", reordered, block, "name")
    att = block.table("sequence_mixer", required=True)
    assert att is not None
    eps = _attention(att, out)
    att.finish()
    norm = block.table("layer_norm", required=True)
    assert norm is not None
    out.put("norm_eps", _norm_eps(norm), norm, "eps")
    norm.finish()
    if is_moe:
        moe = block.table("feed_forward_moe", required=True)
        assert moe is not None
        out.values["moe"] = _moe(moe, out)
        moe.finish()
    else:
        ffn = block.table("feed_forward", required=True)
        assert ffn is not None
        out.put("ffn_hidden", _ffn_hidden(ffn), ffn, "hidden_size")
        ffn.finish()
    return eps


def _sequence_length(doc: ParsedObject) -> tuple[int, str] | None:
    """The training sequence length an experiment config states (dataset, else train module), if any."""
    for section, key in (("dataset", "sequence_length"), ("train_module", "max_sequence_length")):
        value = doc.get(section, {}).get(key) if isinstance(doc.get(section), dict) else None  # type: ignore[union-attr]
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value, f"{section}.{key}"
    return None


def spec_from_olmo_core(doc: ParsedObject, where: str, name: str) -> ModelSpec:
    """The model an OLMo-core config describes, named ``name``; any field it cannot represent is a one-line
    ModelError naming the field."""
    with errors_at(where):
        return _spec(doc, where, name)


def _spec(doc: ParsedObject, where: str, name: str) -> ModelSpec:
    nested = isinstance(doc.get("model"), dict)
    root = ConfigTable(where, "model" if nested else "", doc["model"] if nested else doc, IGNORED)  # type: ignore[arg-type]
    out = _Read({}, {})
    for key in ("d_model", "vocab_size", "n_layers"):
        out.put(key, root.value(key, int), root, key)
    root.choice("name", ("default", "moe"), "default")
    out.put("tie_embeddings", root.value("tie_word_embeddings", bool, False), root, "tie_word_embeddings")
    block = root.table("block", required=True)
    assert block is not None
    if "sequence_mixer" not in block.data and block.data and all(isinstance(v, dict) for v in block.data.values()):
        raise root.error("block", "several named block configs (a block_pattern) are not modelled")
    eps = _block(block, out)
    block.finish()
    head = root.table("lm_head", required=True)
    assert head is not None
    head.choice("name", ("default",), "default")
    head.must_be("bias", False, "LM head " + NO_BIAS)
    head_norm = head.table("layer_norm", required=True)
    eps += [read_table(head_norm, _norm_eps) or 0.0]
    head.finish()
    root.finish()
    if any(e != out.values["norm_eps"] for e in eps):
        raise root.error("block.layer_norm.eps", f"norms with different epsilons ({sorted(set(eps))} and "
                                                 f"{out.values['norm_eps']}) are not modelled")
    seq = _sequence_length(doc) if nested else None
    if seq is not None:
        out.values["seq_len"], out.sources["seq_len"] = seq
    sources = tuple((source_key(attr), f"{where}: {path}") for attr, path in out.sources.items())
    return ModelSpec(name=name, olmo_name="", origin=where, sources=sources, **out.values)  # type: ignore[arg-type]
