"""The communication of a training step on N ranks, per rank and per phase: what tpsbench/distributed/train.py
runs, counted.

* Expert parallelism (``ep``, ``fsdp+ep``) over groups of K consecutive ranks (K = N by default): per MoE layer
  four ``all_to_all_single`` exchanges inside the group, dispatch and combine, forward and backward. Dispatch
  sends each of the rank's T*k assignments' rows (the MoE input: the residual stream's dtype), combine the expert
  outputs back (the matmul dtype); their backwards send the gradients of the same tensors, in the same dtypes.
  With routing balanced over the ranks, (K-1)/K of the rows leave the rank. Before each dispatch the K per-rank
  counts are exchanged (K x 8 bytes: counted, negligible) and copied to the host (a sync per MoE layer in the
  forward). With R = N/K > 1 groups every expert has a replica in each group: its gradients are summed by an
  all-reduce over the replicas (a ring: 2 (R-1)/R of the rank's expert gradients).
* FSDP2 (``fsdp``, ``fsdp+ep``): each sharded unit (every block, and the root: embeddings, final norm, LM head)
  all-gathers its parameters in the forward and again in the backward (FSDP2's default reshards after forward),
  and reduce-scatters its gradients; a ring moves (N-1)/N of the unit's bytes per rank. The parameters travel in
  their stored dtype (fp32 under amp_bf16: what `run --dist` does), or in the compute dtype under a policy with
  FSDP2's mixed precision (``olmo_core``: ``param_dtype=bf16``, ``reduce_dtype=fp32``, as OLMo-core and
  torchtitan train; its residual stream, and so the dispatched rows, are bf16 too); the gradients in theirs.
  With ``fsdp+ep`` the experts are not FSDP's (expert parallelism holds them).
* Hybrid sharding (``shard_size`` G < N): FSDP shards over groups of G consecutive ranks and replicates the shards
  across the N/G groups: the gathers and reduce-scatters move (G-1)/G of a unit's bytes inside the group, and the
  reduce-scattered gradient shards are all-reduced across the replicas (2 (R-1)/R of a shard for R = N/G).
* Full activation checkpointing (``w.recompute == "full"``) runs each block's forward again in the backward, and
  with it the forward's expert-parallel exchanges (counts, dispatch, combine: listed as ``*.recompute``); FSDP's
  backward all-gather is there either way.
* ``ep`` alone: the replicated parameters' gradients are averaged by one all-reduce (a ring: 2 (N-1)/N of their
  bytes per rank).

Bytes are those each rank sends (equal to what it receives under balanced routing); one optimizer step of one
microbatch per rank. Each collective names its group (:class:`CommOp`), which decides the link it runs over
(tpsbench/estimate/distributed.py).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from tpsbench.costmodel.ops import DTypePolicy, Phase, Workload
from tpsbench.models import ModelSpec

INDEX_BYTES = 8  # int64 split sizes


@dataclass(frozen=True, slots=True)
class CommOp:
    name: str  # moe.dispatch, moe.combine, moe.counts, fsdp.all_gather, fsdp.reduce_scatter, dp.all_reduce
    phase: Phase
    collective: str  # all_to_all, all_gather, reduce_scatter, all_reduce
    bytes_per_rank: float  # sent by one rank, all instances
    count: int  # instances per step (layers, sharded units)
    host_syncs: int = 0  # the split sizes copied to the host
    # the ranks it runs among: ep (an expert-parallel group), replicas (an expert's replicas), shard (an FSDP shard
    # group under hybrid sharding), shard_replicas (a shard's replicas), world (all ranks)
    group: str = "world"


def fsdp_mixed_precision(pol: DTypePolicy) -> DTypePolicy:
    """``pol`` under FSDP2's mixed precision (``param_dtype`` = the compute dtype, ``reduce_dtype`` fp32): the
    parameters cast when unsharded, for the forward and again for the backward, so they travel and compute in the
    compute dtype, and the embedding's output, hence the residual stream, is in it too (`run --dist
    --fsdp-param-dtype bf16`; the olmo_core policy has it already)."""
    if pol.recast_params_in_backward:
        return pol
    return replace(pol, name=f"{pol.name}+fsdp_bf16", residual_bytes=pol.compute_bytes, autocast=True,
                   recast_params_in_backward=True,
                   description=f"{pol.description}; FSDP mixed precision: bf16 unsharded parameters, fp32 reduction")


def gathered_param_bytes(pol: DTypePolicy) -> int:
    """Bytes per parameter FSDP all-gathers: the compute dtype under mixed precision (a policy whose parameters are
    cast when unsharded, in forward and backward), else the stored dtype."""
    return pol.compute_bytes if pol.recast_params_in_backward else pol.param_bytes


def expert_params(m: ModelSpec) -> int:
    """The routed experts' weights of every MoE layer (what expert parallelism shards)."""
    if m.moe is None:
        return 0
    return m.n_layers * m.moe.routed_expert_params(m.d_model)


def comm_ops(w: Workload, mode: str, world: int, ep_size: int | None = None,
             shard_size: int | None = None) -> list[CommOp]:
    """The collectives of one training step of ``w`` (``w.tokens`` per rank) with layout ``mode`` on ``world``
    ranks, expert parallelism over groups of ``ep_size`` ranks and FSDP's shards over groups of ``shard_size``
    (default: all)."""
    if world < 2:
        return []
    m, pol = w.model, w.policy
    parts = mode.split("+")
    out: list[CommOp] = []
    share = (world - 1) / world
    if "ep" in parts:
        if m.moe is None:
            raise ValueError(f"{m.name} is dense: expert parallelism has no experts to split")
        k = ep_size or world
        layers = m.n_layers
        rows = w.tokens * m.moe.top_k * m.d_model * (k - 1) / k
        ep: list[CommOp] = []
        if k > 1:
            ep += [
                CommOp("moe.counts", Phase.FWD, "all_to_all", layers * k * INDEX_BYTES, layers, host_syncs=layers,
                       group="ep"),
                CommOp("moe.dispatch", Phase.FWD, "all_to_all", layers * rows * pol.residual_bytes, layers, group="ep"),
                CommOp("moe.combine", Phase.FWD, "all_to_all", layers * rows * pol.compute_bytes, layers, group="ep"),
            ]
            if w.recompute == "full":
                ep += [replace(op, name=f"{op.name}.recompute", phase=Phase.BWD_DGRAD) for op in ep]
            ep += [
                CommOp("moe.combine", Phase.BWD_DGRAD, "all_to_all", layers * rows * pol.compute_bytes, layers,
                       group="ep"),
                CommOp("moe.dispatch", Phase.BWD_DGRAD, "all_to_all", layers * rows * pol.residual_bytes, layers,
                       group="ep"),
            ]
        out += ep
        replicas = world // k
        if replicas > 1:
            local = expert_params(m) / k * pol.grad_bytes
            out.append(CommOp("moe.expert_all_reduce", Phase.BWD_WGRAD, "all_reduce",
                              2 * local * (replicas - 1) / replicas, 1, group="replicas"))
    sharded = m.total_params - (expert_params(m) if "ep" in parts else 0)
    units = m.n_layers + 1
    if "fsdp" in parts:
        g = shard_size or world
        group = "world" if g == world else "shard"
        within = (g - 1) / g
        gather = sharded * gathered_param_bytes(pol) * within
        out += [
            CommOp("fsdp.all_gather", Phase.FWD, "all_gather", gather, units, group=group),
            CommOp("fsdp.all_gather", Phase.BWD_DGRAD, "all_gather", gather, units, group=group),
            CommOp("fsdp.reduce_scatter", Phase.BWD_WGRAD, "reduce_scatter", sharded * pol.grad_bytes * within, units,
                   group=group),
        ]
        r = world // g
        if r > 1:
            out.append(CommOp("fsdp.replica_all_reduce", Phase.BWD_WGRAD, "all_reduce",
                              2 * sharded / g * pol.grad_bytes * (r - 1) / r, units, group="shard_replicas"))
    elif "ep" in parts:
        out.append(CommOp("dp.all_reduce", Phase.BWD_WGRAD, "all_reduce", 2 * sharded * pol.grad_bytes * share, 1))
    return out
