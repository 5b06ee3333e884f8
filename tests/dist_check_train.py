"""One distributed training step (tpsbench/distributed/train.py: ``fsdp``, ``ep``, ``fsdp+ep``) against the same step in
one process, under ``torchrun`` (CPU, gloo): ``torchrun --nproc-per-node N tests/dist_check_train.py``.
Exit 0 when, for every layout, every gradient of the step and every parameter after one AdamW step equal the
single-process step's, 1 otherwise; rank 0 prints one line per check, then the controls'.

Each rank trains on its own sequences; the single-process reference (run on every rank) takes the mean of the N
ranks' losses. The gradients are compared as well as the parameters: AdamW's first update is about
lr * sign(gradient), so the parameters alone would not see a gradient off by a constant factor. fp32; moe_tiny
(8 experts, load-balancing and z-losses per rank's batch) and, for fsdp, dense_tiny. Two controls must be
caught: gradients summed over the ranks instead of averaged; expert-parallel groups of half the ranks whose
expert replicas are not all-reduced.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from tpsbench.distributed.train import DistSetup, dist_model, torchrun_checks
from tpsbench.models import get_model
from tpsbench.nn.transformer import build_model
from tpsbench.options import DistMode
from tpsbench.stacks.training import random_tokens

GRAD_TOLERANCE = 1e-5  # fp32 gradients, relative to each tensor's largest: 4 ranks sum in another order (1.5e-7)
# parameters after the step, absolute, in units of the learning rate: AdamW's first update g / (|g| + eps) turns
# the summation-order differences of gradients near eps into parameter differences (seen: up to 3.4e-3 lr on 4
# ranks with eps 1e-8); a wrong or missing update moves a parameter by up to 1 lr
PARAM_TOLERANCE_LR = 1e-2
EPS = 1e-6  # AdamW's: above the gradients' rounding differences (1e-7 relative), so their sign noise stays small
LR = 1e-2
SEQUENCES_PER_RANK = 2
# (layout, model, activation checkpointing, expert-parallel groups of half the ranks): with "full" the blocks are
# recomputed in the backward, and with them the expert-parallel exchanges and FSDP's gathers (the reference is not
# checkpointed); with half-size groups each expert lives on two ranks (on 2 ranks: groups of one, every rank holding
# every expert) and its gradient is completed by the replicas' all-reduce
CHECKS = (("fsdp", "moe_tiny", "none", False), ("fsdp", "dense_tiny", "none", False),
          ("ep", "moe_tiny", "none", False), ("fsdp+ep", "moe_tiny", "none", False),
          ("fsdp+ep", "moe_tiny", "full", False), ("ep", "moe_tiny", "none", True),
          ("fsdp+ep", "moe_tiny", "none", True))
# hybrid sharding: FSDP's shard groups of half the ranks, replicated across the two halves
HYBRID = (("fsdp", "dense_tiny"), ("fsdp+ep", "moe_tiny"))
# FSDP's mixed precision (bf16 unsharded parameters, forward and backward in bf16, gradients reduced in fp32)
# against the single process computing in bf16 (the reference's parameters cast to bf16: the values FSDP gathers;
# against the fp32 step the routing of near-tied tokens differs and moe_tiny's gradients by 17-20%): bf16's
# 8 mantissa bits in the gradients' sums bound the difference, not the rounding order
MIXED = (("fsdp", "dense_tiny"), ("fsdp+ep", "moe_tiny"))
BF16_GRAD_TOLERANCE = 3e-2


def _reference_view(name: str, p: torch.Tensor, ref: dict[str, torch.Tensor], model: nn.Module) -> torch.Tensor:
    """The reference tensor a distributed parameter (or its gradient) stands for: the same name (an expert-parallel
    layer keeps its router and shared expert under ``.dense``), this rank's slice of the experts."""
    key = name.replace("feed_forward.dense.", "feed_forward.")
    full = ref[key]
    if ".experts." in key and p.shape[0] != full.shape[0]:
        layer = model.get_submodule(name.split(".dense.")[0])
        return full[layer.first_expert: layer.first_expert + layer.local_experts]
    return full


def _worst(model: nn.Module, reference: nn.Module, *, grads: bool) -> float:
    ref = {n: (p.grad if grads else p) for n, p in reference.named_parameters()}
    worst = 0.0
    with torch.no_grad():
        for name, p in model.named_parameters():
            a = p.grad if grads else p
            mine = a.full_tensor() if hasattr(a, "full_tensor") else a
            b = _reference_view(name, p, ref, model)
            scale = b.abs().max().clamp_min(1e-12) if grads else 1.0
            worst = max(worst, float((mine - b).abs().max() / scale))
    return worst


@dataclass(slots=True)
class Stepped:
    """One distributed step's backward next to the single-process reference's (both before their optimizers)."""

    model: nn.Module
    reference: nn.Module
    opt: torch.optim.Optimizer
    ref_opt: torch.optim.Optimizer
    computed_in: list[str]  # the dtype of block 0's query weight in each forward (FSDP's gathered parameter)


def backward_both(setup: DistSetup, name: str, *, loss_scale: float = 1.0, recompute: str = "none",
                  skip_replicas: bool = False, reference_dtype: torch.dtype = torch.float32) -> Stepped:
    """The layout's step on this rank (its own sequences) and the reference's on every rank's, both backward."""
    spec = get_model(name)
    impl = "grouped" if spec.moe is not None else "loop"
    torch.manual_seed(0)
    reference = build_model(spec, impl=impl).to(reference_dtype)
    torch.manual_seed(0)
    model, opt, reduce = dist_model(spec, impl, setup, torch.device("cpu"), lr=LR, foreach=False, eps=EPS)
    model.recompute = recompute
    if skip_replicas:  # the second control: the experts' replicas never summed
        reduce.replica_group = None
    seen: list[str] = []
    hook = model.blocks[0].attention.w_q.register_forward_hook(lambda m, i, o: seen.append(str(m.weight.dtype)))
    tokens = SEQUENCES_PER_RANK * spec.seq_len
    data = [random_tokens(spec.vocab_size, tokens, spec.seq_len, torch.device("cpu"), seed=10 + r)
            for r in range(setup.world)]
    ref_opt = torch.optim.AdamW(reference.parameters(), lr=LR, weight_decay=0.1, foreach=False, eps=EPS)
    torch.stack([reference.training_loss(ids, labels) for ids, labels in data]).mean().backward()
    (model.training_loss(*data[setup.rank]) * loss_scale).backward()
    reduce()
    hook.remove()
    return Stepped(model, reference, opt, ref_opt, seen)


def check(mode: str, name: str, rank: int, world: int, loss_scale: float = 1.0,
          recompute: str = "none", ep_size: int | None = None, skip_replicas: bool = False,
          shard_size: int | None = None) -> tuple[float, float]:
    """The largest gradient difference (relative) and parameter difference after the step (in units of lr)."""
    s = backward_both(DistSetup(DistMode(mode), world, rank, "gloo", ep_size, shard_size), name, loss_scale=loss_scale,
                      recompute=recompute, skip_replicas=skip_replicas)
    grads = _worst(s.model, s.reference, grads=True)
    s.ref_opt.step()
    s.opt.step()
    return grads, _worst(s.model, s.reference, grads=False) / LR


def mixed_precision_check(mode: str, name: str, rank: int, world: int) -> tuple[float, str, set[str]]:
    """FSDP's mixed precision: the gradient difference against the single process in bf16, the dtype a block's
    first matmul weight had in the forward (FSDP's gathered parameter), and the dtypes of the sharded gradients."""
    s = backward_both(DistSetup(DistMode(mode), world, rank, "gloo", param_dtype="bf16"), name,
                      reference_dtype=torch.bfloat16)
    grad_dtypes = {str(p.grad.dtype) for p in s.model.parameters() if p.grad is not None}
    return _worst(s.model, s.reference, grads=True), s.computed_in[0], grad_dtypes


def _layout(rank: int, world: int, mode: str, name: str, what: str, **kwargs) -> bool:
    """One fp32 layout check, its worst over the ranks, rank 0's line; whether it passed."""
    err = torch.tensor(check(mode, name, rank, world, **kwargs))
    dist.all_reduce(err, op=dist.ReduceOp.MAX)
    grads, params = (float(v) for v in err)
    ok = grads <= GRAD_TOLERANCE and params <= PARAM_TOLERANCE_LR
    if rank == 0:
        print(f"{'ok  ' if ok else 'FAIL'} {world} ranks, {mode} step of {name}{what}: gradients {grads:.2e} "
              f"(relative), parameters after AdamW {params:.2e} lr", flush=True)
    return ok


def _control(rank: int, world: int, what: str, mode: str, name: str, **kwargs) -> bool:
    """A broken step that the gradients must catch (the parameters after AdamW's sign-like first step are nearly
    the same); whether it was caught."""
    grads, _ = check(mode, name, rank, world, **kwargs)
    caught = grads > GRAD_TOLERANCE
    if rank == 0:
        print(f"{'ok  ' if caught else 'FAIL'} {world} ranks, control ({what}): "
              f"{'caught' if caught else 'not caught'}, gradients {grads:.2e}", flush=True)
    return caught


def checks(rank: int, world: int) -> int:
    """Every layout, then the controls, on this rank; rank 0 prints a line each. The number that failed."""
    failed = 0
    for mode, name, recompute, half in CHECKS:
        ep_size = world // 2 if half else None
        what = "" if recompute == "none" else f" (activation checkpointing {recompute})"
        what += "" if ep_size is None else f" (expert-parallel groups of {ep_size})"
        failed += not _layout(rank, world, mode, name, what, recompute=recompute, ep_size=ep_size)
    for mode, name in MIXED:
        grads, computed_in, grad_dtypes = mixed_precision_check(mode, name, rank, world)
        err = torch.tensor([grads])
        dist.all_reduce(err, op=dist.ReduceOp.MAX)
        ok = float(err) <= BF16_GRAD_TOLERANCE and computed_in == "torch.bfloat16" and grad_dtypes == {"torch.float32"}
        failed += not ok
        if rank == 0:
            print(f"{'ok  ' if ok else 'FAIL'} {world} ranks, {mode} step of {name} (bf16 gathers): gradients "
                  f"{float(err):.2e} (relative, against one process in bf16), blocks computed in {computed_in}, "
                  f"gradients {', '.join(sorted(grad_dtypes))}", flush=True)
    for mode, name in HYBRID:
        half = max(1, world // 2)
        failed += not _layout(rank, world, mode, name, f" (hybrid sharding over groups of {half})", shard_size=half)
    failed += not _control(rank, world, "gradients summed, not averaged", "fsdp", "dense_tiny",
                           loss_scale=float(world))
    failed += not _control(rank, world, "expert replicas not all-reduced", "ep", "moe_tiny", ep_size=world // 2,
                           skip_replicas=True)
    return failed


if __name__ == "__main__":
    torchrun_checks("tests/dist_check_train.py", checks)
