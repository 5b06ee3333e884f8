"""End-to-end benchmark: a real training step of a zoo model.

One step = ``accumulation`` microbatches of forward + backward (bf16 autocast over fp32 master weights
by default), then one AdamW step (fused on CUDA) and ``zero_grad(set_to_none=True)``. Optional
``torch.compile``. Random token ids (never zeros). Reported: step time samples, tokens/s, MFU under each
FLOP convention against the profile's datasheet peak, peak memory, and the optimizer step's share of the
step (its own timing, measured in the same run).
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from tpsbench.bench.allocator import allocator_activity, allocator_snapshot
from tpsbench.bench.gpu_busy import measure_gpu_time
from tpsbench.bench.measurement import Measurement, counters_of, rates
from tpsbench.bench.row_counts import row_count_churn
from tpsbench.bench.stats import summarize
from tpsbench.bench.timing import TimingConfig, WindowHook, time_fn
from tpsbench.bench.trace import export_trace
from tpsbench.costmodel import (
    FWD_BWD,
    DTypePolicy,
    FlopConvention,
    Workload,
    flops_per_token,
    global_step_bytes,
    step_ops,
    total_flops,
    train_workload,
)
from tpsbench.models import ModelSpec
from tpsbench.options import Recompute, RoutingMode
from tpsbench.profiles import GPUProfile
from tpsbench.results.schema import CalibrationRef, Derived, PointPrediction, Raw
from tpsbench.roofline import predict
from tpsbench.stacks import Stack, StepSpec
from tpsbench.stacks.training import Training


@dataclass(frozen=True, slots=True)
class E2ECase:
    impl: str  # MoE implementation, a bracket, or "dense"
    tokens: int  # per microbatch
    global_tokens: int
    recompute: Recompute = Recompute.NONE  # activation checkpointing: full recomputes every block in the backward

    @property
    def accumulation(self) -> int:
        return self.global_tokens // self.tokens

    @property
    def step(self) -> StepSpec:
        return StepSpec(self.impl, self.tokens, self.accumulation, self.recompute)


def e2e_cases(spec: ModelSpec, impls: list[str], batches: list[int], global_batch: int | None,
              recompute: Recompute = Recompute.NONE) -> list[E2ECase]:
    names = ["dense"] if spec.moe is None else list(impls)
    return [E2ECase(i, t, global_batch or t, recompute) for t in batches for i in names]


def cost_workload(spec: ModelSpec, case: E2ECase, policy: DTypePolicy, capacity_factor: float | None) -> Workload:
    return train_workload(spec, case.impl, case.tokens, policy, capacity_factor, case.recompute)


def run_e2e(
    spec: ModelSpec, case: E2ECase, *, device: torch.device, policy: DTypePolicy, routing: RoutingMode, skew: float,
    timing: TimingConfig, stack: Stack, compile_model: bool = False, seed: int = 0, window: WindowHook | None = None,
    measure_idle: bool = True, trace: Path | None = None, train: Training | None = None,
) -> Measurement:
    """Time the training step of ``case`` as ``stack`` builds it (``train``: one built elsewhere, e.g. a
    distributed one)."""
    torch.manual_seed(seed)
    if train is None:
        train = stack.training(spec, case.step, device=device, policy=policy, routing=routing, skew=skew,
                               compile_model=compile_model, seed=seed)
    cuda = device.type == "cuda"
    counts_per_step: list[list[torch.Tensor]] = []  # references only: read after the timing

    def step() -> None:
        train.microbatches()
        if train.expert_counts is not None:
            counts_per_step.append(train.expert_counts())
        train.optimizer_step()
        train.zero_grad()

    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    # The working set (weights, grads, optimizer state, activations) is far larger than L2: no flush.
    step_cfg = TimingConfig(warmup=timing.warmup, min_reps=timing.min_reps, min_time_s=timing.min_time_s,
                            max_reps=timing.max_reps, flush_l2=False)
    before = allocator_snapshot(device)
    step_t = time_fn(step, device=device, config=step_cfg, window=window)
    peak = torch.cuda.max_memory_allocated(device) if cuda else None
    allocator = allocator_activity(before, allocator_snapshot(device), step_t.warmup + len(step_t.samples_s))
    # two profiled steps: a loop-implementation step has ~10^5 kernels, and parsing the trace is slow
    gpu_time = (measure_gpu_time(step, device=device, median_s=statistics.median(step_t.samples_s), calls=2)
                if measure_idle else None)
    traced = export_trace(step, trace, device=device) if trace is not None else None
    train.microbatches()  # leave gradients in place so the optimizer step is timed on real gradients
    opt_t = time_fn(train.optimizer_step, device=device, config=step_cfg)
    train.zero_grad()
    raw = Raw(samples_s=step_t.samples_s, warmup=step_t.warmup, l2_flushed=False, timer=step_t.timer,
              gpu_time=gpu_time, optimizer_samples_s=opt_t.samples_s, optimizer_stats=summarize(opt_t.samples_s),
              peak_memory_bytes=peak, allocator=allocator, row_counts=row_count_churn(counts_per_step),
              accumulation_steps=case.accumulation, compiled=compile_model, params=train.params,
              recipe=train.recipe, trace=traced, **asdict(train.routing()))
    return Measurement(raw, counters_of(step_t))


def e2e_metrics(spec: ModelSpec, case: E2ECase, median_s: float, optimizer_median_s: float,
                policy: DTypePolicy, profile: GPUProfile | None, capacity_factor: float | None,
                ceilings: str = "spec", calibration: CalibrationRef | None = None
                ) -> tuple[Derived, PointPrediction | None]:
    """Rates of a training step per optimizer step (matmul FLOPs as FlopCounterMode counts them, bytes the minimum
    DRAM traffic of fused elementwise chains), MFU under each convention, and the roofline floor."""
    w = cost_workload(spec, case, policy, capacity_factor)
    tokens_per_s = case.global_tokens / median_s
    matmul_flops = case.accumulation * total_flops(step_ops(w), phases=FWD_BWD)
    nbytes = global_step_bytes(w, case.accumulation)
    per_token = {c.value: flops_per_token(w, c) for c in FlopConvention}
    mfu = None
    if profile is not None:
        peak = profile.matmul_ceiling(policy.matmul_math).value * 1e12  # as predict: the credible peak
        mfu = {c: f * tokens_per_s / peak for c, f in per_token.items()}
    derived = replace(rates(case.global_tokens, median_s, matmul_flops, nbytes),
                      optimizer_share=optimizer_median_s / median_s, flops_per_token=per_token, mfu=mfu)
    if profile is None:
        return derived, None
    p = predict(w, profile, global_batch_tokens=case.global_tokens, ceilings=ceilings, calibration=calibration)
    return derived, PointPrediction(profile=profile.name, ceilings=p.ceilings.source, predicted_s=p.global_step_s,
                                    predicted_tokens_per_s=p.global_tokens_per_s,
                                    memory_bound_share=p.memory_bound_share,
                                    achieved_fraction=p.global_step_s / median_s)
