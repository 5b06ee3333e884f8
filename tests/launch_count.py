"""Count the device operations one forward + backward of the MoE layer issues, per implementation: a
deterministic measure of host overhead (each is a kernel launch on a GPU, 5-10 us of CPU time; at
moe_1b's shape on the H100 the layer was host-bound: 3.7 ms of GPU kernels in a 6.7 ms fwd+bwd,
results/h100-kernels/rows/moe_1b-host-trace.log).

Counts aten ops that run a kernel (views, empty allocations and other metadata ops excluded) and Triton
launches. Runs on the CPU, with TRITON_INTERPRET=1 set before triton is imported (test_launch_count.py
starts it as a subprocess); the ops the interpreter runs inside a Triton launch are not counted.

    TRITON_INTERPRET=1 PYTHONPATH=. python tests/launch_count.py triton,grouped,capacity [--autocast]
"""

from __future__ import annotations

import collections
import sys

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from tpsbench.models import MoESpec
from tpsbench.nn.moe import MoEFeedForward

# aten ops that only make or change tensor metadata or allocate: no kernel on a GPU
_NO_KERNEL = {
    "view", "_unsafe_view", "reshape", "_reshape_alias", "t", "transpose", "permute", "expand", "as_strided",
    "detach", "alias", "slice", "select", "unsqueeze", "squeeze", "unbind", "split", "split_with_sizes", "empty",
    "empty_like", "empty_strided", "new_empty", "new_empty_strided", "lift_fresh", "_local_scalar_dense",
    "is_same_size", "set_",
}


class _Counter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: collections.Counter[str] = collections.Counter()
        self.inside_triton = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if not self.inside_triton and name not in _NO_KERNEL:
            self.ops[name] += 1
        return func(*args, **(kwargs or {}))


_ACTIVE: list[_Counter] = []


def _count_triton_launches() -> None:
    """Wrap the interpreter's launch: one count per launch, nothing counted inside it."""
    from triton.runtime import interpreter

    launch = interpreter.GridExecutor.__call__

    def counted(self, *args, **kwargs):
        if not _ACTIVE:
            return launch(self, *args, **kwargs)
        counter = _ACTIVE[-1]
        counter.ops["triton:" + self.fn.__name__] += 1
        counter.inside_triton += 1
        try:
            return launch(self, *args, **kwargs)
        finally:
            counter.inside_triton -= 1

    interpreter.GridExecutor.__call__ = counted


def count_ops(impl: str, *, tokens: int = 24, d: int = 32, experts: int = 8, top_k: int = 2,
              hidden: int = 16, autocast: bool = False) -> tuple[int, int, collections.Counter[str]]:
    """(ops in the forward, ops in forward + backward, ops by name) of one MoE layer step, after a warm-up
    step (first calls may build caches). ``autocast``: under bf16 autocast over fp32 parameters, as
    ``tpsbench run`` measures (the interpreter's bf16 results are wrong, kernels/interpret.py; counts are not)."""
    torch.manual_seed(0)
    spec = MoESpec(num_experts=experts, top_k=top_k, expert_hidden=hidden, shared_hidden=None)
    layer = MoEFeedForward(d, spec, impl=impl)
    x = torch.randn(tokens, d, requires_grad=True)
    grad = torch.randn(tokens, d)
    amp = torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast)
    with amp:
        out = layer(x)
    out.float().backward(grad)
    for p in (x, *layer.parameters()):
        p.grad = None
    with _Counter() as counter:
        _ACTIVE.append(counter)
        try:
            with amp:
                out = layer(x)
            forward = sum(counter.ops.values())
            out.float().backward(grad)
        finally:
            _ACTIVE.pop()
    return forward, sum(counter.ops.values()), counter.ops


def main(impls: list[str], autocast: bool) -> None:
    _count_triton_launches()
    for impl in impls:
        forward, total, ops = count_ops(impl, autocast=autocast)
        print(f"{impl} forward={forward} total={total} {dict(sorted(ops.items()))}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1].split(",") if len(sys.argv) > 1 else ["triton", "grouped", "capacity"], "--autocast" in sys.argv)
