"""Cost model: bytes on hand-computed cases, FLOP conventions, and FLOPs equal to what really runs."""

import dataclasses

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from tpsbench.costmodel import (
    FWD_BWD,
    POLICIES,
    FlopConvention,
    OpKind,
    Phase,
    Workload,
    adamw_op,
    attention_core_ops,
    autocast_ops,
    flops_per_token,
    linear_ops,
    moe_ops,
    routing,
    step_ops,
    total_flops,
)
from tpsbench.models import get_model
from tpsbench.nn.transformer import build_model

AMP = POLICIES["amp_bf16"]


def _by_phase(ops):
    return {op.phase: op for op in ops}


def test_single_linear_bytes_and_flops():
    # [1024, 768] @ [768, 2048] in bf16.
    ops = _by_phase(linear_ops("x", "g", rows=1024, k=768, n=2048, pol=AMP))
    fwd, dgrad, wgrad = ops[Phase.FWD], ops[Phase.BWD_DGRAD], ops[Phase.BWD_WGRAD]
    assert fwd.flops == dgrad.flops == wgrad.flops == 2 * 1024 * 768 * 2048 == 3_221_225_472
    # fwd reads X (1024*768*2 B) and W (768*2048*2 B), writes Y (1024*2048*2 B)
    assert fwd.traffic.weights == 3_145_728
    assert fwd.traffic.activations == 786_432 * 2 + 2_097_152 * 2 == 5_767_168
    assert fwd.bytes == 8_912_896
    # dgrad reads dY and W, writes dX
    assert (dgrad.traffic.weights, dgrad.traffic.gradients) == (3_145_728, 5_767_168)
    # wgrad reads X and dY, writes dW
    assert (wgrad.traffic.activations, wgrad.traffic.gradients) == (1_572_864, 4_194_304 + 3_145_728)
    assert fwd.kind is OpKind.MATMUL


def test_one_expert_gemm_is_memory_bound_on_h100():
    # One moe_1b expert at 32768 tokens, balanced top-1 over 256 experts: 128 rows x d 768 -> h 128.
    fwd = _by_phase(linear_ops("e", "moe", rows=128, k=768, n=128, pol=AMP))[Phase.FWD]
    assert fwd.flops == 25_165_824
    assert fwd.bytes == (128 * 768 + 768 * 128 + 128 * 128) * 2 == 425_984
    assert fwd.intensity == pytest.approx(59.08, abs=0.01)
    assert fwd.intensity < 989.4e12 / 3350e9  # below the H100 ridge (295 FLOP/B)


def test_moe_expert_down_reads_every_experts_weights():
    w = Workload(model=get_model("moe_1b"), tokens=32768, seq_len=2048)
    ops = {(op.name, op.phase): op for op in moe_ops(w)}
    down = ops[("moe.expert_down", Phase.FWD)]
    assert down.flops == 2 * 32768 * 128 * 768 == 6_442_450_944
    assert down.traffic.weights == 256 * 128 * 768 * 2 == 50_331_648
    assert down.traffic.activations == (32768 * 128 + 32768 * 768) * 2 == 58_720_256


def _moe_layer(model: str, impl: str) -> dict:
    w = Workload(model=get_model(model), tokens=32768, seq_len=2048, impl=impl)
    ops: dict = {}
    for op in moe_ops(w):
        ops.setdefault((op.name, op.phase), []).append(op)
    return ops


def _nbytes(*shape: int, dtype: torch.dtype = torch.bfloat16) -> int:
    """Bytes of a tensor of that shape and dtype (a meta tensor: nothing allocated)."""
    return torch.empty(shape, dtype=dtype, device="meta").nbytes


def test_triton_experts_counted_as_its_kernels_move_data():
    # olmoe_1b_7b at 32,768 tokens, top-8, under bf16 autocast: the tensors the kernels read and write, as the
    # launchers allocate them (kernels/routing_plan.py, kernels/expert_launchers.py), sized with meta tensors
    t, d, h, e, k = 32768, 2048, 1024, 64, 8
    rows = t * k
    x_rows = _nbytes(rows, d)  # x read through the plan, row by row
    a = b = hg = _nbytes(rows, h)  # up/gate outputs and the gated SwiGLU output, the compute dtype
    w1 = _nbytes(e, d, h)  # one matrix of every expert in the compute dtype
    dw1 = _nbytes(e, d, h, dtype=torch.float32)  # gradients in the fp32 master weights' dtype
    tok, gate = _nbytes(rows, dtype=torch.int32), _nbytes(rows, dtype=torch.float32)
    row_buffer, out = _nbytes(rows, d), _nbytes(t, d)
    ops = _moe_layer("olmoe_1b_7b", "triton")
    [up] = ops[("moe.expert_up_gate", Phase.FWD)]
    assert up.traffic.weights == 2 * w1  # W1 and W3
    assert up.traffic.activations == x_rows + a + b + tok + gate  # x's rows once for both matrices
    [act] = ops[("moe.expert_act", Phase.FWD)]
    assert (act.bytes, act.launches) == (hg, 0)  # only hg's write, by the up/gate epilogue
    [down] = ops[("moe.expert_down", Phase.FWD)]
    assert down.traffic.activations == hg + row_buffer + tok + gate  # hg read, the top-8 row buffer written
    [gather_sum] = ops[("moe.unpermute", Phase.FWD)]
    assert gather_sum.bytes == _nbytes(rows, dtype=torch.int32) + row_buffer + out  # row_of, the rows, out
    # backward: dH is never written (the SwiGLU backward is the down data-gradient's epilogue)
    [act_bwd] = ops[("moe.expert_act", Phase.BWD_DGRAD)]
    assert (act_bwd.traffic.activations, act_bwd.traffic.gradients) == (a + b, a + b)  # a, b read; da, db written
    [wg] = ops[("moe.expert_up_gate", Phase.BWD_WGRAD)]
    assert wg.traffic.gradients == a + b + 2 * dw1  # da, db read; dW1, dW3 written in fp32, no cast
    grouped = _moe_layer("olmoe_1b_7b", "grouped")
    flat = [op for group in ops.values() for op in group]
    flat_grouped = [op for group in grouped.values() for op in group]
    assert total_flops(flat) == total_flops(flat_grouped)  # the same GEMMs
    assert sum(op.bytes for op in flat) < 0.7 * sum(op.bytes for op in flat_grouped)


def test_triton_top1_writes_token_rows_directly():
    ops = _moe_layer("moe_1b", "triton")  # top-1: no row buffer, no gather-sum
    [down] = ops[("moe.expert_down", Phase.FWD)]
    assert down.traffic.activations == 32768 * 128 * 2 + 32768 * 768 * 2 + 32768 * 8
    [unpermute] = ops[("moe.unpermute", Phase.FWD)]
    assert (unpermute.bytes, unpermute.launches) == (0, 0)
    assert ("moe.permute", Phase.BWD_DGRAD) not in ops


def test_triton_expert_gradients_skip_the_grad_cast():
    spec = get_model("olmoe_1b_7b")
    casts = {}
    for impl in ("triton", "grouped"):
        w = Workload(model=spec, tokens=32768, seq_len=2048, impl=impl)
        casts[impl] = {op.name: op.bytes for op in autocast_ops(w)}
    experts = spec.n_layers * 3 * 2048 * 1024 * 64
    assert casts["triton"]["moe.weight_cast"] == casts["grouped"]["moe.weight_cast"]
    assert casts["grouped"]["moe.grad_cast"] - casts["triton"]["moe.grad_cast"] == experts * (2 + 4)


def test_adamw_step_bytes():
    op = adamw_op("optim.adamw", "optimizer", 1000, AMP)
    # fp32: read+write param (8 B), read grad (4 B), read+write two moments (16 B) = 28 B/param
    assert (op.traffic.weights, op.traffic.gradients, op.traffic.optimizer) == (8000, 4000, 16000)
    assert op.bytes == 28_000
    assert op.flops == 14_000
    assert op.phase is Phase.OPTIM


def test_bf16_policy_adamw_bytes():
    op = adamw_op("o", "optimizer", 10, POLICIES["bf16"])
    assert op.bytes == 10 * (2 * 2 + 2 + 4 * 4)


@pytest.mark.parametrize(("model", "tokens", "cf", "capacity", "rows"), [
    ("moe_1b", 32768, 1.2, 160, 256 * 160),  # 128 per expert * 1.2 = 153.6 -> 160
    ("moe_tiny", 64, 1.2, 24, 8 * 24),  # 64*2/8 = 16 * 1.2 = 19.2 -> 24
    ("moe_1b_a390m", 32768, 1.0, 4096, 32 * 4096),  # exact multiple stays
])
def test_capacity_rounding(model, tokens, cf, capacity, rows):
    r = routing(Workload(model=get_model(model), tokens=tokens, seq_len=get_model(model).seq_len,
                         impl="capacity", capacity_factor=cf))
    assert (r.capacity, r.expert_rows, r.dropped_fraction) == (capacity, rows, 0.0)


def test_capacity_below_one_drops_tokens():
    r = routing(Workload(model=get_model("moe_1b"), tokens=32768, seq_len=2048, impl="capacity",
                         capacity_factor=0.5))
    assert r.capacity == 64 and r.dropped_fraction == pytest.approx(0.5)


def test_dropless_balanced_routing():
    r = routing(Workload(model=get_model("olmoe_1b_7b"), tokens=32768, seq_len=2048))
    assert r.tokens_per_expert == 32768 * 8 / 64 == 4096
    assert r.expert_rows == 32768 * 8 and r.experts_touched == 64


def test_flop_conventions_for_moe_1b():
    w = Workload(model=get_model("moe_1b"), tokens=32768, seq_len=2048)
    six_n = 6 * (115_053_312 - 50304 * 768)  # active params without the input embedding
    assert flops_per_token(w, "6N") == six_n == 458_519_040
    # OLMo-core 3: without the two block norms (6 x 2 x 768 per layer), plus causal attention pairs per layer,
    # 12 x 12 heads x 64 x (2048 x 2049 / 2) / 2048 = 9,441,792
    assert flops_per_token(w, FlopConvention.OLMO) == six_n - 12 * 6 * 2 * 768 + 12 * 9_441_792 == 571_709_952
    exact = flops_per_token(w, "exact")
    assert six_n < exact < flops_per_token(w, "olmo")  # exact halves the square: S/2 fewer pairs per query row


def test_causal_flash_attention_is_half_of_math():
    spec = get_model("dense_135m")
    flash = attention_core_ops(Workload(model=spec, tokens=4096, seq_len=2048))
    math = attention_core_ops(Workload(model=spec, tokens=4096, seq_len=2048, attention_backend="math"))
    f = {op.name + op.phase: op.flops for op in flash}
    m = {op.name + op.phase: op.flops for op in math}
    assert f["attn.corefwd"] * 2 == m["attn.corefwd"] == 4 * 2 * 2048 * 2048 * 768
    recompute = [op for op in flash if op.name == "attn.core_recompute"]
    assert recompute and not recompute[0].model_flops


def test_optimizer_covers_all_parameters():
    for name in ("dense_135m", "moe_1b"):
        w = Workload(model=get_model(name), tokens=2048, seq_len=2048)
        optim = [op for op in step_ops(w) if op.phase is Phase.OPTIM]
        assert sum(op.flops for op in optim) == 14 * get_model(name).total_params


def test_workload_rejects_bad_batches():
    spec = get_model("moe_1b")
    with pytest.raises(ValueError, match="multiple"):
        Workload(model=spec, tokens=3000, seq_len=2048)
    with pytest.raises(ValueError, match="positive"):
        Workload(model=spec, tokens=0, seq_len=2048)


# --- the cost model against torch.utils.flop_counter on the real modules ---------------------------
# Real widths of each model; fewer layers keep the CPU run short (every layer is identical, so the
# per-layer count is what is checked). The math SDPA backend is forced because FlopCounterMode has no
# formula for the CPU flash kernel; the cost model is told the same backend. FlopCounterMode has no formula
# for torch._grouped_mm either: the one below counts 2*M*K*N over the groups, for each of its layouts.
def _grouped_mm_flops(a_shape, b_shape, *args, **kwargs) -> int:
    if len(a_shape) == 2 and len(b_shape) == 3:  # [M, K] rows in groups x [E, K, N]: forward and data gradient
        return 2 * a_shape[0] * a_shape[1] * b_shape[2]
    if len(a_shape) == 2 and len(b_shape) == 2:  # [K, M] x [M, N] with M in groups -> [E, K, N]: weight gradient
        return 2 * a_shape[0] * a_shape[1] * b_shape[1]
    raise NotImplementedError(f"_grouped_mm of {a_shape} x {b_shape}")


@pytest.fixture(scope="module")
def count_grouped_mm():
    from torch.utils import flop_counter

    before = dict(flop_counter.flop_registry)
    flop_counter.register_flop_formula(torch.ops.aten._grouped_mm)(_grouped_mm_flops)
    yield
    flop_counter.flop_registry.clear()
    flop_counter.flop_registry.update(before)


def qwen3_narrow():
    """qwen3_30b_a3b's attention as it is (32 query heads of 128 over d 2048, 4 key/value heads, head-wise qk-norm:
    q and kv projections wider and narrower than d) with fewer, narrower experts and a small vocabulary, so that a
    CPU runs it in seconds."""
    spec = get_model("qwen3_30b_a3b")
    assert spec.moe is not None
    moe = dataclasses.replace(spec.moe, num_experts=16, expert_hidden=64)
    return dataclasses.replace(spec, name="qwen3_narrow", vocab_size=1024, moe=moe)


def olmoe_narrow():
    """olmoe_1b_7b's routing as it is (64 experts, top-8, d 2048, dropless) with narrower experts and a small
    vocabulary: the counts follow the same formulas in seconds instead of tens of seconds on a CPU."""
    spec = get_model("olmoe_1b_7b")
    assert spec.moe is not None
    return dataclasses.replace(spec, name="olmoe_narrow", vocab_size=1024,
                               moe=dataclasses.replace(spec.moe, expert_hidden=64))


NARROWED = {"qwen3_narrow": qwen3_narrow, "olmoe_narrow": olmoe_narrow}
CPU_IMPLS = ["loop", "grouped", "capacity"]  # triton: the same GEMMs as grouped (test above), GPU only


@pytest.mark.slow
@pytest.mark.parametrize(("name", "layers", "impl"), [
    ("dense_135m", 2, "grouped"), *[("moe_1b", 2, i) for i in CPU_IMPLS], *[("olmoe_narrow", 1, i) for i in CPU_IMPLS],
    *[("moe_tiny", 2, i) for i in CPU_IMPLS], ("qwen3_narrow", 1, "grouped"),
])
def test_exact_flops_equal_the_flop_counter_to_the_flop(name, layers, impl, count_grouped_mm):
    torch.manual_seed(0)
    spec = (NARROWED[name]() if name in NARROWED else get_model(name)).with_layers(layers)
    seq = min(256, spec.seq_len)
    model = build_model(spec, impl=impl)
    ids = torch.randint(0, spec.vocab_size, (2, seq))
    with sdpa_kernel([SDPBackend.MATH]):
        with FlopCounterMode(display=False) as fwd_counter:
            loss = model.training_loss(ids, ids)
        with FlopCounterMode(display=False) as bwd_counter:
            loss.backward()
    ops = step_ops(Workload(model=spec, tokens=2 * seq, seq_len=seq, attention_backend="math", impl=impl))
    measured_fwd = fwd_counter.get_total_flops()
    assert measured_fwd == total_flops(ops, phases=[Phase.FWD])
    assert measured_fwd + bwd_counter.get_total_flops() == total_flops(ops, phases=FWD_BWD)


def test_causal_halving_of_the_flash_backend_against_a_hand_count():
    """The flash convention counts half of the S x S square (flash kernels skip the tiles above the diagonal);
    a hand count of the causal products, query i attending to keys 0..i, is S(S+1)/2 per head and dimension:
    the convention leaves out the diagonal's S/2 (0.05% at S = 2048)."""
    spec = get_model("dense_135m")
    s, d, sequences = 2048, spec.d_model, 2
    w = Workload(model=spec, tokens=sequences * s, seq_len=s)
    fwd = {op.name: op.flops for op in attention_core_ops(w) if op.phase is Phase.FWD}["attn.core"]
    pairs = sum(i + 1 for i in range(s))  # (query, key) pairs a causal mask keeps
    hand = sequences * 2 * (2 * pairs * d)  # QK^T and PV, 2 FLOPs per multiply-add, all heads (d = heads x dim)
    assert pairs == s * (s + 1) // 2
    assert fwd == hand * s / (s + 1)  # the square's half: the hand count without the diagonal's S/2 per row
    math_fwd = {op.name: op.flops for op in attention_core_ops(Workload(model=spec, tokens=sequences * s, seq_len=s,
                                                                        attention_backend="math"))
                if op.phase is Phase.FWD}["attn.core"]
    assert math_fwd == 2 * fwd == sequences * 4 * s * s * d  # the math backend computes the whole square


def test_grouped_query_attention_is_counted_by_its_projection_widths():
    """qwen3_30b_a3b: q 32 x 128 = 4096 wide, k and v 4 x 128 = 512 each, over d 2048; the core over the query
    heads. Per layer and token (forward): 2 x 2048 x 4096 (q) + 2 x 2 x 2048 x 512 (k, v) + 2 x 4096 x 2048 (out)."""
    spec = get_model("qwen3_30b_a3b")
    t, s = 8192, 4096
    ops = [op for op in step_ops(Workload(model=spec, tokens=t, seq_len=s)) if op.group == "attention"
           and op.phase is Phase.FWD and op.kind is OpKind.MATMUL]
    by_name = {op.name: op.flops / spec.n_layers for op in ops}
    assert by_name["attn.q"] == 2 * t * 2048 * 4096 and by_name["attn.kv"] == 2 * 2 * t * 2048 * 512
    assert by_name["attn.out"] == 2 * t * 4096 * 2048
    assert by_name["attn.core"] == (t // s) * 4 * s * s * 4096 * 0.5  # causal flash: half the square


def test_full_recompute_repeats_the_blocks_forward_outside_the_model_flops():
    from tpsbench.estimate.memory import step_memory

    spec = get_model("moe_1b")
    plain, ac = (Workload(model=spec, tokens=32768, seq_len=2048, recompute=r) for r in ("none", "full"))
    assert total_flops(step_ops(ac), phases=FWD_BWD) == total_flops(step_ops(plain), phases=FWD_BWD)  # model FLOPs
    block_fwd = sum(op.flops for op in step_ops(plain) if op.phase is Phase.FWD and op.group in ("attention", "moe")
                    and op.name != "moe.residual")  # the trailing residual add is not recomputed
    again = [op for op in step_ops(ac) if op.name.endswith(".recompute")]
    assert again and all(op.phase is Phase.BWD_DGRAD and not op.model_flops for op in again)
    assert sum(op.flops for op in again) == block_fwd
    low, high = (step_memory(w, compiled=False, overhead_fraction=0.0) for w in (ac, plain))
    # every block keeps only its fp32 input: 12 layers x 32,768 x 768 x 4 B, the loss's transient exceeding one
    # block's recomputed activations
    assert low.activations_bytes == 12 * 32768 * 768 * 4 < high.activations_bytes / 10
    with pytest.raises(ValueError, match="recompute"):
        Workload(model=spec, tokens=2048, seq_len=2048, recompute="some")


def test_the_expected_step_pays_for_the_recompute():
    from tpsbench.estimate.step import expected_for
    from tpsbench.profiles import load_profile

    spec, h100 = get_model("moe_1b"), load_profile("h100_sxm")
    plain, ac = (expected_for(Workload(model=spec, tokens=32768, seq_len=2048, recompute=r), h100).expected
                 for r in ("none", "full"))
    assert plain is not None and ac is not None
    assert 1.1 * plain.seconds < ac.seconds < 1.6 * plain.seconds  # one more forward of the blocks, not the head


@pytest.mark.parametrize(("name", "impl"), [("dense_tiny", "grouped"), ("dense_1m", "grouped"), ("moe_tiny", "grouped"),
                                           ("moe_tiny", "loop"), ("moe_tiny", "capacity")])
def test_full_recompute_is_what_torch_recomputes_and_changes_no_gradient(name, impl, count_grouped_mm):
    """With every block checkpointed (run --ac full) the backward runs each block's forward again: FlopCounterMode
    counts the cost model's recompute ops on top of the step, to the FLOP, and the gradients are the same."""
    spec = get_model(name)
    seq = spec.seq_len
    grads, flops = {}, {}
    for recompute in ("none", "full"):
        torch.manual_seed(0)
        model = build_model(spec, impl=impl)
        model.recompute = recompute
        ids = torch.randint(1, spec.vocab_size, (2, seq), generator=torch.Generator().manual_seed(1))
        with sdpa_kernel([SDPBackend.MATH]), FlopCounterMode(display=False) as counter:
            model.training_loss(ids, ids).backward()
        flops[recompute] = counter.get_total_flops()
        grads[recompute] = [p.grad.clone() for p in model.parameters()]
    w = Workload(model=spec, tokens=2 * seq, seq_len=seq, attention_backend="math", impl=impl, recompute="full")
    ops = step_ops(w)
    assert flops["none"] == total_flops(ops, phases=FWD_BWD)
    again = [op for op in ops if op.name.endswith(".recompute")]
    # FlopCounterMode counts matmuls only (the elementwise ops' FLOPs are the cost model's own)
    assert flops["full"] == flops["none"] + sum(op.flops for op in again if op.kind is OpKind.MATMUL)
    for a, b in zip(grads["none"], grads["full"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
