"""A model as tpsbench counts it: a frozen spec with exact parameter counts, whatever it was read from (a zoo
file, a user's TOML, an OLMo-core or Hugging Face config, a variant).

Every spec is plain data (no torch). Parameter counts follow OLMo-core's
``TransformerConfig.num_params`` / ``num_active_params`` term by term
(``src/olmo_core/nn/transformer/config.py``, ``nn/attention``, ``nn/moe``), so tpsbench and the
users' training logs agree on what "1B total, 11% active" means:

* embedding ``V*d``, LM head ``d*V`` plus its own final RMSNorm ``d``; tied embeddings count ``V*d`` once;
* per block: attention ``2*d*q + 2*d*kv`` with ``q = heads*head_dim`` and ``kv = kv_heads*head_dim`` (``4*d*d``
  without grouped-query attention), plus ``q + 2*kv`` with q/k/v biases (Qwen2's; none by default), qk-norm
  ``q + kv`` when enabled (OLMo-core's default non-head-wise qk-norm normalises the full q and k projections) or
  ``2*head_dim`` when head-wise (Qwen3's), two block RMSNorms ``2*d``;
* dense FFN (SwiGLU) ``3*d*h``; MoE: router ``d*E`` (no bias), routed experts ``3*d*h*E``, shared expert
  ``3*d*h_shared`` (plus its gate ``d`` in Qwen2-MoE). Active parameters replace ``E`` by ``top_k`` in the
  routed-expert term.

FFN width, when not given, is OLMo-core's ``llama_like`` rule:
``round_up(int(multiplier * int(8*d/3)), 256)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from tpsbench.errors import InputError

# GPT-2 vocabulary (50257) padded to a multiple of 128, as OLMo-core's tokenizer configs do.
GPT2_PADDED_VOCAB = 50304
# The users' training setup (OLMo-core's single-GPU recipe as their scripts use it): tokens per microbatch (16
# sequences of 2048) and per optimizer step (32 microbatches, gradient accumulation).
USERS_MICROBATCH_TOKENS = 32_768
USERS_GLOBAL_BATCH_TOKENS = 1_048_576


def default_global_batch(microbatch: int) -> int:
    """The users' global batch rounded down to a multiple of the microbatch (at least one microbatch)."""
    return max(microbatch, USERS_GLOBAL_BATCH_TOKENS // microbatch * microbatch)


# Keyword arguments of ModelSpec or MoESpec gathered from a source (file, config, variant, record), by attribute
# name: the specs' own checks run on them.
SpecValues = dict[str, object]


class ModelError(InputError):
    """A model that cannot exist (a size of zero, heads that do not divide the width, ...) or a model source
    (file, config, variant) that does not describe one; the message names the key."""


def _positive(what: str, **sizes: int | float | None) -> None:
    for key, value in sizes.items():
        if value is not None and not (value > 0 and math.isfinite(value)):
            raise ModelError(f"{what}{key} = {value}: must be positive and finite")


def llama_ffn_hidden(d_model: int, multiplier: float | None = None, multiple_of: int = 256) -> int:
    """OLMo-core ``TransformerConfig.llama_like``: int(8d/3), times the multiplier, rounded up."""
    hidden = int(8 * d_model / 3)
    if multiplier is not None:
        hidden = int(multiplier * hidden)
    return multiple_of * math.ceil(hidden / multiple_of)


@dataclass(frozen=True, slots=True, kw_only=True)
class MoESpec:
    """A routed-expert FFN (OLMo-core ``MoEConfig``)."""

    num_experts: int
    top_k: int
    expert_hidden: int
    shared_hidden: int | None = None
    shared_gate: bool = False  # Qwen2-MoE: the shared expert's output scaled by sigmoid(x . g), g of width d
    capacity_factor: float | None = 1.2  # None: the users trained it dropless
    lb_loss_weight: float = 0.01
    z_loss_weight: float = 0.001

    def layer_params(self, d_model: int, *, active: bool = False) -> int:
        """Router ``d*E`` (no bias), routed experts ``3*d*h`` each (all E, or top_k when ``active``), shared
        expert ``3*d*h_shared``: OLMo-core's count, and the matmul weights autocast casts every forward."""
        experts = self.top_k if active else self.num_experts
        shared = 3 * d_model * self.shared_hidden if self.shared_hidden else 0
        shared += d_model if self.shared_gate else 0
        return d_model * self.num_experts + 3 * d_model * self.expert_hidden * experts + shared

    def routed_expert_params(self, d_model: int) -> int:
        """The stacked expert weights W1, W3, W2 of all E experts (no router, no shared expert)."""
        return 3 * d_model * self.expert_hidden * self.num_experts

    def __post_init__(self) -> None:
        _positive("moe.", num_experts=self.num_experts, expert_hidden=self.expert_hidden,
                  shared_hidden=self.shared_hidden, capacity_factor=self.capacity_factor)
        if self.shared_gate and not self.shared_hidden:
            raise ModelError("moe.shared_gate = true needs a shared expert (shared_hidden)")
        if not 1 <= self.top_k <= self.num_experts:
            raise ModelError(f"moe.top_k = {self.top_k}: must be in [1, num_experts = {self.num_experts}]")
        if self.lb_loss_weight < 0 or self.z_loss_weight < 0:
            raise ModelError("moe.lb_loss_weight and moe.z_loss_weight must be >= 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSpec:
    """A llama-style decoder (RMSNorm, RoPE, SwiGLU, an LM head with its own final norm, untied unless said)."""

    name: str
    olmo_name: str
    d_model: int
    n_layers: int
    n_heads: int
    ffn_hidden: int | None = None  # dense FFN width; None for MoE models
    moe: MoESpec | None = None
    vocab_size: int = GPT2_PADDED_VOCAB
    qk_norm: bool = False
    # Grouped-query attention and a free head width (Qwen3: 32 query heads of 128 over d_model 2048, 4 key/value
    # heads): None keeps multi-head attention with head_dim = d_model / n_heads, as every OLMo-core model here.
    n_kv_heads: int | None = None
    head_width: int | None = None
    qkv_bias: bool = False  # biases on the query, key and value projections (Qwen2's; none on the output)
    qk_norm_per_head: bool = False  # RMSNorm over each head's head_dim (Qwen3) instead of the whole projection
    reordered_norm: bool = False  # OLMo-2 block: h = x + norm(attn(x)) instead of x + attn(norm(x))
    tie_embeddings: bool = False  # the LM head multiplies by the embedding matrix (one V x d parameter)
    rope_theta: float = 10_000.0
    # RMSNorm epsilon: OLMo-core's llama_like default, 1e-5; its olmo2 and olmoe factories use 1e-6. It matters:
    # at the embedding's init scale (std 0.02) 1e-6 against 1e-5 moved logits by 1% (tests/test_olmo_core.py).
    norm_eps: float = 1e-5
    seq_len: int = 2048
    note: str = ""
    # The OLMo-core 3 factory (``TransformerConfig.<name>(vocab_size)``) that builds exactly this model, or None
    # when tpsbench builds it from its dimensions (tpsbench/stacks/olmo_core.py; tests/test_olmo_core.py checks
    # both: the same parameters and FLOPs); ``olmo_factory_note`` says why no factory fits.
    olmo_factory: str | None = None
    olmo_factory_note: str = ""
    # Where the spec came from (a zoo file, the user's file or config, a variant of another model) and, per key,
    # where its value comes from: shown by `list models`, kept in results; not part of the model's identity.
    origin: str = field(default="", compare=False)
    sources: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        _positive("", d_model=self.d_model, n_layers=self.n_layers, n_heads=self.n_heads, ffn_hidden=self.ffn_hidden,
                  vocab_size=self.vocab_size, n_kv_heads=self.n_kv_heads, head_dim=self.head_width,
                  rope_theta=self.rope_theta, norm_eps=self.norm_eps, seq_len=self.seq_len)
        if (self.ffn_hidden is None) == (self.moe is None):
            raise ModelError("give exactly one of ffn_hidden (a dense model) or a [moe] table (an MoE model)")
        if self.head_width is None and self.d_model % self.n_heads:
            raise ModelError(f"n_heads = {self.n_heads}: does not divide d_model = {self.d_model} (give head_dim "
                             "for a head width of its own)")
        if self.n_heads % self.kv_heads:
            raise ModelError(f"n_kv_heads = {self.kv_heads}: does not divide n_heads = {self.n_heads}")
        if self.qk_norm_per_head and not self.qk_norm:
            raise ModelError("qk_norm_per_head = true needs qk_norm = true")

    # --- shape helpers -------------------------------------------------------------------------
    @property
    def is_moe(self) -> bool:
        return self.moe is not None

    @property
    def head_dim(self) -> int:
        return self.head_width if self.head_width is not None else self.d_model // self.n_heads

    @property
    def trained_impl(self) -> str:
        """The MoE implementation that computes what the model trained with: ``capacity`` (token dropping) when
        it has a capacity factor, else ``dropless``; the default of predict and of OLMo-core runs."""
        return "capacity" if self.moe is not None and self.moe.capacity_factor is not None else "dropless"

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads if self.n_kv_heads is not None else self.n_heads

    @property
    def q_width(self) -> int:
        """Width of the query projection (and of the attention output): heads x head_dim."""
        return self.n_heads * self.head_dim

    @property
    def kv_width(self) -> int:
        """Width of each of the key and value projections: kv_heads x head_dim."""
        return self.kv_heads * self.head_dim

    @property
    def is_mha(self) -> bool:
        """Plain multi-head attention over the model width (every OLMo-core model in the zoo)."""
        return self.q_width == self.d_model and self.kv_width == self.d_model

    # --- parameter counts (OLMo-core's formulas) --------------------------------------------------
    @property
    def attention_matmul_params(self) -> int:
        """w_q and w_out (d x q each), w_k and w_v (d x kv each); no bias."""
        return 2 * self.d_model * self.q_width + 2 * self.d_model * self.kv_width

    @property
    def qk_norm_params(self) -> int:
        if not self.qk_norm:
            return 0
        return 2 * self.head_dim if self.qk_norm_per_head else self.q_width + self.kv_width

    @property
    def qkv_bias_params(self) -> int:
        return self.q_width + 2 * self.kv_width if self.qkv_bias else 0

    def attention_params(self) -> int:
        return self.attention_matmul_params + self.qkv_bias_params + self.qk_norm_params

    def ffn_params(self, *, active: bool = False) -> int:
        """The FFN's parameters, all of them matmul weights: the dense SwiGLU, or the MoE layer."""
        if self.moe is None:
            assert self.ffn_hidden is not None
            return 3 * self.d_model * self.ffn_hidden
        return self.moe.layer_params(self.d_model, active=active)

    def block_params(self, *, active: bool = False) -> int:
        return self.attention_params() + 2 * self.d_model + self.ffn_params(active=active)

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.d_model

    @property
    def lm_head_params(self) -> int:
        return self.d_model * self.vocab_size + self.d_model  # untied weight + final RMSNorm

    @property
    def lm_head_weight_params(self) -> int:
        """The LM head's own parameters: its final norm, and its weight unless tied to the embedding."""
        return self.lm_head_params - (self.d_model * self.vocab_size if self.tie_embeddings else 0)

    @property
    def total_params(self) -> int:
        return self.embedding_params + self.n_layers * self.block_params() + self.lm_head_weight_params

    @property
    def active_params(self) -> int:
        return self.embedding_params + self.n_layers * self.block_params(active=True) + self.lm_head_weight_params

    @property
    def active_non_embedding_params(self) -> int:
        return self.active_params - self.embedding_params

    @property
    def active_fraction(self) -> float:
        return self.active_params / self.total_params

    def with_layers(self, n_layers: int) -> ModelSpec:
        """Same widths, fewer layers: for CPU tests that must run the real layer shapes."""
        return replace(self, name=f"{self.name}[{n_layers}L]", n_layers=n_layers)


