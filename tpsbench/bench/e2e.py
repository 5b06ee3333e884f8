"""End-to-end benchmark: a real training step of a zoo model.

One step = ``accumulation`` microbatches of forward + backward (bf16 autocast over fp32 master weights
by default), then one AdamW step (fused on CUDA) and ``zero_grad(set_to_none=True)``. Optional
``torch.compile``. Random token ids (never zeros). Reported: step time samples, tokens/s, MFU under each
FLOP convention against the profile's datasheet peak, peak memory, and the optimizer step's share of the
step (its own timing, measured in the same run).
"""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from tpsbench.bench.allocator import allocator_activity, allocator_snapshot
from tpsbench.bench.gpu_busy import measure_gpu_time
from tpsbench.bench.row_counts import row_count_churn
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
from tpsbench.impls import baseline, bracket_spec, is_bracket
from tpsbench.models import ModelSpec
from tpsbench.nn.transformer import build_model, moe_layers
from tpsbench.profiles import GPUProfile
from tpsbench.results.schema import Derived, PointPrediction
from tpsbench.results.typed import to_dict
from tpsbench.roofline import predict


@dataclass(frozen=True, slots=True)
class E2ECase:
    impl: str  # MoE implementation, a bracket, or "dense"
    tokens: int  # per microbatch
    global_tokens: int
    recompute: str = "none"  # activation checkpointing: none, or full (every block recomputed in the backward)

    @property
    def accumulation(self) -> int:
        return self.global_tokens // self.tokens

    @property
    def label(self) -> str:
        ac = "" if self.recompute == "none" else f" ac {self.recompute}"
        return f"train step/{self.impl} @ {self.tokens} x{self.accumulation}{ac}"


def e2e_cases(spec: ModelSpec, impls: list[str], batches: list[int], global_batch: int | None,
              recompute: str = "none") -> list[E2ECase]:
    names = ["dense"] if spec.moe is None else list(impls)
    return [E2ECase(i, t, global_batch or t, recompute) for t in batches for i in names]


def case_spec(spec: ModelSpec, impl: str) -> ModelSpec:
    return bracket_spec(spec, impl) if is_bracket(impl) else spec


def cost_workload(spec: ModelSpec, case: E2ECase, policy: DTypePolicy, capacity_factor: float | None) -> Workload:
    return train_workload(spec, case.impl, case.tokens, policy, capacity_factor, case.recompute)


@dataclass(slots=True)
class Training:
    """One stack's training step, ready to time: ``microbatches`` runs forward and backward of every microbatch,
    ``optimizer_step`` the optimizer (and whatever precedes it: gradient clipping), ``zero_grad`` clears."""

    microbatches: Callable[[], None]
    optimizer_step: Callable[[], None]
    zero_grad: Callable[[], None]
    params: int
    routing_info: Callable[[], dict[str, object]]
    recipe: dict[str, str] | None = None  # what ran, for stacks other than tpsbench's
    # the MoE layers' per-expert counts of the last forward ([E] tensors, no host sync); None: not known
    expert_counts: Callable[[], list[torch.Tensor]] | None = None


def tpsbench_training(spec: ModelSpec, case: E2ECase, *, device: torch.device, policy: DTypePolicy, routing: str,
                      skew: float, compile_model: bool, seed: int) -> Training:
    """tpsbench's own step: its modules, AdamW (fused on CUDA), bf16 autocast under the amp_bf16 policy."""
    s = case_spec(spec, case.impl)
    impl = case.impl if s.moe is not None else baseline().name  # a dense model has no experts: ignored
    model = build_model(s, impl=impl, device=device)
    model.recompute = case.recompute
    for layer in moe_layers(model):
        layer.router.set_routing(routing, skew, seed)
    if compile_model:
        model.compile()  # in place: training_loss's self(...) runs the compiled forward
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=device.type == "cuda" or None)
    ids, labels = random_tokens(s.vocab_size, case.tokens, min(s.seq_len, case.tokens), device, seed)
    return model_training(model, opt, ids, labels, case, policy, device)


def model_training(model: torch.nn.Module, opt: torch.optim.Optimizer, ids: torch.Tensor, labels: torch.Tensor,
                   case: E2ECase, policy: DTypePolicy, device: torch.device, *,
                   after_backward: Callable[[], None] | None = None, recipe: dict[str, str] | None = None) -> Training:
    """The step of a built tpsbench model: ``case.accumulation`` microbatches under the policy's autocast, then
    ``after_backward`` (a distributed step's gradient reduction), the optimizer, zero_grad."""

    def autocast() -> contextlib.AbstractContextManager[None]:
        return torch.autocast(device.type, dtype=torch.bfloat16) if policy.autocast else contextlib.nullcontext()

    def microbatches() -> None:
        for _ in range(case.accumulation):
            with autocast():
                loss = model.training_loss(ids, labels)
            (loss / case.accumulation).backward()
        if after_backward is not None:
            after_backward()

    def expert_counts() -> list[torch.Tensor]:
        return [m.last_route.tokens_per_expert for m in moe_layers(model) if m.last_route is not None]

    def routing_info() -> dict[str, object]:
        return tokens_per_expert_info(expert_counts())

    return Training(microbatches, opt.step, lambda: opt.zero_grad(set_to_none=True),
                    sum(p.numel() for p in model.parameters()), routing_info, recipe, expert_counts)


def random_tokens(vocab: int, tokens: int, seq: int, device: torch.device, seed: int) -> tuple[torch.Tensor, ...]:
    """Random token ids and labels (never zeros: id 0 is often padding)."""
    g = torch.Generator(device=device).manual_seed(seed + 1)
    ids = torch.randint(1, vocab, (tokens // seq, seq), generator=g, device=device)
    labels = torch.randint(1, vocab, (tokens // seq, seq), generator=g, device=device)
    return ids, labels


def tokens_per_expert_info(per_layer: list[torch.Tensor]) -> dict[str, object]:
    """Load balance of the last step's routing, over the MoE layers ([E] assignments per expert each)."""
    if not per_layer:
        return {}
    counts = torch.stack([c.float() for c in per_layer])  # [layers, E]
    ratio = counts.max(dim=1).values / counts.mean(dim=1)
    return {"tokens_per_expert_max": float(counts.max()), "tokens_per_expert_mean": float(counts.mean()),
            "tokens_per_expert_max_over_mean": float(ratio.max()),
            "tokens_per_expert_max_over_mean_per_layer": [float(v) for v in ratio]}


def run_e2e(
    spec: ModelSpec, case: E2ECase, *, device: torch.device, policy: DTypePolicy, routing: str, skew: float,
    timing: TimingConfig, profile: GPUProfile | None, compile_model: bool = False, seed: int = 0,
    window: WindowHook | None = None, measure_idle: bool = True, stack: str = "tpsbench", trace: Path | None = None,
    train: Training | None = None,
) -> dict[str, object]:
    """Time the training step of ``case`` (``train``: one built elsewhere, e.g. a distributed one)."""
    torch.manual_seed(seed)
    if train is None and stack == "olmo-core":
        from tpsbench.stacks.olmo_core import olmo_core_training

        train = olmo_core_training(spec, case.impl, tokens=case.tokens, accumulation=case.accumulation, device=device,
                                   autocast=policy.autocast, compile_model=compile_model, seed=seed)
    elif train is None:
        train = tpsbench_training(spec, case, device=device, policy=policy, routing=routing, skew=skew,
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
    return {
        **train.routing_info(),
        "samples_s": step_t.samples_s, "warmup": step_t.warmup, "l2_flushed": False, "timer": step_t.timer,
        "window": step_t.window, "window_info": step_t.window_info,
        "optimizer_samples_s": opt_t.samples_s, "peak_memory_bytes": peak,
        "allocator": None if allocator is None else to_dict(allocator), "accumulation_steps": case.accumulation,
        "row_counts": None if (churn := row_count_churn(counts_per_step)) is None else to_dict(churn),
        "compiled": compile_model, "params": train.params, "gpu_time": gpu_time, "recipe": train.recipe,
        **({} if traced is None else {"trace": traced}),
    }


def e2e_metrics(spec: ModelSpec, case: E2ECase, median_s: float, optimizer_median_s: float,
                policy: DTypePolicy, profile: GPUProfile | None, capacity_factor: float | None,
                ceilings: str = "spec", calibration: dict[str, object] | None = None
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
        peak = profile.matmul_peak(policy.matmul_math).value * 1e12
        mfu = {c: f * tokens_per_s / peak for c, f in per_token.items()}
    derived = Derived(tokens_per_s=tokens_per_s, matmul_flops=matmul_flops, bytes=nbytes,
                      achieved_gbs=nbytes / median_s / 1e9, achieved_tflops=matmul_flops / median_s / 1e12,
                      optimizer_share=optimizer_median_s / median_s, flops_per_token=per_token, mfu=mfu)
    if profile is None:
        return derived, None
    p = predict(w, profile, global_batch_tokens=case.global_tokens, ceilings=ceilings, calibration=calibration)
    return derived, PointPrediction(profile=profile.name, ceilings=p.ceilings.source, predicted_s=p.global_step_s,
                                    predicted_tokens_per_s=p.global_tokens_per_s,
                                    memory_bound_share=p.memory_bound_share,
                                    achieved_fraction=p.global_step_s / median_s)
