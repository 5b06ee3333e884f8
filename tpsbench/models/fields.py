"""The keys a model is described by: one table, read by the model-file parser, the variant syntax and the docs.

A key lives in the ``[model]`` table or the ``[moe]`` table of a model file and sets one attribute of
:class:`~tpsbench.models.spec.ModelSpec` or :class:`~tpsbench.models.spec.MoESpec`. Range checks (sizes positive,
heads dividing the width, top_k within the experts) belong to the specs themselves, so that every source of a
model (file, config, variant) gets them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Table(StrEnum):
    MODEL = "model"
    MOE = "moe"


class MoEType(StrEnum):
    """How the experts were trained: OLMo-core's ``MoEType`` (``default`` is the capacity kind)."""

    CAPACITY = "capacity"  # token dropping: each expert takes at most capacity_factor x its share of rows
    DROPLESS = "dropless"  # every routed token computed


@dataclass(frozen=True, slots=True)
class Field:
    key: str  # as written in a model file and a variant
    table: Table
    kind: type  # int, float, bool, or MoEType
    required: bool
    meaning: str
    attr: str = ""  # the spec attribute, when it is not named like the key

    @property
    def attribute(self) -> str:
        return self.attr or self.key

    @property
    def type_name(self) -> str:
        if self.kind is MoEType:
            return " or ".join(f'"{t}"' for t in MoEType)
        return {int: "an integer", float: "a number", bool: "true or false"}[self.kind]


FIELDS: tuple[Field, ...] = (
    Field("d_model", Table.MODEL, int, True, "model width"),
    Field("n_layers", Table.MODEL, int, True, "transformer blocks"),
    Field("n_heads", Table.MODEL, int, True, "query heads"),
    Field("vocab_size", Table.MODEL, int, True, "vocabulary size (embedding and LM head rows)"),
    Field("ffn_hidden", Table.MODEL, int, False, "dense SwiGLU hidden size (dense models; an MoE model has [moe])"),
    Field("n_kv_heads", Table.MODEL, int, False, "key/value heads (grouped-query attention); default n_heads"),
    Field("head_dim", Table.MODEL, int, False, "width of a head; default d_model / n_heads", attr="head_width"),
    Field("qk_norm", Table.MODEL, bool, False, "RMSNorm on the query and key projections; default false"),
    Field("qkv_bias", Table.MODEL, bool, False,
          "biases on the query, key and value projections (Qwen2); default false"),
    Field("qk_norm_per_head", Table.MODEL, bool, False,
          "qk-norm over each head's head_dim (Qwen3) instead of the whole projection; default false"),
    Field("reordered_norm", Table.MODEL, bool, False,
          "OLMo-2 block, h = x + norm(attn(x)), instead of pre-norm; default false"),
    Field("tie_embeddings", Table.MODEL, bool, False,
          "the LM head multiplies by the embedding matrix (one V x d parameter); default false"),
    Field("rope_theta", Table.MODEL, float, False, "RoPE base; default 10000"),
    Field("norm_eps", Table.MODEL, float, False, "RMSNorm epsilon; default 1e-5"),
    Field("seq_len", Table.MODEL, int, False, "training sequence length; default 2048"),
    Field("num_experts", Table.MOE, int, True, "routed experts per MoE layer"),
    Field("top_k", Table.MOE, int, True, "experts each token is routed to"),
    Field("expert_hidden", Table.MOE, int, True, "hidden size of each routed expert's SwiGLU"),
    Field("type", Table.MOE, MoEType, True, "how the experts were trained: capacity (token dropping) or dropless"),
    Field("capacity_factor", Table.MOE, float, False, "rows per expert over its balanced share (type capacity only)"),
    Field("shared_hidden", Table.MOE, int, False, "hidden size of the shared expert; absent: none"),
    Field("shared_gate", Table.MOE, bool, False,
          "the shared expert's output scaled by a sigmoid gate of width d_model (Qwen2-MoE); default false"),
    Field("lb_loss_weight", Table.MOE, float, False, "load-balancing loss weight; default 0.01"),
    Field("z_loss_weight", Table.MOE, float, False, "router z-loss weight; default 0.001"),
)


def fields_of(table: Table) -> dict[str, Field]:
    return {f.key: f for f in FIELDS if f.table is table}


def source_key(attr: str) -> str:
    """The key a value's source is filed under, as a model file names it: 'model.head_dim' for the spec's
    ``head_width``; 'moe.top_k' as given."""
    if "." in attr:
        return attr
    f = next(f for f in FIELDS if f.table is Table.MODEL and f.attribute == attr)
    return f"{f.table}.{f.key}"
