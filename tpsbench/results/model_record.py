"""The model a run measured, recorded whole in its results file (``config.model_spec``): a file whose model came
from the user's TOML, a config or a variant compares, explains and plots on a machine that never saw it."""

from __future__ import annotations

from dataclasses import fields

from tpsbench.models import ModelError, ModelSpec, MoESpec
from tpsbench.models.spec import SpecValues
from tpsbench.results.typed import SchemaError, fld, schema


@schema
class MoERecord:
    """The routed experts (tpsbench.models.MoESpec)."""

    num_experts: int = fld("routed experts per MoE layer")
    top_k: int = fld("experts per token")
    expert_hidden: int = fld("hidden size of each expert's SwiGLU")
    shared_hidden: int | None = fld("hidden size of the shared expert (null: none)")
    shared_gate: bool = fld("the shared expert's output gated by a sigmoid (Qwen2-MoE)")
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
    qkv_bias: bool = fld("biases on the query, key and value projections")
    qk_norm_per_head: bool = fld("qk-norm over each head's width")
    reordered_norm: bool = fld("OLMo-2 block (norm after attention and FFN)")
    tie_embeddings: bool = fld("the LM head shares the embedding matrix")
    rope_theta: float = fld("RoPE base")
    norm_eps: float = fld("RMSNorm epsilon")
    seq_len: int = fld("the model's training sequence length", "tokens")
    olmo_name: str = fld("OLMo-core's name for it (empty: none)")
    olmo_factory: str | None = fld("the OLMo-core factory that builds it (null: none)")
    olmo_factory_note: str = fld("why no OLMo-core factory builds it")
    note: str = fld("a short note")
    origin: str = fld("where it came from: zoo, a file, a config, a variant")


def _record_values(record_type: type, source: object) -> SpecValues:
    """The record's fields taken from the spec's attributes of the same names (the record mirrors the spec)."""
    return {f.name: getattr(source, f.name) for f in fields(record_type) if f.name != "moe"}


def model_record(spec: ModelSpec) -> ModelRecord:
    moe = None if spec.moe is None else MoERecord(**_record_values(MoERecord, spec.moe))
    return ModelRecord(moe=moe, **_record_values(ModelRecord, spec))


def model_spec(record: ModelRecord, where: str) -> ModelSpec:
    """The spec a record describes; a record no model can have is a SchemaError naming ``where``."""
    try:
        moe = None if record.moe is None else MoESpec(**_record_values(MoERecord, record.moe))  # type: ignore[arg-type]
        return ModelSpec(moe=moe, **_record_values(ModelRecord, record))  # type: ignore[arg-type]
    except ModelError as exc:
        raise SchemaError(f"field '{where}': {exc}") from None
