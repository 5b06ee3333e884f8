"""Peak GPU memory of a training step (tpsbench's stack), and whether it fits a GPU.

The peak comes at the start of the backward, in the loss's backward: every layer's saved activations are still
held, and the cross-entropy's backward holds three fp32 ``[T, V]`` tensors at once (log_softmax's saved
output, the nll gradient, log_softmax's input gradient). Counted:

* parameters and AdamW state (fp32 master weights and two moments: the timed steps follow a warm-up step, so
  the state exists), gradients of the head (computed first);
* the bf16 copies of the matmul weights autocast makes in the forward, saved for the backward;
* per layer and token, the tensors autograd saves (tpsbench/nn's modules, eager, amp_bf16: fp32 residual
  stream): ``SAVED_PER_D`` bytes per model-width element and ``SAVED_PER_H`` per FFN-hidden element, listed
  below; torch.compile saves fewer (its partitioner recomputes elementwise chains): ``COMPILED_PER_D``,
  ``COMPILED_PER_H``;
* with full activation checkpointing (``Workload.recompute``), each block's input instead of its saved tensors,
  and the larger of the head's transient and one block's recomputed activations;
* the head's transient (above), and a fraction for the caching allocator's rounding and workspaces
  (``memory_overhead_fraction`` of the efficiency table).
"""

from __future__ import annotations

from dataclasses import dataclass

from tpsbench.costmodel import Workload, matmul_params, routing
from tpsbench.estimate import olmo_memory
from tpsbench.estimate.table import Sourced
from tpsbench.models import ModelSpec

# Saved bytes per token per layer (eager, amp_bf16: fp32 residual stream), per element of d: the attention
# sublayer's norm (the normalised fp32 rows, 4) and the three projections' bf16 input (6), the FFN sublayer's norm
# (4) and the bf16 inputs of w1 and w3 (4); per element of the q and k projections (q = heads x head_dim and
# kv = kv_heads x head_dim wide): RoPE's input and rotated half (4); per element of q, k, v and the attention
# output: flash attention's saved bf16 tensors (2); per element of q: the output projection's input (2). With
# multi-head attention (q = kv = d) that is 36 bytes per element of d. The norms' fp32 inputs are not counted: the
# residual stream holds them already (docs/expected-time.md).
SAVED_PER_D = 18
ROPE_PER_QK = 4
ATTENTION_PER_QKVO = 2
OUT_INPUT_PER_Q = 2
QK_NORM_PER_QK = 8  # qk-norm's fp32 rows of q and k
# per element of the FFN's hidden width: a and b, silu(a), and w2's input (bf16 each)
SAVED_PER_H = 8
# MoE, per routed row: two bf16 casts of the gathered row (one per up/gate grouped GEMM) and the expert's output
# row saved by the router-weight multiply (2 bytes each per element of d); per token: the router's bf16 input
# (2 per d) and its fp32 probabilities and logits (8 per expert)
MOE_ROW_PER_D = 6
ROUTER_INPUT_PER_D = 2
ROUTER_PER_EXPERT = 8
# torch.compile keeps the matmul inputs and the attention's saved tensors, recomputing norms and SwiGLU: per element
# of d the projections' input (6), w1 and w3's inputs (4) and 8 more (held to the compiled H100 peaks by validate);
# the attention's q, k, v, output and the output projection's input as in eager (28 per d with multi-head attention)
COMPILED_PER_D = 2 * 3 + 2 * 2 + 8
COMPILED_PER_H = 4
COMPILED_MOE_ROW_PER_D = 2


@dataclass(frozen=True, slots=True)
class MemoryEstimate:
    parameters_and_state_bytes: float
    weight_copies_bytes: float
    activations_bytes: float
    loss_transient_bytes: float
    overhead_bytes: float

    @property
    def peak_bytes(self) -> float:
        """Peak allocated bytes (what ``torch.cuda.max_memory_allocated`` reports)."""
        return (self.parameters_and_state_bytes + self.weight_copies_bytes + self.activations_bytes
                + self.loss_transient_bytes)

    @property
    def required_bytes(self) -> float:
        """What the GPU must hold: the peak and the caching allocator's reserve beyond it."""
        return self.peak_bytes + self.overhead_bytes

    def fits(self, memory_bytes: float) -> bool:
        return self.required_bytes <= memory_bytes

    def to_dict(self) -> dict[str, float]:
        return {"peak_bytes": self.peak_bytes, "required_bytes": self.required_bytes,
                "parameters_and_state_bytes": self.parameters_and_state_bytes,
                "weight_copies_bytes": self.weight_copies_bytes, "activations_bytes": self.activations_bytes,
                "loss_transient_bytes": self.loss_transient_bytes, "overhead_bytes": self.overhead_bytes}


def saved_attention_and_norms_per_token(m: ModelSpec, *, compiled: bool) -> int:
    """Bytes per token and layer saved for the backward outside the FFN's hidden width (listed above)."""
    q, kv = m.q_width, m.kv_width
    attention = ATTENTION_PER_QKVO * (2 * q + 2 * kv) + OUT_INPUT_PER_Q * q
    if compiled:
        return COMPILED_PER_D * m.d_model + attention
    qk_norm = QK_NORM_PER_QK * (q + kv) if m.qk_norm else 0
    return SAVED_PER_D * m.d_model + ROPE_PER_QK * (q + kv) + attention + qk_norm


def step_memory(w: Workload, *, compiled: bool, overhead_fraction: float) -> MemoryEstimate:
    """tpsbench's stack, or OLMo-core's FSDP recipe when the policy is OLMo-core's (tpsbench/estimate/olmo_memory.py:
    what OLMo-core's own modules and compiled graphs keep, measured)."""
    m, pol = w.model, w.policy
    t = w.tokens
    state = m.total_params * (pol.param_bytes + 2 * pol.optim_state_bytes) + m.lm_head_params * pol.grad_bytes
    if pol.recast_params_in_backward:
        return _olmo_core_memory(w, state, compiled=compiled, overhead_fraction=overhead_fraction)
    copies = sum(matmul_params(m).values()) * pol.compute_bytes if pol.autocast else 0.0
    per_h = COMPILED_PER_H if compiled else SAVED_PER_H
    row_d = COMPILED_MOE_ROW_PER_D if compiled else MOE_ROW_PER_D
    per_token = saved_attention_and_norms_per_token(m, compiled=compiled)
    moe = m.moe
    if moe is None:
        assert m.ffn_hidden is not None
        per_token += per_h * m.ffn_hidden
    else:
        r = routing(w)
        rows_per_token = r.expert_rows / t
        per_token += rows_per_token * (per_h * moe.expert_hidden + row_d * m.d_model)
        per_token += ROUTER_PER_EXPERT * moe.num_experts + ROUTER_INPUT_PER_D * m.d_model
        if moe.shared_hidden:
            per_token += per_h * moe.shared_hidden
    loss = 3.0 * t * m.vocab_size * 4  # three fp32 [T, V] tensors in the cross-entropy's backward
    if w.recompute == "full":
        # Every block saves only its input (the residual stream); one block's activations exist again while it is
        # recomputed, after the loss's backward has freed its transient: the peak holds the larger of the two.
        one_block = float(per_token * t)
        activations = float(t * m.d_model * pol.residual_bytes * m.n_layers) + max(0.0, one_block - loss)
    else:
        activations = float(per_token * t * m.n_layers)
    base = state + copies + activations + loss
    return MemoryEstimate(state, copies, activations, loss, base * overhead_fraction)


def _olmo_core_memory(w: Workload, state: float, *, compiled: bool, overhead_fraction: float) -> MemoryEstimate:
    m, t = w.model, w.tokens
    copies = olmo_memory.fsdp_weight_copies_bytes(m, w.policy.compute_bytes)
    loss = olmo_memory.loss_peak_bytes(t, m, compiled=compiled)
    one_block = olmo_memory.saved_per_token(w, compiled=compiled) * t
    if w.recompute == "full":
        activations = float(t * m.d_model * w.policy.residual_bytes * m.n_layers) + max(0.0, one_block - loss)
    else:
        activations = one_block * m.n_layers
    base = state + copies + activations + loss
    return MemoryEstimate(state, copies, activations, loss, base * overhead_fraction)


# What torch can allocate of a GPU sold as N GB: NVIDIA's "80GB" is 80 GiB, of which the H100 reports 85.0e9 bytes
# (results/h100-counters/validated/calibration.json, machine.gpu_memory_gb = 85.017): 99% of 80 GiB.
USABLE_FRACTION_OF_GIB = 0.99


def usable_bytes(memory_gb: float) -> float:
    return memory_gb * 2**30 * USABLE_FRACTION_OF_GIB
# The caching allocator's reserve beyond the allocated peak, for the fits / does not fit verdict: bounded by the
# committed H100 runs (moe_1b_a390m's 32,768-token MoE steps ran out of memory at an estimated 84.4 GB allocated
# on 85.0 GB; its 16,384-token dense_total step ran at 69.0 GB): any fraction from 1% to 23% separates them.
ALLOCATOR_RESERVE = Sourced(0.05, "bounded by the committed H100 runs: moe_1b_a390m's 32,768-token MoE steps ran out "
                            "of memory at an estimated 84.4 GB allocated on 85.0 GB, its 16,384-token dense_total "
                            "step ran at 69.0 GB; 1-23% separates them, 5% taken", 1.0)


