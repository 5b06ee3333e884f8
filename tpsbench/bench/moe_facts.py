"""What an MoE layer point records besides its time: its stages timed one by one (forward, no autograd, operands
already in the compute dtype, so each number is that stage's own kernels), and its routing as measured: the
load balance, which torch._grouped_mm path ran, the dropped share, and the GPU->CPU syncs of one forward."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator

import torch

from tpsbench.impls import get_impl
from tpsbench.nn.experts import GroupedExperts, grouped_mm_path
from tpsbench.nn.moe import MoEFeedForward
from tpsbench.options import Stage
from tpsbench.stacks.training import RoutingFacts

Autocast = Callable[[], contextlib.AbstractContextManager[None]]


def stage_fn(layer: torch.nn.Module, x: torch.Tensor, stage: Stage, compute_dtype: torch.dtype
             ) -> Callable[[], object]:
    """One stage of ``layer``'s forward on the intermediate results of the stages before it, computed once."""
    assert isinstance(layer, MoEFeedForward)
    impl = layer.impl

    class _Weights(torch.nn.Module):  # the experts' weights, cast once, outside the timing
        def __init__(self, src: torch.nn.Module) -> None:
            super().__init__()
            self.w1, self.w3, self.w2 = (w.detach().to(compute_dtype) for w in (src.w1, src.w3, src.w2))

    with torch.no_grad():
        xc = x.to(compute_dtype)
        weights = _Weights(layer.experts)
        router_w = layer.router.weight.detach().to(compute_dtype)
        route = layer.router(xc, router_w)
        p = impl.permute(xc, route, weights)
        a, b = impl.up_gate(p, weights)
        h = impl.act(a, b)
        y = impl.down(h, p, weights)

    fns: dict[Stage, Callable[[], object]] = {
        Stage.ROUTER: lambda: layer.router(xc, router_w),
        Stage.PERMUTE: lambda: impl.permute(xc, route, weights),
        Stage.UP_GATE: lambda: impl.up_gate(p, weights),
        Stage.ACT: lambda: impl.act(a, b),
        Stage.DOWN: lambda: impl.down(h, p, weights),
        Stage.UNPERMUTE: lambda: impl.unpermute(y, p, xc),
    }
    chosen = fns[stage]

    def run() -> object:
        with torch.no_grad():
            return chosen()
    return run


def routing_facts(layer: MoEFeedForward, x: torch.Tensor, autocast: Autocast, compute_dtype: torch.dtype
                  ) -> RoutingFacts:
    """The last forward's routing (one untimed forward when there was none)."""
    route = layer.last_route
    if route is None:
        with torch.no_grad(), autocast():
            layer(x)
        route = layer.last_route
    assert route is not None
    counts = route.tokens_per_expert.float()
    impl = layer.impl
    dropped = None
    if get_impl(impl.name).pads_to_capacity:
        with torch.no_grad():
            p = impl.permute(x, route, layer.experts)
        assert p.kept is not None
        dropped = 1.0 - float(p.kept) / route.expert_indices.numel()
    return RoutingFacts(
        tokens_per_expert_max=float(counts.max()), tokens_per_expert_mean=float(counts.mean()),
        tokens_per_expert_max_over_mean=float(counts.max() / counts.mean()),
        experts_with_zero_tokens=int((counts == 0).sum()),
        grouped_mm_path=grouped_mm_path(x.device, compute_dtype) if isinstance(impl, GroupedExperts) else None,
        dropped_fraction=dropped,
        host_syncs=count_host_syncs(lambda: layer(x), autocast) if x.device.type == "cuda" else None)


@contextlib.contextmanager
def _sync_debug_warn() -> Iterator[list[str]]:
    caught: list[str] = []
    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield caught
        finally:
            torch.cuda.set_sync_debug_mode(previous)
            caught.extend(str(r.message) for r in records if "synchroniz" in str(r.message).lower())


def count_host_syncs(fn: Callable[[], object], autocast: Autocast) -> int:
    """GPU->CPU synchronisations during one forward, counted by CUDA's sync debug mode (measured, not assumed):
    the loop implementation syncs per layer, a fast grouped path does not."""
    torch.cuda.synchronize()
    with _sync_debug_warn() as caught, torch.no_grad(), autocast():
        fn()
    return len(caught)
