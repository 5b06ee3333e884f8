"""Micro benchmarks: one layer of a zoo model at its real widths, timed forward, backward and both.

Layers: ``attention`` (projections, qk-norm, RoPE, causal SDPA, output projection), ``mlp`` (the dense
SwiGLU), ``moe`` (router + experts + shared expert, per implementation) and its dense brackets
``dense_active`` / ``dense_total``; the stack builds them (tpsbench's own modules, or OLMo-core's). MoE stages
are timed one by one (tpsbench.bench.moe_facts).

Layers run as in training: fp32 master weights under bf16 autocast (policy ``amp_bf16``) on a GPU, plain
fp32 on the CPU; inputs are random (never zeros) and require grad so the data-gradient is computed.
Each point carries the cost model's FLOPs and bytes for exactly the ops timed, the roofline time on the
GPU's profile, and the achieved fraction of that floor.
"""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from tpsbench.bench.gpu_busy import measure_gpu_time
from tpsbench.bench.measurement import Measurement, counters_of, rates
from tpsbench.bench.moe_facts import routing_facts, stage_fn
from tpsbench.bench.timing import L2Flusher, Timed, TimingConfig, WindowHook, counter_window, time_fn, time_interleaved
from tpsbench.bench.trace import export_trace
from tpsbench.costmodel import DTypePolicy, OpCost, total_flops
from tpsbench.costmodel.cases import layer_case_ops
from tpsbench.models import ModelSpec
from tpsbench.nn.moe import MoEFeedForward
from tpsbench.options import LayerMode, RoutingMode, Stage
from tpsbench.profiles import GPUProfile
from tpsbench.results.schema import CalibrationRef, Derived, OpPrediction, PointPrediction, Raw, TraceFile
from tpsbench.roofline import Bound, ceilings_for, op_time
from tpsbench.stacks import Stack
from tpsbench.stacks.training import RoutingFacts


@dataclass(frozen=True, slots=True)
class MicroCase:
    layer: str  # attention | mlp | moe | dense_active | dense_total
    impl: str | None  # MoE implementation for layer "moe"
    tokens: int
    mode: LayerMode | Stage

    @property
    def mode_name(self) -> str:
        """The point's mode in a results file: fwd, bwd, fwd_bwd or stage:<name>."""
        return self.mode.mode if isinstance(self.mode, Stage) else str(self.mode)


def micro_cases(spec: ModelSpec, impls: list[str], batches: list[int], stack: Stack, *, stages: bool = True,
                layers: list[str] | None = None) -> list[MicroCase]:
    cases = []
    for tokens in batches:
        for layer, impl in stack.micro_layers(spec, impls):
            if layers is not None and layer not in layers:
                continue
            cases += [MicroCase(layer, impl, tokens, mode) for mode in LayerMode]
            if stages and layer == "moe" and stack.staged(impl):
                cases += [MicroCase(layer, impl, tokens, s) for s in Stage]
    return cases


def case_ops(spec: ModelSpec, case: MicroCase, policy: DTypePolicy, attention_backend: str,
             capacity_factor: float | None) -> list[OpCost]:
    """The cost model's ops for exactly what a case times."""
    return layer_case_ops(spec, case.layer, case.impl, case.tokens, case.mode_name, policy, attention_backend,
                          capacity_factor)


def derived_metrics(ops: list[OpCost], tokens: int, median_s: float, profile: GPUProfile | None,
                    policy: DTypePolicy, ceilings: str = "spec", calibration: CalibrationRef | None = None
                    ) -> tuple[Derived, PointPrediction | None]:
    """Rates of a layer point from the cost model's ops of exactly what it timed, and their roofline floor."""
    derived = replace(rates(tokens, median_s, total_flops(ops), sum(op.bytes for op in ops)),
                      model_flops=total_flops(ops, kinds=None))
    if profile is None:
        return derived, None
    ceil = ceilings_for(profile, policy.matmul_math, ceilings, calibration)
    times = [op_time(op, ceil) for op in ops]
    predicted = sum(t.seconds for t in times)
    memory_s = sum(t.seconds for t in times if t.bound is Bound.MEMORY)
    prediction = PointPrediction(
        profile=profile.name, ceilings=ceil.source, predicted_s=predicted,
        memory_bound_share=memory_s / predicted if predicted else None, achieved_fraction=predicted / median_s,
        ops=[OpPrediction(op=t.op.name, phase=t.op.phase.value, bound=t.bound.value, predicted_s=t.seconds)
             for t in times])
    return derived, prediction


class MicroBench:
    """Builds each layer once (real widths, on the device, by the run's stack) and times the cases asked for."""

    def __init__(self, spec: ModelSpec, *, device: torch.device, policy: DTypePolicy, routing: RoutingMode,
                 skew: float, timing: TimingConfig, stack: Stack, seed: int = 0, window: WindowHook | None = None,
                 gpu_time: bool = True) -> None:
        self.spec, self.device, self.policy, self.stack = spec, device, policy, stack
        self.gpu_time = gpu_time  # profile a few extra calls for GPU busy/idle time
        self.window = window  # counter sampler around the timed repetitions
        self.routing, self.skew, self.timing, self.seed = routing, skew, timing, seed
        self._layers: dict[str, torch.nn.Module] = {}
        self._siblings: dict[MicroCase, tuple[MicroCase, ...]] = {}  # a CPU point's modes, timed together
        self._interleaved: dict[MicroCase, Timed] = {}

    def interleave(self, cases: Sequence[object]) -> None:
        """On the CPU, time each layer point's modes (fwd, bwd, fwd_bwd) together, one repetition of each per round
        (bench/timing.py's time_interleaved): on a shared CPU a busy spell otherwise lands on one mode and not the
        others. A GPU times each mode on its own (device events are not slowed by other processes' CPU work)."""
        if self.device.type != "cpu":
            return
        groups: dict[tuple[str, str | None, int], list[MicroCase]] = {}
        for case in cases:
            if isinstance(case, MicroCase) and isinstance(case.mode, LayerMode):
                groups.setdefault((case.layer, case.impl, case.tokens), []).append(case)
        for members in groups.values():
            if len(members) > 1:
                self._siblings.update(dict.fromkeys(members, tuple(members)))

    # --- setup ---------------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager[None]:
        if self.policy.autocast:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _compute_dtype(self, x: torch.Tensor) -> torch.dtype:
        return torch.bfloat16 if self.policy.autocast else x.dtype

    def _layer(self, case: MicroCase) -> torch.nn.Module:
        key = self.stack.layer_key(case.layer, case.impl)
        if key not in self._layers:
            self._layers[key] = self.stack.build_layer(self.spec, case.layer, case.impl, device=self.device,
                                                       seed=self.seed, routing=self.routing, skew=self.skew)
        return self.stack.select_impl(self._layers[key], self.spec, case.impl)

    def _input(self, case: MicroCase) -> torch.Tensor:
        g = torch.Generator(device=self.device).manual_seed(self.seed + case.tokens)
        shape: tuple[int, ...] = (case.tokens, self.spec.d_model)
        if case.layer == "attention":
            seq = min(self.spec.seq_len, case.tokens)
            shape = (case.tokens // seq, seq, self.spec.d_model)
        return torch.randn(shape, generator=g, device=self.device)

    # --- running -------------------------------------------------------------------------------
    def run(self, case: MicroCase, trace: Path | None = None) -> Measurement:
        """Time ``case``; ``trace``: also write the profiler's Chrome trace of one repetition there."""
        layer = self._layer(case)
        x = self._input(case)
        setup: Callable[[], object] | None = None
        if isinstance(case.mode, Stage):
            fn = stage_fn(layer, x, case.mode, self._compute_dtype(x))
        else:
            fn, setup = self._layer_fns(layer, x, case.mode)
        if case in self._siblings:
            timed = self._timed_with_siblings(case)
        else:
            timed = time_fn(fn, device=self.device, config=self.timing, setup=setup, window=self.window)
        gpu_time = None
        if self.gpu_time:
            gpu_time = measure_gpu_time(fn, device=self.device, median_s=statistics.median(timed.samples_s),
                                        setup=self._profiled_setup(setup, timed.l2_flushed))
        traced: TraceFile | None = None
        if trace is not None:
            traced = export_trace(fn, trace, device=self.device, setup=setup)
        facts = RoutingFacts()
        if isinstance(layer, MoEFeedForward):
            facts = routing_facts(layer, x, self._autocast, self._compute_dtype(x))
        elif hasattr(layer, "routing_facts"):  # another stack's MoE
            facts = layer.routing_facts()
        raw = Raw(samples_s=timed.samples_s, warmup=timed.warmup, l2_flushed=timed.l2_flushed, timer=timed.timer,
                  gpu_time=gpu_time, trace=traced, **asdict(facts))
        return Measurement(raw, counters_of(timed))

    def _timed_with_siblings(self, case: MicroCase) -> Timed:
        if case not in self._interleaved:
            members = self._siblings[case]
            calls = []
            for member in members:
                assert isinstance(member.mode, LayerMode)
                calls.append(self._layer_fns(self._layer(member), self._input(member), member.mode))
            for member, (fn, setup), timed in zip(members, calls, time_interleaved(calls, config=self.timing),
                                                  strict=True):
                if self.window is not None:  # the counter window as time_fn runs it (null counters on the CPU)
                    summary, info = counter_window(fn, setup, self.window, median_s=statistics.median(timed.samples_s),
                                                   config=self.timing, device=self.device)
                    timed = replace(timed, window=summary, window_info=info)
                self._interleaved[member] = timed
        return self._interleaved.pop(case)

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
                   mode: LayerMode) -> tuple[Callable[[], object], Callable[[], object]]:
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

        if mode is LayerMode.FWD:
            return fwd, clear
        if mode is LayerMode.BWD:
            return bwd, setup_bwd
        return fwd_bwd, clear


__all__ = ["MicroBench", "MicroCase", "case_ops", "derived_metrics", "micro_cases"]
