"""The model a run measured, recorded whole in its results file (``config.model_spec``): a file whose model came
from the user's TOML, a config or a variant compares, explains and plots on a machine that never saw it."""

from __future__ import annotations

from tpsbench.models import ModelError, ModelSpec, MoESpec
from tpsbench.results.typed import SchemaError, fld, schema


@schema
class MoERecord:
    """The routed experts (tpsbench.models.MoESpec)."""

    num_experts: int = fld("routed experts per MoE layer")
    top_k: int = fld("experts per token")
    expert_hidden: int = fld("hidden size of each expert's SwiGLU")
    shared_hidden: int | None = fld("hidden size of the shared expert (null: none)")
    capacity_factor: float | None = fld("capacity factor the model was trained with (null: dropless)")
    lb_loss_weight: float = fld("load-balancing loss weight")
    z_loss_weight: float = fld("router z-loss weight")


@schema
class ModelRecord:
    """Every dimension of the model measured (tpsbench.models.ModelSpec), and where it came from."""

    name: str = fld("the model's name, as points name it")
    d_model: int = fld("model width")
    n_layers: int = fld("transformer blocks")
    n_heads: int = fld("query heads")
    n_kv_heads: int | None = fld("key/value heads (null: n_heads)")
    head_width: int | None = fld("width of a head (null: d_model / n_heads)")
    ffn_hidden: int | None = fld("dense SwiGLU hidden size (null: an MoE model)")
    moe: MoERecord | None = fld("the routed experts (null: a dense model)")
    vocab_size: int = fld("vocabulary size")
    qk_norm: bool = fld("RMSNorm on the query and key projections")
    qk_norm_per_head: bool = fld("qk-norm over each head's width")
    reordered_norm: bool = fld("OLMo-2 block (norm after attention and FFN)")
    rope_theta: float = fld("RoPE base")
    norm_eps: float = fld("RMSNorm epsilon")
    seq_len: int = fld("the model's training sequence length", "tokens")
    olmo_name: str = fld("OLMo-core's name for it (empty: none)")
    olmo_factory: str | None = fld("the OLMo-core factory that builds it (null: none)")
    olmo_factory_note: str = fld("why no OLMo-core factory builds it")
    note: str = fld("a short note")
    origin: str = fld("where it came from: zoo, a file, a config, a variant")


def model_record(spec: ModelSpec) -> ModelRecord:
    moe = spec.moe
    return ModelRecord(
        name=spec.name, d_model=spec.d_model, n_layers=spec.n_layers, n_heads=spec.n_heads,
        n_kv_heads=spec.n_kv_heads, head_width=spec.head_width, ffn_hidden=spec.ffn_hidden,
        moe=None if moe is None else MoERecord(
            num_experts=moe.num_experts, top_k=moe.top_k, expert_hidden=moe.expert_hidden,
            shared_hidden=moe.shared_hidden, capacity_factor=moe.capacity_factor,
            lb_loss_weight=moe.lb_loss_weight, z_loss_weight=moe.z_loss_weight),
        vocab_size=spec.vocab_size, qk_norm=spec.qk_norm, qk_norm_per_head=spec.qk_norm_per_head,
        reordered_norm=spec.reordered_norm, rope_theta=spec.rope_theta, norm_eps=spec.norm_eps, seq_len=spec.seq_len,
        olmo_name=spec.olmo_name, olmo_factory=spec.olmo_factory, olmo_factory_note=spec.olmo_factory_note,
        note=spec.note, origin=spec.origin)


def model_spec(record: ModelRecord, where: str) -> ModelSpec:
    """The spec a record describes; a record no model can have is a SchemaError naming ``where``."""
    r = record
    try:
        moe = None if r.moe is None else MoESpec(
            num_experts=r.moe.num_experts, top_k=r.moe.top_k, expert_hidden=r.moe.expert_hidden,
            shared_hidden=r.moe.shared_hidden, capacity_factor=r.moe.capacity_factor,
            lb_loss_weight=r.moe.lb_loss_weight, z_loss_weight=r.moe.z_loss_weight)
        return ModelSpec(
            name=r.name, olmo_name=r.olmo_name, d_model=r.d_model, n_layers=r.n_layers, n_heads=r.n_heads,
            ffn_hidden=r.ffn_hidden, moe=moe, vocab_size=r.vocab_size, qk_norm=r.qk_norm, n_kv_heads=r.n_kv_heads,
            head_width=r.head_width, qk_norm_per_head=r.qk_norm_per_head, reordered_norm=r.reordered_norm,
            rope_theta=r.rope_theta, norm_eps=r.norm_eps, seq_len=r.seq_len, note=r.note,
            olmo_factory=r.olmo_factory, olmo_factory_note=r.olmo_factory_note, origin=r.origin)
    except ModelError as exc:
        raise SchemaError(f"field '{where}': {exc}") from None
