"""tpsbench's training step over several ranks: ``fsdp`` (FSDP2, ``fully_shard`` per block and at the
root, over all ranks), ``ep`` (expert parallelism: each rank of an expert-parallel group of K ranks holds E/K
experts; the other parameters replicated, their gradients averaged with one all-reduce), ``fsdp+ep`` (both: the
experts sharded by expert parallelism and left out of FSDP, the rest sharded by FSDP over all ranks). The groups
are consecutive ranks (K = all of them by default; K = the GPUs of a node keeps the all-to-alls on NVLink, as
torchtitan and DeepSeek lay it out); with N/K groups, each expert has N/K replicas, one per group, whose gradients
are summed by an all-reduce over the replicas. Each rank trains on its own tokens; the objective is the mean of
the ranks' losses, so every gradient is the average over ranks (FSDP's reduce-scatter averages; the expert
gradients, which gather their group's tokens through the all-to-all and the other groups' through the replicas'
all-reduce, are divided by N).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from tpsbench.costmodel import DTypePolicy
from tpsbench.distributed.ep import ExpertParallelMoE
from tpsbench.impls import baseline, bracket_spec, is_bracket
from tpsbench.models import ModelSpec
from tpsbench.nn.moe import MoEFeedForward
from tpsbench.nn.transformer import build_model, moe_layers
from tpsbench.options import DistError, DistLayout, DistMode, RoutingMode
from tpsbench.stacks import StepSpec
from tpsbench.stacks.training import Training, model_training, random_tokens

# a rank that stops answering ends the others' collectives after this long (gloo's default is 30 minutes)
COLLECTIVE_TIMEOUT = timedelta(seconds=120)


def exit_now(code: int) -> None:
    """End a torchrun worker after its process group is destroyed: flush, then ``os._exit``; a normal exit runs
    gloo's C++ destructors, which can abort the process after every result is written (docs/multi-gpu.md)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def torchrun_checks(script: str, checks: Callable[[int, int], int]) -> None:
    """Run ``checks(rank, world)`` (it returns how many failed) in a gloo process group under torchrun, and end the
    process with 0 when none failed, 1 otherwise, 2 outside torchrun."""
    if "RANK" not in os.environ:
        print(f"run under torchrun: torchrun --nproc-per-node N {script}", file=sys.stderr)
        exit_now(2)
    dist.init_process_group("gloo")
    failed = 1
    try:
        failed = checks(dist.get_rank(), dist.get_world_size())
    finally:
        dist.barrier()  # no rank tears gloo down while another still exchanges
        dist.destroy_process_group()
    exit_now(1 if failed else 0)


@dataclass(frozen=True, slots=True)
class DistSetup:
    mode: DistMode
    world: int
    rank: int
    backend: str
    ep_size: int | None = None  # ranks per expert-parallel group (consecutive); None: all ranks
    shard_size: int | None = None  # FSDP: ranks a parameter is sharded over (consecutive; hybrid sharding
    # replicates the shards across the world / shard_size groups); None: all ranks
    param_dtype: str = "fp32"  # FSDP's unsharded parameters: fp32 (as stored), or bf16 (mixed precision: bf16
    # gathers and compute, fp32 gradient reduction, as OLMo-core and torchtitan train)

    @property
    def ep_group_size(self) -> int:
        return self.world if self.ep_size is None else self.ep_size

    @property
    def expert_replicas(self) -> int:
        """Expert-parallel groups, each holding every expert once."""
        return self.world // self.ep_group_size

    @property
    def uses_ep(self) -> bool:
        return self.mode.uses_ep

    @property
    def uses_fsdp(self) -> bool:
        return self.mode.uses_fsdp


def check_layout(layout: DistLayout, spec: ModelSpec, impls: list[str]) -> None:
    """Refuse what the layout cannot shard, before any process group work."""
    layout.check_model(spec, [i for i in impls if is_bracket(i)])


def init_from_env(layout: DistLayout, device: str, backend: str | None) -> DistSetup:
    """Join the process group torchrun set up (one line and exit 2 outside torchrun, or with a backend this
    machine lacks)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise DistError(f"--dist {layout.mode} runs one process per GPU under torchrun: torchrun --nproc-per-node N "
                        f"-m tpsbench run --dist {layout.mode} ...")
    chosen = backend or ("nccl" if device == "cuda" else "gloo")
    available = {"gloo": dist.is_gloo_available(),
                 "nccl": dist.is_nccl_available() and torch.cuda.is_available() and device == "cuda"}
    if not available.get(chosen, False):
        have = ", ".join(b for b, ok in available.items() if ok) or "none"
        raise DistError(f"--dist-backend {chosen} is not available for --device {device} here (available: {have})")
    if device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group(chosen, timeout=COLLECTIVE_TIMEOUT)
    return DistSetup(layout.mode, dist.get_world_size(), dist.get_rank(), chosen, layout.ep_size, layout.shard_size,
                     layout.param_dtype or "fp32")


_GROUPS: dict[tuple[int, int], tuple[dist.ProcessGroup | None, dist.ProcessGroup | None]] = {}


def expert_groups(setup: DistSetup) -> tuple[dist.ProcessGroup | None, dist.ProcessGroup | None]:
    """This rank's expert-parallel group and its experts' replica group (the same position in every other
    expert-parallel group); (None, None) when expert parallelism spans all ranks (the world group, no replicas).
    Every rank creates every group, in the same order, as ``new_group`` requires; made once per process."""
    k, n = setup.ep_group_size, setup.world
    if k == n:
        return None, None
    if (n, k) not in _GROUPS:
        ep = replicas = None
        for first in range(0, n, k):
            group = dist.new_group(list(range(first, first + k)))
            ep = group if first <= setup.rank < first + k else ep
        for position in range(k):
            group = dist.new_group(list(range(position, n, k)))
            replicas = group if setup.rank % k == position else replicas
        _GROUPS[(n, k)] = (ep, replicas)
    return _GROUPS[(n, k)]


def shard_experts(model: nn.Module, impl: str, device: torch.device,
                  group: dist.ProcessGroup | None = None) -> list[nn.Parameter]:
    """Every MoE layer replaced by its expert-parallel version over ``group`` (same weights; this rank's experts);
    the expert parameters of this rank."""
    experts: list[nn.Parameter] = []
    for block in getattr(model, "blocks", []):
        ff = block.feed_forward
        if isinstance(ff, MoEFeedForward):
            ep = ExpertParallelMoE(ff.router.weight.shape[1], ff.spec, impl=impl, group=group, device=device)
            ep.load_from(ff)
            block.feed_forward = ep
            experts += list(ep.dense.experts.parameters())
    return experts


def _average(params: list[nn.Parameter], world: int, group: dist.ProcessGroup | None = None) -> None:
    """Gradients summed over ``group``'s ranks (default all) in one coalesced all-reduce (what DDP does, bucketed),
    divided by ``world``."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = _flatten_dense_tensors(grads)
    dist.all_reduce(flat, group=group)
    flat /= world
    for g, synced in zip(grads, _unflatten_dense_tensors(flat, grads), strict=True):
        g.copy_(synced)


def dist_model(spec: ModelSpec, impl: str, setup: DistSetup, device: torch.device, *, lr: float = 1e-4,
               foreach: bool | None = None, eps: float = 1e-8) -> tuple[nn.Module, torch.optim.Optimizer, _Reducer]:
    """The model of ``spec`` laid out for ``setup`` (call with the same seed on every rank), its AdamW, and what
    completes the gradients after backward."""
    model = build_model(spec, impl=impl, device=device)
    ep_group, replica_group = expert_groups(setup) if setup.uses_ep else (None, None)
    experts = shard_experts(model, impl, device, ep_group) if setup.uses_ep else []
    expert_ids = {id(p) for p in experts}
    if setup.uses_fsdp:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        shards = setup.shard_size or setup.world
        # hybrid sharding (HSDP): shard over groups of consecutive ranks, replicate across them; FSDP2 reduce-
        # scatters inside a group, then all-reduces across the replicas
        mesh = (init_device_mesh(device.type, (setup.world,)) if shards == setup.world else
                init_device_mesh(device.type, (setup.world // shards, shards), mesh_dim_names=("replicate", "shard")))
        from torch.distributed.fsdp import MixedPrecisionPolicy

        mixed: dict[str, MixedPrecisionPolicy] = {}
        if setup.param_dtype == "bf16":
            mixed["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        for block in model.blocks:
            mine = {p for p in block.parameters() if id(p) in expert_ids}
            fully_shard(block, mesh=mesh, ignored_params=mine or None, **mixed)
        fully_shard(model, mesh=mesh, ignored_params=set(experts) or None, **mixed)
        replicated: list[nn.Parameter] = []
    else:
        replicated = [p for p in model.parameters() if id(p) not in expert_ids]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1, foreach=foreach, eps=eps)
    return model, opt, _Reducer(replicated, experts, setup.world, replica_group)


@dataclass(slots=True)
class _Reducer:
    replicated: list[nn.Parameter]  # averaged by an all-reduce (ep without fsdp)
    experts: list[nn.Parameter]  # this rank's experts: their gradients hold their group's tokens
    world: int
    replica_group: dist.ProcessGroup | None = None  # the same experts in the other groups (None: no other group)

    def __call__(self) -> None:
        _average(self.replicated, self.world)
        if self.replica_group is not None:  # every group's tokens, then / N
            _average(self.experts, self.world, self.replica_group)
            return
        with torch.no_grad():
            for p in self.experts:
                if p.grad is not None:
                    p.grad /= self.world


def dist_training(spec: ModelSpec, case: StepSpec, setup: DistSetup, *, device: torch.device, policy: DTypePolicy,
                  routing: RoutingMode, skew: float, seed: int) -> Training:
    """The training step of ``case`` on this rank (its own tokens: seed + rank), ready to time; its parameter
    count is this rank's (local shards and experts)."""
    s = bracket_spec(spec, case.impl) if is_bracket(case.impl) else spec
    impl = case.impl if s.moe is not None else baseline().name
    torch.manual_seed(seed)  # the same initial weights on every rank
    model, opt, reduce = dist_model(s, impl, setup, device)
    model.recompute = case.recompute  # its recomputed forward exchanges the expert rows again
    for layer in moe_layers(model):
        layer.router.set_routing(routing, skew, seed)
    ids, labels = random_tokens(s.vocab_size, case.tokens, min(s.seq_len, case.tokens), device, seed + setup.rank)
    return model_training(model, opt, ids, labels, case.accumulation, policy, device, after_backward=reduce,
                          recipe={"stack": "tpsbench", "dist": str(setup.mode), "world_size": str(setup.world),
                                  "backend": setup.backend})
