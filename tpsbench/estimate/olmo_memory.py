"""What OLMo-core's single-GPU recipe keeps alive at the peak of a training step (the ``olmo_core`` policy: FSDP
mixed precision, bf16 parameters for compute, fp32 sharded parameters, gradients and AdamW state), eager and with
OLMo-core's per-block ``torch.compile`` (``Transformer.apply_compile``, which compiles the LM head and its loss too).

Counted from OLMo-core 3.0 itself, not from tpsbench's modules: ``tools/olmo_saved_bytes.py`` builds OLMo-core
blocks (bf16 parameters, as FSDP's mixed precision unshards them), runs their forward on the CPU and adds up the
distinct storages autograd saves for the backward, across widths, FFN widths and head counts; the fit is exact
(zero residual) and tests/test_olmo_memory.py re-measures it. The loss (``olmo_core/nn/lm_head.py``,
``nn/functional/cross_entropy_loss.py``): eager, ``logits.float()`` then ``F.cross_entropy`` and the z-loss's
``logsumexp``: at the peak of its backward 22 bytes per logit with the z-loss, 14 without (measured with
``torch.distributed._tools.mem_tracker.MemTracker``); compiled, Inductor saves only the bf16 logits and writes
their gradient into the same buffer (its generated backward: ``buf1 = mm; del mm  # reuse``): 2 bytes per logit.
That is the term that made 32,768-token microbatches of ~1B models look as if they did not fit a 32 GB GPU.

FSDP holds the LM head's bf16 weight from the forward to the backward (``reshard_after_forward=False``,
``olmo_core/nn/transformer/model.py``) and re-gathers one block at a time for the backward; every other block's
bf16 copy is freed after its forward.
"""

from __future__ import annotations

from dataclasses import dataclass

from tpsbench.costmodel import Workload, routing
from tpsbench.models import ModelSpec


@dataclass(frozen=True, slots=True)
class SavedBytes:
    """Bytes autograd saves per token in one block: per element of the model width, of the FFN hidden width (per
    routed row for MoE experts), of the query width (heads x head_dim: grouped key/value heads are expanded for
    the attention kernel, so they cost as many as the query's) and a per-token rest (RoPE's sin/cos rows, norms'
    fp32 statistics, attention's log-sum-exp)."""

    per_d: float
    per_h: float
    per_q: float
    per_token: float


# tools/olmo_saved_bytes.py on OLMo-core 3.0 (dense blocks: d 256/512, FFN 512/1024, 4/8 heads of 64). Per query
# element 8 bytes and 4 per head (the attention's fp32 log-sum-exp), 8 + 4/64 with 64-wide heads.
PER_QUERY = 8 + 4 / 64
OLMO_DENSE_EAGER = SavedBytes(per_d=20, per_h=8, per_q=PER_QUERY, per_token=520)
OLMO_DENSE_COMPILED = SavedBytes(per_d=8, per_h=6, per_q=PER_QUERY, per_token=520)
# qk-norm (whole-projection RMSNorm of q and k) adds per element of q and k: eager, its fp32 rows and bf16 input;
# compiled, Inductor recomputes most of it; per token both norms' fp32 statistics.
QK_NORM_EAGER = 8.0
QK_NORM_COMPILED = 2.0
QK_NORM_PER_TOKEN = 8.0
# MoE blocks (OLMo-core's capacity MoE with the reordered norm and qk-norm; d 256/512, expert width 512/1024, 4/8
# experts, top-1/top-2; exact to 0.4 B): beyond a dense block's attention and norms, per element of d the router's
# bf16 input; per routed row the SwiGLU's saved tensors (8 per expert-hidden element, as a dense FFN's) and 4 per
# element of d; per token and expert the fp32 router logits and probabilities. Compiled MoE blocks could not be
# measured on the CPU (Dynamo cannot trace OLMo-core's Triton kernels under the interpreter): counted as eager, an
# upper bound (a compiled dense block saves less than an eager one).
ROUTER_INPUT_PER_D = 2.0
MOE_ROW_PER_H = 8.0
MOE_ROW_PER_D = 4.0
ROUTER_PER_EXPERT = 8.0

# The loss's peak, bytes per logit (tokens x vocabulary), see above.
LOSS_EAGER_BYTES = 14.0
LOSS_EAGER_Z_LOSS_BYTES = 8.0
LOSS_COMPILED_BYTES = 2.0


def saved_per_token(w: Workload, *, compiled: bool) -> float:
    """Bytes one block saves per token (averaged over the microbatch's routed rows for MoE)."""
    m = w.model
    dense = OLMO_DENSE_COMPILED if compiled else OLMO_DENSE_EAGER
    per_token = dense.per_d * m.d_model + dense.per_q * m.q_width + dense.per_token
    if m.qk_norm:
        per_token += (QK_NORM_COMPILED if compiled else QK_NORM_EAGER) * (m.q_width + m.kv_width)
        per_token += QK_NORM_PER_TOKEN
    moe = m.moe
    if moe is None:
        assert m.ffn_hidden is not None
        return per_token + dense.per_h * m.ffn_hidden
    rows_per_token = routing(w).expert_rows / w.tokens
    per_token += rows_per_token * (MOE_ROW_PER_H * moe.expert_hidden + MOE_ROW_PER_D * m.d_model)
    per_token += ROUTER_INPUT_PER_D * m.d_model + ROUTER_PER_EXPERT * moe.num_experts
    if moe.shared_hidden:
        per_token += dense.per_h * moe.shared_hidden
    return per_token


def loss_peak_bytes(tokens: int, m: ModelSpec, *, compiled: bool, z_loss: bool = True) -> float:
    logits = float(tokens) * m.vocab_size
    if compiled:
        return LOSS_COMPILED_BYTES * logits
    return (LOSS_EAGER_BYTES + (LOSS_EAGER_Z_LOSS_BYTES if z_loss else 0.0)) * logits


def fsdp_weight_copies_bytes(m: ModelSpec, compute_bytes: int) -> float:
    """bf16 parameter copies alive at the peak: the LM head's (kept from forward to backward) and one block's
    (re-gathered for its backward); the LM head's unsharded bf16 gradient before FSDP reduces it to fp32."""
    return (2 * m.lm_head_params + m.block_params()) * compute_bytes
