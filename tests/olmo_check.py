"""tpsbench held to OLMo-core's own modules, for a dense model and OLMo-core's capacity (MoEType.default) and
dropless MoE:

- equivalence: tpsbench.nn's model loaded with OLMo-core's weights (tpsbench_state_dict) gives the same logits
  and the same gradient of every parameter in fp32, the capacity MoE dropping the same assignments;
- FLOPs: the cost model's exact matmul FLOPs equal FlopCounterMode on OLMo-core's model, forward and backward.

Run by tests/test_olmo_core.py in a subprocess: OLMo-core's MoE calls Triton gather/scatter kernels, which run
on the CPU only in Triton's interpreter (TRITON_INTERPRET=1, set before triton is imported), and its autotuner
cannot benchmark there (no driver): each autotuned kernel is given its first config, here only, never on a GPU.
Prints one line per case and "ALL OK"."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import warnings

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from tpsbench.costmodel import FWD_BWD, Phase, Workload, step_ops, total_flops
from tpsbench.models import get_model
from tpsbench.nn.transformer import build_model
from tpsbench.stacks.olmo_core import olmo_config, tpsbench_state_dict

TOLERANCE = 1e-5  # fp32: the two compute the same function in a different summation order (measured: 3.6e-7)

# FlopCounterMode against the cost model's exact count, for every zoo entry (all are expressible in OLMo-core).
# Dense entries: the whole model at its own sequence length, built on fake tensors (shapes only: dense_7b's
# step takes ~1.5 s to count). MoE entries: OLMo-core routes data-dependently and calls Triton kernels, so they
# run on real tensors: one block (every block of a zoo model is the same) with embedding and head, 2 x 32
# tokens, and, where Triton's interpreter is slow, widths divided by `narrow` (d_model, heads' width, expert and
# shared widths; experts, top-k, capacity factor, norms kept). Measured here at full width: olmoe_1b_7b's
# dropless block 134 s, moe_1b's 45 s (most of it autograd filling a zero gradient of all experts' weights per
# expert, and the interpreter's gather/scatter); narrowed, a few seconds each.
# (model, cost-model implementation, narrow): OLMo-core's MoEType.default drops tokens past the capacity
# (tpsbench's "capacity"), MoEType.dropless computes every assignment (counted as "grouped")
DENSE_FLOP_CASES = ["dense_tiny", "dense_1m", "dense_60m", "dense_135m", "dense_271m", "dense_1b", "dense_7b"]
MOE_FLOP_CASES = [("moe_tiny", "capacity", 1), ("moe_tiny", "grouped", 1), ("moe_1b", "capacity", 1),
                  ("moe_1b", "grouped", 4), ("moe_1b_a390m", "capacity", 4), ("moe_1b_a390m", "grouped", 4),
                  ("olmoe_1b_7b", "grouped", 8)]


# (model, layers, implementation, narrow, tokens per sequence) whose tpsbench modules are held to OLMo-core's:
# the tiny ones whole at their sequence length, every other zoo entry with two blocks, 2 x 32 tokens and widths
# divided by `narrow` where the full width is slow on 2 cores (block structure, norms, experts, top-k kept);
# moe_1b's capacity case at 2 x 256 tokens: at 2 x 32 its capacity, int(1.2 * 64 / 256) rounded up to 8, is 0
EQUIVALENCE = [("dense_tiny", 2, "grouped", 1, 64), ("dense_1m", 4, "grouped", 1, 2048),
               ("moe_tiny", 2, "capacity", 1, 64), ("moe_tiny", 2, "grouped", 1, 64),
               ("dense_60m", 2, "grouped", 4, 32), ("dense_135m", 2, "grouped", 4, 32),
               ("dense_271m", 2, "grouped", 4, 32), ("dense_1b", 2, "grouped", 8, 32),
               ("dense_7b", 2, "grouped", 16, 32), ("moe_1b", 2, "capacity", 4, 256), ("moe_1b", 2, "grouped", 4, 32),
               ("moe_1b_a390m", 2, "capacity", 4, 32), ("moe_1b_a390m", 2, "grouped", 4, 32),
               ("olmoe_1b_7b", 2, "grouped", 8, 32)]


def single_config_autotuners() -> None:
    from tpsbench.stacks.olmo_core import interpreter_autotuners

    interpreter_autotuners()


def _spec(name: str, layers: int, impl: str, narrow: int = 1):
    spec = get_model(name).with_layers(layers)
    if spec.moe is not None and impl == "grouped":  # the dropless variant of the same model
        spec = dataclasses.replace(spec, moe=dataclasses.replace(spec.moe, capacity_factor=None))
    if narrow > 1:
        moe = spec.moe
        assert spec.d_model % (narrow * spec.n_heads) == 0, (name, narrow)
        if moe is None:
            assert spec.ffn_hidden is not None
            narrowed_widths = {"ffn_hidden": spec.ffn_hidden // narrow}
        else:
            shared = moe.shared_hidden // narrow if moe.shared_hidden else None
            experts = dataclasses.replace(moe, expert_hidden=moe.expert_hidden // narrow, shared_hidden=shared)
            narrowed_widths = {"moe": experts}
        spec = dataclasses.replace(spec, name=f"{name}/{narrow}", d_model=spec.d_model // narrow, **narrowed_widths)
    return spec


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def equivalence(name: str, layers: int, impl: str, narrow: int, seq: int) -> tuple[float, float, int]:
    """(logits error, worst gradient error, assignments dropped) of tpsbench's model against OLMo-core's."""
    spec = _spec(name, layers, impl, narrow)
    torch.manual_seed(0)
    theirs = olmo_config(spec).build(init_device="cpu")
    theirs.init_weights(device=torch.device("cpu"))
    theirs.eval()  # no auxiliary losses attached: the logits' own gradients are compared
    ours = build_model(spec, impl=impl if spec.moe is not None else "loop")
    ours.load_state_dict(tpsbench_state_dict(theirs.state_dict(), spec), strict=True)
    ids = torch.randint(0, spec.vocab_size, (2, seq))
    labels = torch.randint(0, spec.vocab_size, (2, seq))
    logits = {}
    for key, model in (("theirs", theirs), ("ours", ours)):
        model.zero_grad(set_to_none=True)
        logits[key] = model(ids)
        torch.nn.functional.cross_entropy(logits[key].flatten(0, 1), labels.flatten()).backward()
    error = _relative(logits["ours"], logits["theirs"])
    their_grads = tpsbench_state_dict({n: p.grad for n, p in theirs.named_parameters()}, spec)
    worst = max(_relative(p.grad, their_grads[n]) for n, p in ours.named_parameters())
    dropped = 0
    for block in ours.blocks if spec.moe is not None and impl == "capacity" else []:
        route = block.feed_forward.last_route
        dropped += int((route.tokens_per_expert - block.feed_forward.impl.capacity(
            route.expert_indices.shape[0], spec.moe.top_k, spec.moe.num_experts)).clamp_min(0).sum())
    assert error < TOLERANCE and worst < TOLERANCE, (name, impl, error, worst)
    if spec.moe is not None and impl == "capacity":  # a capacity case that drops nothing or all tests too little
        assert 0 < dropped < layers * ids.numel() * spec.moe.top_k, (name, dropped)
    return error, worst, dropped


def _count(model: torch.nn.Module, ids: torch.Tensor) -> tuple[int, int]:
    """(forward, forward + backward) FLOPs that FlopCounterMode sees in one step of the model on ids."""
    with sdpa_kernel([SDPBackend.MATH]):  # FlopCounterMode has no formula for the CPU flash kernel
        with FlopCounterMode(display=False) as fwd:
            logits = model(ids)
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), ids.flatten())
        with FlopCounterMode(display=False) as bwd:
            loss.backward()
    return fwd.get_total_flops(), fwd.get_total_flops() + bwd.get_total_flops()


def check(spec, impl: str, batch: int, seq: int, *, fake: bool) -> tuple[float, float]:
    """FlopCounterMode on OLMo-core's model of spec equals the cost model's exact count, forward and backward."""
    torch.manual_seed(0)
    with FakeTensorMode() if fake else contextlib.nullcontext():
        model = olmo_config(spec).build(init_device="cpu")
        measured_fwd, measured_all = _count(model, torch.randint(0, spec.vocab_size, (batch, seq)))
    ops = step_ops(Workload(model=spec, tokens=batch * seq, seq_len=seq, attention_backend="math", impl=impl))
    assert measured_fwd == total_flops(ops, phases=[Phase.FWD]), (spec.name, impl, measured_fwd)
    assert measured_all == total_flops(ops, phases=FWD_BWD), (spec.name, impl, measured_all)
    return measured_fwd, measured_all


def _equivalence_line(case: tuple) -> str:
    error, worst, dropped = equivalence(*case)
    return f"{case[:3]} logits {error:.1e}, gradients <= {worst:.1e}, {dropped} assignments dropped: same"


def _dense_flops_line(name: str) -> str:
    spec = get_model(name)
    fwd, total = check(spec, "grouped", 2, spec.seq_len, fake=True)
    return f"{name} {spec.n_layers} layers x 2 x {spec.seq_len}: fwd {fwd:.0f} fwd+bwd {total:.0f} FLOPs: equal"


def _moe_flops_line(case: tuple[str, str, int]) -> str:
    name, impl, narrow = case
    spec = _spec(name, 1, impl, narrow)
    fwd, total = check(spec, impl, 2, min(32, spec.seq_len), fake=False)
    return f"{spec.name} {impl} 1 layer x 2 x 32: fwd {fwd:.0f} fwd+bwd {total:.0f} FLOPs: equal"


def _worker_init() -> None:
    warnings.simplefilter("ignore")  # OLMo-core warns that grouped_gemm and transformer_engine are missing
    torch.set_num_threads(1)  # the cases run side by side, one per core
    single_config_autotuners()


def _is_moe(job: tuple[str, object]) -> bool:
    kind, arg = job
    name = arg if isinstance(arg, str) else arg[0]  # type: ignore[index]
    return kind != "dense" and get_model(name).moe is not None


def _run(job: tuple[str, object]) -> str:
    kind, arg = job
    return {"same": _equivalence_line, "dense": _dense_flops_line, "moe": _moe_flops_line}[kind](arg)


def main() -> None:
    """Every case in its own process of a pool, one per core (at most CI's two): the cases are independent and
    most of their time is Triton's interpreter, single-threaded Python (this script took 106 s on 2 cores run
    one case after another). Lines are printed in the cases' order."""
    import multiprocessing as mp
    import os

    jobs = ([("same", c) for c in EQUIVALENCE] + [("dense", n) for n in DENSE_FLOP_CASES]
            + [("moe", c) for c in MOE_FLOP_CASES])
    # the MoE cases first (most of the time is theirs, in the interpreter), so that neither worker is left with
    # a long case at the end while the other idles; lines are printed in the order of `jobs`
    order = sorted(range(len(jobs)), key=lambda i: not _is_moe(jobs[i]))
    workers = max(1, min(2, os.cpu_count() or 1))
    with mp.get_context("spawn").Pool(workers, initializer=_worker_init) as pool:
        lines = pool.map(_run, [jobs[i] for i in order], chunksize=1)
    for _, line in sorted(zip(order, lines, strict=True)):
        print(line, flush=True)
    print("ALL OK")


if __name__ == "__main__":
    sys.exit(main())
