"""The model zoo: the users' own OLMo-core models as frozen specs, with exact parameter counts.

Every spec is plain data (no torch). Parameter counts follow OLMo-core's
``TransformerConfig.num_params`` / ``num_active_params`` term by term
(``src/olmo_core/nn/transformer/config.py``, ``nn/attention``, ``nn/moe``), so tpsbench and the
users' training logs agree on what "1B total, 11% active" means:

* embedding ``V*d`` (untied), LM head ``d*V`` plus its own final RMSNorm ``d``;
* per block: attention ``2*d*q + 2*d*kv`` with ``q = heads*head_dim`` and ``kv = kv_heads*head_dim`` (no bias;
  ``4*d*d`` without grouped-query attention), qk-norm ``q + kv`` when enabled (OLMo-core's default non-head-wise
  qk-norm normalises the full q and k projections) or ``2*head_dim`` when head-wise (Qwen3's), two block
  RMSNorms ``2*d``;
* dense FFN (SwiGLU) ``3*d*h``; MoE: router ``d*E`` (no bias), routed experts ``3*d*h*E``, shared
  expert ``3*d*h_shared``. Active parameters replace ``E`` by ``top_k`` in the routed-expert term.

FFN width, when not given, is OLMo-core's ``llama_like`` rule:
``round_up(int(multiplier * int(8*d/3)), 256)``.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, replace
from typing import TypedDict

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


class UnknownNameError(InputError):
    """A user-supplied name that is not in a registry; the message names the closest choices."""


def closest_choices_message(kind: str, name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.4)
    hint = f"did you mean {', '.join(close)}?" if close else f"choose one of: {', '.join(sorted(choices))}"
    return f"unknown {kind} '{name}': {hint}"


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
    capacity_factor: float | None = 1.2  # None: the users trained it dropless
    lb_loss_weight: float = 0.01
    z_loss_weight: float = 0.001

    def layer_params(self, d_model: int, *, active: bool = False) -> int:
        """Router ``d*E`` (no bias), routed experts ``3*d*h`` each (all E, or top_k when ``active``), shared
        expert ``3*d*h_shared``: OLMo-core's count, and the matmul weights autocast casts every forward."""
        experts = self.top_k if active else self.num_experts
        shared = 3 * d_model * self.shared_hidden if self.shared_hidden else 0
        return d_model * self.num_experts + 3 * d_model * self.expert_hidden * experts + shared

    def routed_expert_params(self, d_model: int) -> int:
        """The stacked expert weights W1, W3, W2 of all E experts (no router, no shared expert)."""
        return 3 * d_model * self.expert_hidden * self.num_experts

    def __post_init__(self) -> None:
        if not 1 <= self.top_k <= self.num_experts:
            raise ValueError(f"top_k={self.top_k} must be in [1, num_experts={self.num_experts}]")
        if self.expert_hidden <= 0 or (self.shared_hidden is not None and self.shared_hidden <= 0):
            raise ValueError("expert and shared hidden sizes must be positive")


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSpec:
    """A llama-style decoder (RMSNorm, RoPE, SwiGLU, untied LM head with its own final norm)."""

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
    qk_norm_per_head: bool = False  # RMSNorm over each head's head_dim (Qwen3) instead of the whole projection
    reordered_norm: bool = False  # OLMo-2 block: h = x + norm(attn(x)) instead of x + attn(norm(x))
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

    def __post_init__(self) -> None:
        if (self.ffn_hidden is None) == (self.moe is None):
            raise ValueError(f"{self.name}: give exactly one of ffn_hidden (dense) or moe")
        if self.head_width is None and self.d_model % self.n_heads:
            raise ValueError(f"{self.name}: d_model={self.d_model} not divisible by n_heads={self.n_heads}")
        if self.n_heads % self.kv_heads:
            raise ValueError(f"{self.name}: n_heads={self.n_heads} not divisible by n_kv_heads={self.kv_heads}")
        if self.qk_norm_per_head and not self.qk_norm:
            raise ValueError(f"{self.name}: qk_norm_per_head needs qk_norm")

    # --- shape helpers -------------------------------------------------------------------------
    @property
    def is_moe(self) -> bool:
        return self.moe is not None

    @property
    def head_dim(self) -> int:
        return self.head_width if self.head_width is not None else self.d_model // self.n_heads

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

    def attention_params(self) -> int:
        return self.attention_matmul_params + self.qk_norm_params

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
    def total_params(self) -> int:
        return self.embedding_params + self.n_layers * self.block_params() + self.lm_head_params

    @property
    def active_params(self) -> int:
        return (
            self.embedding_params + self.n_layers * self.block_params(active=True) + self.lm_head_params
        )

    @property
    def active_non_embedding_params(self) -> int:
        return self.active_params - self.embedding_params

    @property
    def active_fraction(self) -> float:
        return self.active_params / self.total_params

    def with_layers(self, n_layers: int) -> ModelSpec:
        """Same widths, fewer layers: for CPU tests that must run the real layer shapes."""
        return replace(self, name=f"{self.name}[{n_layers}L]", n_layers=n_layers)


class BlockStyle(TypedDict, total=False):
    """The block options a family of OLMo-core factories shares."""

    qk_norm: bool
    reordered_norm: bool
    rope_theta: float
    norm_eps: float


def _moe_block() -> BlockStyle:
    # OLMo-core MoE factories use qk-norm, the reordered-norm block and rope theta 500k.
    return {"qk_norm": True, "reordered_norm": True, "rope_theta": 500_000.0}


def _olmo2_block() -> BlockStyle:
    return {"qk_norm": True, "reordered_norm": True, "rope_theta": 500_000.0, "norm_eps": 1e-6}


_ZOO: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="dense_tiny", olmo_name="", d_model=64, n_layers=2, n_heads=4, ffn_hidden=256,
        vocab_size=512, seq_len=64, note="CPU test model", olmo_factory_note="tpsbench's CPU test model",
    ),
    ModelSpec(
        name="moe_tiny", olmo_name="", d_model=64, n_layers=2, n_heads=4, vocab_size=512, seq_len=64,
        moe=MoESpec(num_experts=8, top_k=2, expert_hidden=32, shared_hidden=32),
        note="CPU test model", olmo_factory_note="tpsbench's CPU test model", **_moe_block(),
    ),
    ModelSpec(
        name="dense_1m", olmo_name="olmo2_1M", d_model=16, n_layers=4, n_heads=4,
        ffn_hidden=llama_ffn_hidden(16, 1.0), note="as trained: d_model 16 (OLMo-core default is 12)",
        olmo_factory_note="olmo2_1M hard-codes d_model 12 (the users trained d 16)", **_olmo2_block(),
    ),
    ModelSpec(
        name="dense_60m", olmo_name="olmo2_60M", olmo_factory="olmo2_60M", d_model=384, n_layers=8,
        n_heads=8,
        ffn_hidden=llama_ffn_hidden(384, 1.5), **_olmo2_block(),
    ),
    ModelSpec(
        name="dense_135m", olmo_name="llama2_135M", d_model=768, n_layers=12, n_heads=12,
        ffn_hidden=llama_ffn_hidden(768), olmo_factory_note="llama2_135M is in the users' fork, not upstream",
    ),
    ModelSpec(
        name="dense_271m", olmo_name="llama2_271M", olmo_factory="llama2_271M", d_model=1024, n_layers=16,
        n_heads=8,
        ffn_hidden=llama_ffn_hidden(1024),
    ),
    ModelSpec(
        name="dense_1b", olmo_name="llama2_1B", olmo_factory="llama2_1B", d_model=2048, n_layers=18,
        n_heads=16,
        ffn_hidden=llama_ffn_hidden(2048),
    ),
    ModelSpec(
        name="dense_7b", olmo_name="llama2_7B", olmo_factory="llama2_7B", d_model=4096, n_layers=32,
        n_heads=32,
        ffn_hidden=llama_ffn_hidden(4096), note="predict-only on small GPUs",
    ),
    ModelSpec(
        name="moe_1b", olmo_name="smallmoe_1B", d_model=768, n_layers=12, n_heads=12,
        moe=MoESpec(num_experts=256, top_k=1, expert_hidden=128, shared_hidden=128),
        note="sparse: 256 experts top-1", olmo_factory_note="smallmoe_1B is in the users' fork, not upstream",
        **_moe_block(),
    ),
    ModelSpec(
        name="moe_1b_a390m", olmo_name="smallmoe_1B_A390M", d_model=1152, n_layers=12, n_heads=18,
        moe=MoESpec(num_experts=32, top_k=4, expert_hidden=576, shared_hidden=2304),
        olmo_factory_note="smallmoe_1B_A390M is in the users' fork, not upstream", **_moe_block(),
    ),
    ModelSpec(
        name="olmoe_1b_7b", olmo_name="olmoe_1B_7B", olmo_factory="olmoe_1B_7B", d_model=2048, n_layers=16,
        n_heads=16,
        moe=MoESpec(num_experts=64, top_k=8, expert_hidden=1024, shared_hidden=None, capacity_factor=None),
        note="dropless", norm_eps=1e-6, **_moe_block(),
    ),
    # Qwen3-30B-A3B as torchtitan builds it (torchtitan/models/qwen3/__init__.py, ``_30b_a3b``): 48 pre-norm blocks
    # of d 2048, 32 query heads of 128 and 4 key/value heads with head-wise qk-norm, 128 experts of 768 top-8,
    # no shared expert, untied embeddings; 30,532,122,624 parameters, the count torchtitan's docs print for it.
    # Here to place tpsbench's multi-GPU prediction next to torchtitan's published 8 x B200 measurement.
    ModelSpec(
        name="qwen3_30b_a3b", olmo_name="", d_model=2048, n_layers=48, n_heads=32, n_kv_heads=4, head_width=128,
        qk_norm=True, qk_norm_per_head=True, vocab_size=151_936, rope_theta=1_000_000.0, norm_eps=1e-6,
        seq_len=4096,
        moe=MoESpec(num_experts=128, top_k=8, expert_hidden=768, shared_hidden=None, capacity_factor=None),
        note="dropless; torchtitan's Qwen3", olmo_factory_note="a Qwen3 model (torchtitan), not OLMo-core's",
    ),
)

MODELS: dict[str, ModelSpec] = {m.name: m for m in _ZOO}
ALIASES: dict[str, str] = {m.olmo_name: m.name for m in _ZOO if m.olmo_name}


def get_model(name: str) -> ModelSpec:
    """Look a model up by tpsbench name or OLMo-core factory name (case-insensitive)."""
    key = name.strip()
    if key in MODELS:
        return MODELS[key]
    if key in ALIASES:
        return MODELS[ALIASES[key]]
    lowered = {k.lower(): v for k, v in {**{n: n for n in MODELS}, **ALIASES}.items()}
    if key.lower() in lowered:
        return MODELS[lowered[key.lower()]]
    raise UnknownNameError(closest_choices_message("model", name, [*MODELS, *ALIASES]))
