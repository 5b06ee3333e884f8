"""Peak memory of one rank's training step with a distributed layout: the one-GPU estimate
(tpsbench/estimate/memory.py) with the parameters, AdamW state and weight copies this rank holds.

* Parameters and AdamW state: FSDP shards every parameter it holds over the ranks, expert parallelism the routed
  experts; what stays whole is replicated (``ep`` alone: everything but the experts). The head's gradients (the
  first computed, unsharded until they are reduce-scattered) are held whole, as on one GPU.
* Weight copies: under autocast the bf16 copies of the matmul weights this rank computes with (every non-expert
  weight, unsharded, and its own experts) are saved for the backward; FSDP adds the unsharded parameters of the
  units in flight at the peak (the backward's start): the root (embeddings, final norm, LM head), whose
  parameters stay gathered across the step's turn, and the block being prefetched, in the gathered dtype. Under
  FSDP's mixed precision (a policy that recasts parameters when unsharding) the gathered bf16 parameters are
  what the matmuls use and FSDP frees them after each unit's forward: no copies beyond the units in flight
  (and the local experts' under autocast).
* Activations and the loss's transient: those of the rank's own microbatch, as on one GPU (balanced routing sends
  each rank as many expert rows as it routes).

Not measured: tpsbench has run no multi-GPU step; the single-GPU terms are those validated on the H100.
"""

from __future__ import annotations

from dataclasses import replace

from tpsbench.costmodel import Workload, matmul_params
from tpsbench.costmodel.comm import expert_params, gathered_param_bytes
from tpsbench.estimate.memory import MemoryEstimate, step_memory


def rank_param_fraction(w: Workload, mode: str, world: int, ep_size: int | None = None,
                        shard_size: int | None = None) -> float:
    """The share of the model's parameters (and AdamW state) one rank holds: FSDP's shard of what it holds (over
    ``shard_size`` ranks, all by default), the rank's experts (E / ``ep_size``, likewise), the rest whole."""
    m, parts = w.model, mode.split("+")
    experts = expert_params(m) if "ep" in parts else 0
    rest = m.total_params - experts
    held = (rest / (shard_size or world) if "fsdp" in parts else rest) + experts / (ep_size or world)
    return held / m.total_params


def dist_memory(w: Workload, mode: str, world: int, *, compiled: bool, overhead_fraction: float,
                ep_size: int | None = None, shard_size: int | None = None) -> MemoryEstimate:
    one = step_memory(w, compiled=compiled, overhead_fraction=0.0)
    m, pol = w.model, w.policy
    fraction = rank_param_fraction(w, mode, world, ep_size, shard_size)
    k = ep_size or world
    state = (m.total_params * fraction * (pol.param_bytes + 2 * pol.optim_state_bytes)
             + m.lm_head_params * pol.grad_bytes)
    parts = mode.split("+")
    experts = expert_params(m) if "ep" in parts else 0
    local_matmul = sum(matmul_params(m).values()) - experts * (1 - 1 / k)
    cast = pol.compute_bytes if pol.autocast else 0
    if "fsdp" in parts:
        block = m.block_params() - experts / m.n_layers
        in_flight = (m.embedding_params + m.lm_head_params + block) * gathered_param_bytes(pol)
        copies = in_flight + (experts / k if pol.recast_params_in_backward else local_matmul) * cast
    else:
        copies = local_matmul * cast
    est = replace(one, parameters_and_state_bytes=state, weight_copies_bytes=copies, overhead_bytes=0.0)
    return replace(est, overhead_bytes=(est.peak_bytes) * overhead_fraction)
