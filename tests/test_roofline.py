"""Roofline arithmetic and bound classification."""

import pytest

from tpsbench.costmodel import OpCost, OpKind, Phase, Traffic, Workload
from tpsbench.models import get_model
from tpsbench.profiles import load_profile
from tpsbench.roofline import Bound, CeilingError, ceilings_for, op_time, predict

H100 = load_profile("h100_sxm")


def test_op_time_is_max_of_compute_and_memory():
    ceil = ceilings_for(H100, "bf16")
    op = OpCost(name="x", group="g", phase=Phase.FWD, kind=OpKind.MATMUL, flops=1e12, traffic=Traffic(weights=1e9))
    t = op_time(op, ceil)
    assert t.compute_s == pytest.approx(1e12 / 989.4e12)
    assert t.memory_s == pytest.approx(1e9 / 3350e9)
    assert t.seconds == t.compute_s and t.bound is Bound.COMPUTE
    ew = OpCost(name="y", group="g", phase=Phase.FWD, kind=OpKind.ELEMENTWISE, flops=1e9,
                traffic=Traffic(activations=1e9))
    te = op_time(ew, ceil)
    assert te.compute_s == pytest.approx(1e9 / 67e12)  # CUDA-core ceiling, not tensor cores
    assert te.bound is Bound.MEMORY


def test_moe_1b_expert_gemms_memory_bound_and_dense_gemms_compute_bound():
    p = predict(Workload(model=get_model("moe_1b"), tokens=32768, seq_len=2048), H100)
    bound = {(r.op.name, r.op.phase): r.bound for r in p.rows}
    assert bound[("moe.expert_up_gate", Phase.FWD)] is Bound.MEMORY
    assert bound[("moe.expert_down", Phase.BWD_WGRAD)] is Bound.MEMORY
    assert bound[("attn.qkv", Phase.FWD)] is Bound.COMPUTE
    assert bound[("head.lm_head", Phase.FWD)] is Bound.COMPUTE
    assert bound[("optim.adamw_experts", Phase.OPTIM)] is Bound.MEMORY


def test_global_batch_accumulation():
    w = Workload(model=get_model("dense_135m"), tokens=32768, seq_len=2048)
    p = predict(w, H100, global_batch_tokens=1_048_576)
    assert p.accumulation_steps == 32
    assert p.global_step_s == pytest.approx(32 * p.fwd_bwd_s + p.grad_accumulation_s + p.optimizer_s)
    assert p.global_tokens_per_s == pytest.approx(1_048_576 / p.global_step_s)
    with pytest.raises(ValueError, match="multiple"):
        predict(w, H100, global_batch_tokens=40_000)


def test_measured_ceilings_use_profile_measurements_or_refuse():
    w = Workload(model=get_model("dense_135m"), tokens=32768, seq_len=2048)
    spec, meas = predict(w, H100), predict(w, H100, ceilings="measured")
    assert meas.ceilings.matmul_flops == 794.5e12 and meas.ceilings.bandwidth == 2900e9
    assert meas.microbatch_step_s > spec.microbatch_step_s
    with pytest.raises(CeilingError, match="rtx5090"):
        predict(w, load_profile("rtx5090"), ceilings="measured")


def test_h200_predicts_faster_memory_bound_work_than_h100():
    w = Workload(model=get_model("moe_1b"), tokens=32768, seq_len=2048)
    h100, h200 = predict(w, H100), predict(w, load_profile("h200"))
    speedup = h100.microbatch_step_s / h200.microbatch_step_s
    assert 1.0 < speedup < 4800 / 3350  # between no gain and the pure bandwidth ratio


def test_mfu_definition():
    w = Workload(model=get_model("dense_135m"), tokens=32768, seq_len=2048)
    p = predict(w, H100)
    from tpsbench.costmodel import flops_per_token
    assert p.mfu("6N", global_batch=False) == pytest.approx(
        flops_per_token(w, "6N") * p.tokens_per_s / 989.4e12)
