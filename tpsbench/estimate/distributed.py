"""`tpsbench predict --gpus N --dist fsdp|ep|fsdp+ep`: one rank's training step on N GPUs, floor and expected, with
the communication of tpsbench/costmodel/comm.py over the GPU's interconnect (its profile's cited NVLink, else
PCIe, bandwidth inside a node of ``gpus_per_node``; across nodes the per-GPU network bandwidth the user gives).

The floor of a collective is its bytes per rank over the link's one-way bandwidth; no measured collective
efficiency exists in tpsbench yet (the GPU machines it has measured on hold one GPU each), so the expected step
uses the same link-rate communication, said so. Overlap: ``none`` adds communication to compute; ``full``
takes the larger of the two (FSDP's prefetch and expert-parallel overlap can hide some; neither is measured).
"""

from __future__ import annotations

from dataclasses import dataclass

from tpsbench.costmodel import Workload
from tpsbench.costmodel.comm import CommOp, comm_ops
from tpsbench.estimate.distributed_memory import dist_memory, rank_param_fraction
from tpsbench.estimate.memory import MemoryEstimate
from tpsbench.estimate.step import expected_for
from tpsbench.options import DistError, DistLayout, DistMode
from tpsbench.profiles import GPUProfile
from tpsbench.results.typed import JsonObject
from tpsbench.roofline import predict

DEFAULT_GPUS_PER_NODE = 8  # an HGX / DGX node


@dataclass(frozen=True, slots=True)
class Link:
    name: str  # nvlink, pcie, network
    gbs: float  # one direction, per GPU
    source: str


@dataclass(frozen=True, slots=True)
class CommTime:
    op: CommOp
    seconds: float
    link: Link


@dataclass(frozen=True, slots=True)
class DistPrediction:
    mode: DistMode
    world: int
    tokens_per_rank: int
    link: Link  # all ranks' (FSDP's) link
    comm: tuple[CommTime, ...]
    compute_floor_s: float  # one rank's forward, backward and its share of the optimizer, at the roofline
    compute_expected_s: float | None  # the single-GPU expected step of the same microbatch (None: no table)
    single_floor_s: float  # one GPU alone, the same microbatch, its whole optimizer
    single_expected_s: float | None
    memory: MemoryEstimate  # one rank's peak
    usable_bytes: float
    compiled: bool = False
    recompute: str = "none"
    ep_size: int | None = None
    shard_size: int | None = None
    policy: str = "amp_bf16"  # the dtype policy's name (+fsdp_bf16 under FSDP's mixed precision)

    @property
    def links(self) -> list[Link]:
        """Every link a collective of the step runs over, all ranks' first."""
        out = [self.link]
        for c in self.comm:
            if c.link not in out:
                out.append(c.link)
        return out

    @property
    def comm_s(self) -> float:
        return sum(c.seconds for c in self.comm)

    def step_s(self, basis: str, overlap: str) -> float | None:
        compute = self.compute_floor_s if basis == "floor" else self.compute_expected_s
        if compute is None:
            return None
        return compute + self.comm_s if overlap == "none" else max(compute, self.comm_s)

    def tokens_per_s_per_gpu(self, basis: str, overlap: str) -> float | None:
        s = self.step_s(basis, overlap)
        return None if s is None else self.tokens_per_rank / s

    def scaling_efficiency(self, basis: str, overlap: str) -> float | None:
        """Tokens/s per GPU over one GPU's alone (same microbatch, same basis)."""
        per_gpu = self.tokens_per_s_per_gpu(basis, overlap)
        single = self.single_floor_s if basis == "floor" else self.single_expected_s
        return None if per_gpu is None or single is None else per_gpu * single / self.tokens_per_rank

    def to_dict(self) -> JsonObject:
        """`predict --dist --json`'s document of the prediction (every number predicted: measured is false)."""
        return {
            "mode": self.mode, "gpus": self.world, "tokens_per_gpu": self.tokens_per_rank,
            "link": {"name": self.link.name, "gbs": self.link.gbs, "source": self.link.source},
            "ep_size": self.ep_size, "shard_size": self.shard_size, "dtype_policy": self.policy,
            "comm": [{"name": c.op.name, "phase": c.op.phase.value, "collective": c.op.collective,
                      "count": c.op.count, "bytes_per_gpu": c.op.bytes_per_rank, "seconds": c.seconds,
                      "host_syncs": c.op.host_syncs, "group": c.op.group, "link": c.link.name} for c in self.comm],
            "comm_s": self.comm_s, "compute_floor_s": self.compute_floor_s,
            "compute_expected_s": self.compute_expected_s,
            "steps": {f"{basis}_overlap_{ov}": {"step_s": self.step_s(basis, ov),
                                                "tokens_per_s_per_gpu": self.tokens_per_s_per_gpu(basis, ov),
                                                "scaling_efficiency": self.scaling_efficiency(basis, ov)}
                      for basis in ("floor", "expected") for ov in ("none", "full")},
            "memory_per_gpu": {**self.memory.to_dict(), "usable_bytes": self.usable_bytes,
                               "fits": self.memory.fits(self.usable_bytes)},
            "recompute": self.recompute, "compiled": self.compiled, "measured": False,
        }


def choose_link(profile: GPUProfile, world: int, gpus_per_node: int, network_gbs: float | None) -> Link:
    """The link a group of ``world`` consecutive ranks (or one spanning that many) runs its collectives over: the
    node's NVLink (else PCIe) when they fit in one node, else the network."""
    if world > gpus_per_node:
        if network_gbs is not None:
            return Link("network", network_gbs, "--network-gbs (given)")
        if profile.network_gbs is not None:
            return Link("network", profile.network_gbs.value, profile.network_gbs.source)
        raise DistError(f"--gpus {world} spans more than one node of {gpus_per_node} and {profile.name}'s profile "
                        "cites no network bandwidth: give --network-gbs (each GPU's scale-out bandwidth one way, e.g. "
                        "50 for 400 Gb/s InfiniBand)")
    if profile.nvlink_gbs is not None:
        return Link("nvlink", profile.nvlink_gbs.value, profile.nvlink_gbs.source)
    if profile.pcie_gbs is not None:
        return Link("pcie", profile.pcie_gbs.value, profile.pcie_gbs.source)
    raise DistError(f"{profile.name}'s profile cites no NVLink or PCIe bandwidth; add nvlink_gbs or pcie_gbs to it")


def group_link(group: str, profile: GPUProfile, world: int, ep_size: int | None, shard_size: int | None,
               gpus_per_node: int, network_gbs: float | None) -> Link:
    """An expert-parallel group is ``ep_size`` consecutive ranks, an FSDP shard group ``shard_size``: inside a node
    when it fits one evenly; their replicas (one per group, a group's size apart) and all ranks span the world."""
    size = {"ep": ep_size, "shard": shard_size}.get(group)
    if size is not None:
        inside = size <= gpus_per_node and gpus_per_node % size == 0
        return choose_link(profile, size if inside else world, gpus_per_node, network_gbs)
    return choose_link(profile, world, gpus_per_node, network_gbs)


def predict_dist(w: Workload, profile: GPUProfile, layout: DistLayout, *,
                 gpus_per_node: int = DEFAULT_GPUS_PER_NODE, network_gbs: float | None = None,
                 compiled: bool = False) -> DistPrediction:
    mode, world, ep_size, shard_size = layout.mode, layout.world, layout.ep_size, layout.shard_size
    if world < 2:
        raise DistError(f"--gpus {world}: a distributed step needs at least 2 GPUs")
    layout.check_sizes(ranks="GPUs")
    layout.check_model(w.model, ranks="GPUs")
    link = choose_link(profile, world, gpus_per_node, network_gbs)
    ops = comm_ops(w, mode, world, ep_size, shard_size)
    comm: list[CommTime] = []
    for op in ops:
        on = group_link(op.group, profile, world, ep_size, shard_size, gpus_per_node, network_gbs)
        comm.append(CommTime(op, op.bytes_per_rank / (on.gbs * 1e9), on))
    p = predict(w, profile, global_batch_tokens=w.tokens)
    frac = rank_param_fraction(w, mode, world, ep_size, shard_size)
    est = expected_for(w, profile, compiled=compiled)
    single_expected = None if est.expected is None else est.expected.seconds
    memory = dist_memory(w, mode, world, compiled=compiled, ep_size=ep_size, shard_size=shard_size,
                         overhead_fraction=est.memory.overhead_bytes / max(est.memory.peak_bytes, 1.0))
    return DistPrediction(mode, world, w.tokens, link, tuple(comm), p.fwd_bwd_s + p.optimizer_s * frac,
                          single_expected, p.microbatch_step_s, single_expected, memory, est.usable_bytes, compiled,
                          w.recompute, ep_size, shard_size, w.policy.name)
