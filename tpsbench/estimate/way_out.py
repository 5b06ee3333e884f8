"""When a training step does not fit the GPU: what would, each with the memory it needs and its expected tokens/s.

Tried in turn, each from the step as asked: the largest microbatch of whole sequences that fits; activation
checkpointing of every block (``--ac full``); each other implementation of an MoE layer; and FSDP over 2, 4 or 8
GPUs (the fewest that fit, at the largest microbatch that fits them). Every number is the memory model's and the
expected-time model's, as `predict`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from tpsbench.costmodel import Workload
from tpsbench.estimate.distributed import predict_dist
from tpsbench.estimate.distributed_memory import dist_memory
from tpsbench.estimate.memory import step_memory, usable_bytes
from tpsbench.estimate.step import expected_for
from tpsbench.impls import cost_model_names, get_impl
from tpsbench.options import DistLayout, DistMode, Recompute
from tpsbench.profiles import GPUProfile

GPU_COUNTS = (2, 4, 8)


@dataclass(frozen=True, slots=True)
class WayOut:
    flags: str  # what to pass to predict (and run) instead
    required_bytes: float  # the memory model's, on one GPU
    expected_tokens_per_s: float | None  # per GPU; None when no efficiency table gives one


def _single(w: Workload, profile: GPUProfile, compiled: bool, flags: str) -> WayOut | None:
    s = expected_for(w, profile, compiled=compiled)
    if not s.fits:
        return None
    return WayOut(flags, s.memory.required_bytes, None if s.expected is None else s.tokens / s.expected.seconds)


def largest_microbatch(w: Workload, profile: GPUProfile, *, compiled: bool, fsdp_gpus: int = 1) -> int | None:
    """The most tokens, in whole sequences, up to ``w.tokens`` whose step fits one GPU (of ``fsdp_gpus`` under
    FSDP); None when one sequence does not."""
    usable = usable_bytes(profile.memory_gb.value)
    asked = expected_for(w, profile, compiled=compiled).memory
    overhead = asked.overhead_bytes / asked.peak_bytes if asked.peak_bytes else 0.0  # the table's allocator share

    def fits(sequences: int) -> bool:
        x = replace(w, tokens=sequences * w.seq_len)
        mem = (step_memory(x, compiled=compiled, overhead_fraction=overhead) if fsdp_gpus == 1 else
               dist_memory(x, "fsdp", fsdp_gpus, compiled=compiled, overhead_fraction=overhead))
        return mem.fits(usable)

    lo, hi = 0, w.tokens // w.seq_len  # sequences: the largest count that fits, by bisection (memory grows)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo * w.seq_len if lo else None


def ways_out(w: Workload, profile: GPUProfile, *, compiled: bool) -> list[WayOut]:
    """What fits where ``w`` does not, in the order tried (empty when nothing tried fits)."""
    out: list[WayOut] = []
    tokens = largest_microbatch(w, profile, compiled=compiled)
    if tokens is not None and tokens < w.tokens:
        way = _single(replace(w, tokens=tokens), profile, compiled, f"--batch {tokens}")
        out += [way] if way else []
    if w.recompute is Recompute.NONE:
        way = _single(replace(w, recompute=Recompute.FULL), profile, compiled, "--ac full")
        out += [way] if way else []
    if w.model.is_moe:
        current = get_impl(w.impl).name
        for name in cost_model_names():
            impl = get_impl(name)
            factor = w.capacity_factor or (w.model.moe.capacity_factor if w.model.moe else None)
            if impl.name == current or name != impl.name or (impl.pads_to_capacity and factor is None):
                continue  # the one asked for, an alias, or a capacity MoE with no factor to pad to
            way = _single(replace(w, impl=name), profile, compiled, f"--impl {name}")
            out += [way] if way else []
    for world in GPU_COUNTS:  # the fewest GPUs whose FSDP shards fit, at the largest microbatch that does
        tokens = largest_microbatch(w, profile, compiled=compiled, fsdp_gpus=world)
        if tokens is None:
            continue
        d = predict_dist(replace(w, tokens=tokens), profile, DistLayout(DistMode("fsdp"), world), compiled=compiled)
        batch = "" if tokens == w.tokens else f" --batch {tokens}"
        out.append(WayOut(f"--gpus {world} --dist fsdp{batch}", d.memory.required_bytes,
                          d.tokens_per_s_per_gpu("expected", "full")))
        break
    return out
