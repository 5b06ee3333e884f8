"""The expected estimate of what a measured point timed: a training step, a layer, a stage, or one GEMM of
calibrate's sweep, on the point's own GPU or on another profile."""

from __future__ import annotations

from tpsbench.costmodel import GemmShape, OpCost, OpKind, Phase, Traffic, Workload, get_policy, train_workload
from tpsbench.estimate.expected import Expected, expected_layer, expected_step
from tpsbench.estimate.optime import Rates, op_instance_cost
from tpsbench.estimate.table import EfficiencyTable
from tpsbench.estimate.timeline import KernelRun, simulate
from tpsbench.models import get_model
from tpsbench.options import Scope
from tpsbench.points import NO_IMPL, MeasuredPoint
from tpsbench.profiles import GPUProfile, load_profile


def step_workload(p: MeasuredPoint) -> Workload:
    """The cost model's workload of a training-step point (a dense model's implementation is "dense")."""
    spec = get_model(p.key.model)
    impl = p.key.impl if spec.is_moe and p.key.impl != NO_IMPL else "dense"
    return train_workload(spec, impl, p.key.tokens, get_policy(p.policy), recompute=p.key.recompute)


def estimate_point(p: MeasuredPoint, table: EfficiencyTable, profile: GPUProfile | None = None) -> Expected:
    """The expected estimate of what ``p`` measured (on its own GPU, or on ``profile``)."""
    prof = profile or load_profile(p.gpu)
    key = p.key
    if key.scope is Scope.GEMM:
        return _gemm_estimate(key.mode, table, prof)
    if key.scope is Scope.STEP:
        return expected_step(step_workload(p), prof, table, compiled=key.compiled, accumulation=p.accumulation)
    impl = key.impl if key.layer == "moe" else None
    return expected_layer(get_model(key.model), key.layer, impl, key.tokens, key.mode, prof, table,
                          policy=get_policy(p.policy))


def _gemm_estimate(shape: str, table: EfficiencyTable, profile: GPUProfile) -> Expected:
    """One bf16 GEMM launch of shape ``MxNxKxGROUPS`` as `calibrate` times it (L2 flushed before each
    repetition)."""
    m, n, k, groups = (int(x) for x in shape.split("x"))
    op = OpCost(name="gemm", group="gemm", phase=Phase.FWD, kind=OpKind.MATMUL, flops=2.0 * m * n * k * groups,
                traffic=Traffic(activations=2.0 * groups * (m * k + k * n + m * n)), gemm=GemmShape(m, n, k, groups))
    rates = Rates.of(profile, "bf16", table)
    cost = op_instance_cost(op, rates, table, compiled=False)
    head = 2 * profile.l2_mb.value * 1e6 / rates.bandwidth
    host = table.host_launch_eager_s.value + table.host_gemm_s.value
    tl = simulate([KernelRun("gemm", 1, cost.gpu_s, host)], gpu_head_s=head)
    return Expected((), tl, op.flops / (profile.bf16_tflops.value * 1e12), False, table, ())
