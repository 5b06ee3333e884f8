"""The expert-parallel layer against the single-process one, under ``torchrun`` (CPU, gloo; or NCCL on GPUs):
``torchrun --nproc-per-node N tests/dist_check_ep.py``. Exit 0 when every case matches, 1 otherwise; rank 0
prints one line per case.

Each rank routes its own tokens (a different number per rank, so the splits are uneven); the reference is the
single-process layer with the same weights on that rank's tokens. Compared: the layer's output and the input's
gradient on every rank; each rank's expert-weight gradients against its slice of the reference's summed over
ranks (an expert's gradient gathers the tokens of every rank); the router's and the shared expert's gradients
summed over ranks (what data-parallel training all-reduces). Cases: learned routing, an expert no token chooses,
skewed routing; fp32, with the ``loop``, ``grouped`` and ``capacity`` implementations (capacity with a factor
large enough to drop nothing).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from tpsbench.distributed.ep import ExpertParallelMoE
from tpsbench.distributed.train import torchrun_checks
from tpsbench.models import MoESpec
from tpsbench.nn.moe import MoEFeedForward

D_MODEL = 32
TOLERANCE = 1e-5  # fp32, relative to the largest reference value


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    impl: str
    routing: str = "learned"
    starve_expert: int | None = None  # an expert whose router logits are always the lowest
    control: bool = False  # the experts deliberately misplaced (each rank holds its neighbour's): must be caught


CASES = (
    Case("learned, loop", "loop"),
    Case("learned, grouped", "grouped"),
    Case("learned, capacity (nothing dropped)", "capacity"),
    Case("an expert with no tokens, loop", "loop", starve_expert=3),
    Case("an expert with no tokens, grouped", "grouped", starve_expert=3),
    Case("skewed routing, grouped", "grouped", routing="skewed"),
    Case("control: experts on the wrong rank", "loop", control=True),
)


def _spec() -> MoESpec:
    return MoESpec(num_experts=8, top_k=2, expert_hidden=16, shared_hidden=16, capacity_factor=8.0)


def _inputs(rank: int, starve: bool) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + rank)
    tokens = 24 + 9 * rank  # uneven per rank
    x = torch.randn(tokens, D_MODEL, generator=g)
    if starve:
        x[:, 0] = x[:, 0].abs() + 3.0  # feature 0 always positive: a router row negative there is never chosen
    return x, torch.randn(tokens, D_MODEL, generator=g)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def run_case(case: Case, rank: int, world: int) -> float:
    """The largest relative difference of this rank's outputs and gradients from the reference."""
    torch.manual_seed(0)  # the same full layer on every rank
    spec = _spec()
    full = MoEFeedForward(D_MODEL, spec, impl=case.impl)
    if case.starve_expert is not None:
        with torch.no_grad():
            full.router.weight[case.starve_expert, 0] = -50.0
    ep = ExpertParallelMoE(D_MODEL, spec, impl=case.impl)
    ep.load_from(full)
    if case.control:
        with torch.no_grad():
            for name in ("w1", "w3", "w2"):
                e = getattr(full.experts, name)
                getattr(ep.dense.experts, name).copy_(e.roll(ep.local_experts, 0)[ep.first_expert:][:ep.local_experts])
    for layer in (full.router, ep.dense.router):
        layer.set_routing(case.routing, skew=1.5, seed=7)
    x, upstream = _inputs(rank, case.starve_expert is not None)
    x_ref, x_ep = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    (full(x_ref) * upstream).sum().backward()
    out = ep(x_ep)
    (out * upstream).sum().backward()
    with torch.no_grad():
        errs = [_rel(out, full(x_ref)), _rel(x_ep.grad, x_ref.grad)]
    lo, hi = ep.first_expert, ep.first_expert + ep.local_experts
    for name in ("w1", "w3", "w2"):
        ref = getattr(full.experts, name).grad.clone()
        dist.all_reduce(ref)
        errs.append(_rel(getattr(ep.dense.experts, name).grad, ref[lo:hi]))
    replicated = [(full.router.weight, ep.dense.router.weight)]
    if full.shared is not None and ep.dense.shared is not None:
        replicated += list(zip(full.shared.parameters(), ep.dense.shared.parameters(), strict=True))
    for ref_p, ep_p in replicated:
        ref, got = ref_p.grad.clone(), ep_p.grad.clone()
        dist.all_reduce(ref)
        dist.all_reduce(got)
        errs.append(_rel(got, ref))
    if case.starve_expert is not None:
        counts = full.last_route.tokens_per_expert.clone()
        dist.all_reduce(counts)
        if int(counts[case.starve_expert]) != 0:
            raise AssertionError(f"{case.name}: expert {case.starve_expert} got tokens; the case tests nothing")
    return max(errs)


def checks(rank: int, world: int) -> int:
    """Every case on this rank; rank 0 prints a line per case. The number of cases that failed."""
    failed = 0
    for case in CASES:
        err = torch.tensor(run_case(case, rank, world))
        dist.all_reduce(err, op=dist.ReduceOp.MAX)
        ok = (float(err) > TOLERANCE) if case.control else (float(err) <= TOLERANCE)
        failed += not ok
        if rank == 0:
            what = ("caught" if ok else "not caught") if case.control else "matches" if ok else "differs"
            print(f"{'ok  ' if ok else 'FAIL'} {world} ranks, {case.name}: {what}, max relative difference "
                  f"{float(err):.2e}", flush=True)
    return failed


if __name__ == "__main__":
    torchrun_checks("tests/dist_check_ep.py", checks)
