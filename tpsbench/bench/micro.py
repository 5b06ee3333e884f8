"""Micro benchmarks: one layer of a zoo model at its real widths, timed forward, backward and both.

Layers: ``attention`` (projections, qk-norm, RoPE, causal SDPA, output projection), ``mlp`` (the dense
SwiGLU), ``moe`` (router + experts + shared expert, per implementation) and its dense brackets
``dense_active`` / ``dense_total``. MoE stages (router, permute, up_gate, act, down, unpermute) are
timed forward only, without autograd, on operands already in the compute dtype, so each number is that
stage's own kernels.

Layers run as in training: fp32 master weights under bf16 autocast (policy ``amp_bf16``) on a GPU, plain
fp32 on the CPU; inputs are random (never zeros) and require grad so the data-gradient is computed.
Each point carries the cost model's FLOPs and bytes for exactly the ops timed, the roofline time on the
GPU's profile, and the achieved fraction of that floor.
"""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from tpsbench.bench.gpu_busy import measure_gpu_time
from tpsbench.bench.timing import L2Flusher, TimingConfig, WindowHook, time_fn
from tpsbench.bench.trace import export_trace
from tpsbench.costmodel import (
    DTypePolicy,
    OpCost,
    total_flops,
)
from tpsbench.costmodel.cases import MODES, STAGES, layer_case_ops
from tpsbench.impls import BRACKETS, bracket_hidden, get_impl, is_bracket, moe_impl_names
from tpsbench.models import ModelSpec
from tpsbench.nn.experts import GroupedExperts, grouped_mm_path, make_impl
from tpsbench.nn.layers import SwiGLU
from tpsbench.nn.moe import MoEFeedForward
from tpsbench.nn.transformer import attention_for
from tpsbench.profiles import GPUProfile
from tpsbench.results.schema import Derived, OpPrediction, PointPrediction
from tpsbench.roofline import ceilings_for, op_time


@dataclass(frozen=True, slots=True)
class MicroCase:
    layer: str  # attention | mlp | moe | dense_active | dense_total
    impl: str | None  # MoE implementation for layer "moe"
    tokens: int
    mode: str  # fwd | bwd | fwd_bwd | stage:<name>

    @property
    def label(self) -> str:
        impl = f"/{self.impl}" if self.impl else ""
        return f"{self.layer}{impl} {self.mode} @ {self.tokens}"


def micro_cases(spec: ModelSpec, impls: list[str], batches: list[int], stages: bool = True,
                layers: list[str] | None = None, stack: str = "tpsbench") -> list[MicroCase]:
    cases = []
    own = stack == "tpsbench"
    for tokens in batches:
        chosen: list[tuple[str, str | None]] = [("attention", None)]
        if spec.moe is None:
            chosen.append(("mlp", None))
        else:
            moe_impls = moe_impl_names() if own else impls  # another stack's MoE types, checked by its config
            chosen += [("moe", i) for i in impls if i in moe_impls]
            chosen += [(b, None) for b in BRACKETS if b in impls]
        if layers is not None:
            chosen = [(name, impl) for name, impl in chosen if name in layers]
        for layer, impl in chosen:
            cases += [MicroCase(layer, impl, tokens, mode) for mode in MODES]
            if own and stages and layer == "moe" and impl is not None and get_impl(impl).staged:
                cases += [MicroCase(layer, impl, tokens, f"stage:{s}") for s in STAGES]
    return cases


def case_ops(spec: ModelSpec, case: MicroCase, policy: DTypePolicy, attention_backend: str,
             capacity_factor: float | None) -> list[OpCost]:
    """The cost model's ops for exactly what a case times."""
    return layer_case_ops(spec, case.layer, case.impl, case.tokens, case.mode, policy, attention_backend,
                          capacity_factor)


def derived_metrics(ops: list[OpCost], tokens: int, median_s: float, profile: GPUProfile | None,
                    policy: DTypePolicy, ceilings: str = "spec", calibration: dict[str, object] | None = None
                    ) -> tuple[Derived, PointPrediction | None]:
    """Rates of a layer point from the cost model's ops of exactly what it timed, and their roofline floor."""
    matmul_flops = total_flops(ops)
    nbytes = sum(op.bytes for op in ops)
    derived = Derived(tokens_per_s=tokens / median_s, model_flops=total_flops(ops, kinds=None),
                      matmul_flops=matmul_flops, bytes=nbytes, achieved_tflops=matmul_flops / median_s / 1e12,
                      achieved_gbs=nbytes / median_s / 1e9)
    if profile is None:
        return derived, None
    ceil = ceilings_for(profile, policy.matmul_math, ceilings, calibration)
    times = [op_time(op, ceil) for op in ops]
    predicted = sum(t.seconds for t in times)
    memory_s = sum(t.seconds for t in times if t.bound.value == "memory")
    prediction = PointPrediction(
        profile=profile.name, ceilings=ceil.source, predicted_s=predicted,
        memory_bound_share=memory_s / predicted if predicted else None, achieved_fraction=predicted / median_s,
        ops=[OpPrediction(op=t.op.name, phase=t.op.phase.value, bound=t.bound.value, predicted_s=t.seconds)
             for t in times])
    return derived, prediction


class MicroBench:
    """Builds each layer once (real widths, on the device) and times the cases asked for."""

    def __init__(self, spec: ModelSpec, *, device: torch.device, policy: DTypePolicy, routing: str, skew: float,
                 timing: TimingConfig, profile: GPUProfile | None, seed: int = 0,
                 window: WindowHook | None = None, gpu_time: bool = True, stack: str = "tpsbench") -> None:
        self.spec, self.device, self.policy, self.stack = spec, device, policy, stack
        self.gpu_time = gpu_time  # profile a few extra calls for GPU busy/idle time
        self.window = window  # counter sampler around the timed repetitions
        self.routing, self.skew, self.timing, self.profile, self.seed = routing, skew, timing, profile, seed
        self._layers: dict[str, torch.nn.Module] = {}

    # --- setup ---------------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager[None]:
        if self.policy.autocast:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _layer(self, case: MicroCase) -> torch.nn.Module:
        if self.stack == "olmo-core":  # OLMo-core's own module; its MoE type is the implementation
            from tpsbench.stacks.olmo_core import olmo_core_layer

            name = f"{case.layer}/{case.impl}"
            if name not in self._layers:
                self._layers[name] = olmo_core_layer(self.spec, case.layer, case.impl, device=self.device,
                                                     seed=self.seed)
            return self._layers[name]
        key = case.layer
        if key not in self._layers:
            torch.manual_seed(self.seed)
            s, dev = self.spec, self.device
            if key == "attention":
                layer: torch.nn.Module = attention_for(s, dev)
            elif key == "mlp":
                assert s.ffn_hidden is not None
                layer = SwiGLU(s.d_model, s.ffn_hidden, device=dev)
            elif is_bracket(key):
                layer = SwiGLU(s.d_model, bracket_hidden(s, key), device=dev)
            else:
                assert s.moe is not None
                layer = MoEFeedForward(s.d_model, s.moe, device=dev)
                layer.router.set_routing(self.routing, self.skew, self.seed)
            for p in layer.parameters():
                if p.dim() > 1:
                    torch.nn.init.normal_(p, std=0.02)
            self._layers[key] = layer
        layer = self._layers[key]
        if isinstance(layer, MoEFeedForward):
            assert case.impl is not None and self.spec.moe is not None
            layer.set_impl(make_impl(case.impl, capacity_factor=self.spec.moe.capacity_factor))
        return layer

    def _input(self, case: MicroCase) -> torch.Tensor:
        g = torch.Generator(device=self.device).manual_seed(self.seed + case.tokens)
        shape: tuple[int, ...] = (case.tokens, self.spec.d_model)
        if case.layer == "attention":
            seq = min(self.spec.seq_len, case.tokens)
            shape = (case.tokens // seq, seq, self.spec.d_model)
        return torch.randn(shape, generator=g, device=self.device)

    # --- running -------------------------------------------------------------------------------
    def run(self, case: MicroCase, trace: Path | None = None) -> dict[str, object]:
        """Time ``case``; ``trace``: also write the profiler's Chrome trace of one repetition there."""
        layer = self._layer(case)
        x = self._input(case)
        info: dict[str, object] = {}
        setup: Callable[[], object] | None = None
        if case.mode.startswith("stage:"):
            fn = self._stage_fn(layer, x, case.mode.split(":", 1)[1])
        else:
            fn, setup = self._layer_fns(layer, x, case.mode)
        timed = time_fn(fn, device=self.device, config=self.timing, setup=setup, window=self.window)
        if self.gpu_time:
            info["gpu_time"] = measure_gpu_time(fn, device=self.device, median_s=statistics.median(timed.samples_s),
                                                setup=self._profiled_setup(setup, timed.l2_flushed))
        if trace is not None:
            info["trace"] = export_trace(fn, trace, device=self.device, setup=setup)
        if isinstance(layer, MoEFeedForward):
            info.update(self._routing_info(layer, x))
        elif hasattr(layer, "routing_info"):  # another stack's MoE
            info.update(layer.routing_info())
        return {"samples_s": timed.samples_s, "warmup": timed.warmup, "l2_flushed": timed.l2_flushed,
                "timer": timed.timer, "window": timed.window, "window_info": timed.window_info, **info}

    def _profiled_setup(self, setup: Callable[[], object] | None, flush: bool) -> Callable[[], object] | None:
        """The untimed work before each profiled call, including the L2 flush the timer did, so the
        kernels read from DRAM as they did when timed."""
        if not flush:
            return setup
        flusher = L2Flusher(self.device)

        def before() -> None:
            if setup is not None:
                setup()
            flusher()
        return before

    def _layer_fns(self, layer: torch.nn.Module, x: torch.Tensor,
                   mode: str) -> tuple[Callable[[], object], Callable[[], object]]:
        xg = x.detach().requires_grad_(True)
        params = list(layer.parameters())
        state: dict[str, torch.Tensor] = {}
        with self._autocast():
            grad = torch.randn_like(layer(xg))

        def clear() -> None:
            xg.grad = None
            for p in params:
                p.grad = None

        def fwd() -> None:
            with self._autocast():
                layer(xg)

        def fwd_bwd() -> None:
            with self._autocast():
                out = layer(xg)
            out.backward(grad)

        def setup_bwd() -> None:
            clear()
            with self._autocast():
                state["out"] = layer(xg)

        def bwd() -> None:
            state.pop("out").backward(grad)

        if mode == "fwd":
            return fwd, clear
        if mode == "bwd":
            return bwd, setup_bwd
        return fwd_bwd, clear

    def _stage_fn(self, layer: torch.nn.Module, x: torch.Tensor, stage: str) -> Callable[[], object]:
        assert isinstance(layer, MoEFeedForward)
        dt = torch.bfloat16 if self.policy.autocast else x.dtype
        impl = layer.impl

        class _Weights(torch.nn.Module):  # the experts' weights, cast once, outside the timing
            def __init__(self, src: torch.nn.Module) -> None:
                super().__init__()
                self.w1, self.w3, self.w2 = (w.detach().to(dt) for w in (src.w1, src.w3, src.w2))

        with torch.no_grad():
            xc = x.to(dt)
            weights = _Weights(layer.experts)
            router_w = layer.router.weight.detach().to(dt)
            route = layer.router(xc, router_w)
            p = impl.permute(xc, route, weights)
            a, b = impl.up_gate(p, weights)
            h = impl.act(a, b)
            y = impl.down(h, p, weights)

        def run(f: Callable[[], object]) -> Callable[[], object]:
            def g() -> object:
                with torch.no_grad():
                    return f()
            return g

        fns: dict[str, Callable[[], object]] = {
            "router": lambda: layer.router(xc, router_w),
            "permute": lambda: impl.permute(xc, route, weights),
            "up_gate": lambda: impl.up_gate(p, weights),
            "act": lambda: impl.act(a, b),
            "down": lambda: impl.down(h, p, weights),
            "unpermute": lambda: impl.unpermute(y, p, xc),
        }
        return run(fns[stage])

    def _routing_info(self, layer: MoEFeedForward, x: torch.Tensor) -> dict[str, object]:
        route = layer.last_route
        if route is None:
            with torch.no_grad(), self._autocast():
                layer(x)
            route = layer.last_route
        assert route is not None
        counts = route.tokens_per_expert.float()
        info: dict[str, object] = {
            "tokens_per_expert_max": float(counts.max()),
            "tokens_per_expert_mean": float(counts.mean()),
            "tokens_per_expert_max_over_mean": float(counts.max() / counts.mean()),
            "experts_with_zero_tokens": int((counts == 0).sum()),
        }
        impl = layer.impl
        if isinstance(impl, GroupedExperts):
            dt = torch.bfloat16 if self.policy.autocast else x.dtype
            info["grouped_mm_path"] = grouped_mm_path(x.device, dt)
        if get_impl(impl.name).pads_to_capacity:
            with torch.no_grad():
                p = impl.permute(x, route, layer.experts)
            assert p.kept is not None
            info["dropped_fraction"] = 1.0 - float(p.kept) / route.expert_indices.numel()
        if x.device.type == "cuda":
            info["host_syncs"] = count_host_syncs(lambda: layer(x), self._autocast)
        return info


@contextlib.contextmanager
def _sync_debug_warn() -> Iterator[list[str]]:
    import warnings

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


def count_host_syncs(fn: Callable[[], object], autocast: Callable[[], contextlib.AbstractContextManager[None]]) -> int:
    """GPU->CPU synchronisations during one forward, counted by CUDA's sync debug mode (measured,
    not assumed): the loop implementation syncs per layer, a fast grouped path does not."""
    torch.cuda.synchronize()
    with _sync_debug_warn() as caught, torch.no_grad(), autocast():
        fn()
    return len(caught)


__all__ = ["MODES", "STAGES", "MicroBench", "MicroCase", "case_ops", "derived_metrics", "micro_cases"]
