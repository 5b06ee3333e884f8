"""The olmo_core dtype policy: what OLMo-core executes beyond tpsbench's own step, each term on a hand-computed
case (moe_1b at 32,768 tokens, seq 2048: T 32768, d 768, E 256, V 50304, 12 layers), and `--stack olmo-core`."""

from __future__ import annotations

import json

import pytest

from tpsbench.cli import main
from tpsbench.costmodel import Phase, Workload, get_policy, step_ops
from tpsbench.models import get_model
from tpsbench.profiles import load_profile
from tpsbench.roofline import predict

T, D, E, V, L = 32768, 768, 256, 50304, 12
P = 1_017_484_032  # moe_1b's parameters


def _ops(policy: str = "olmo_core", impl: str = "capacity"):
    w = Workload(model=get_model("moe_1b"), tokens=T, seq_len=2048, impl=impl, policy=get_policy(policy))
    out: dict = {}
    for op in step_ops(w):
        out.setdefault((op.name, op.phase), []).append(op)
    return w, out


def test_router_logits_in_fp32_on_the_cuda_cores():
    w, ops = _ops()
    router = [op for (name, _), group in ops.items() if name == "moe.router" for op in group]
    # 2 T d E per matmul, three matmuls (fwd, dgrad, wgrad), 12 layers: 464 GFLOP
    assert sum(op.flops for op in router) == 2 * T * D * E * 3 * L == 463_856_467_968
    assert all(op.fp32_matmul for op in router)
    # on the H100's 67 TFLOP/s of fp32 CUDA cores: 6.9 ms, where the bf16 GEMM's floor is 0.7 ms
    fp32 = sum(r.seconds for r in predict(w, load_profile("h100_sxm")).rows if r.op.name == "moe.router")
    assert fp32 == pytest.approx(463.856467968e9 / 67e12, rel=1e-6)
    (fwd,) = ops[("moe.router_upcast", Phase.FWD)]
    assert fwd.bytes == L * T * D * (2 + 4)  # x's rows read in bf16, written in fp32


def test_parameters_cast_in_forward_and_again_in_backward():
    _, ops = _ops()
    for group in ("attention", "moe", "head", "embedding"):
        (fwd,), (bwd,) = ops[(f"{group}.weight_cast", Phase.FWD)], ops[(f"{group}.weight_cast", Phase.BWD_DGRAD)]
        assert fwd.bytes == bwd.bytes > 0
    (emb,) = ops[("embedding.weight_cast", Phase.FWD)]
    assert emb.bytes == V * D * (4 + 2)  # fp32 read, bf16 written
    _, amp = _ops("amp_bf16")
    assert ("moe.weight_cast", Phase.BWD_DGRAD) not in amp  # tpsbench's autocast casts once


def test_the_loss_upcasts_the_logits_and_makes_a_z_loss_pass():
    _, ops = _ops()
    (up,) = ops[("head.logits_upcast", Phase.FWD)]
    assert up.bytes == T * V * (2 + 4) == 9_890_168_832
    (z,) = ops[("head.z_loss", Phase.FWD)]
    assert (z.flops, z.bytes) == (4 * T * V, T * V * 4 + T * 4)
    (ce,) = ops[("head.cross_entropy", Phase.FWD)]
    assert ce.bytes == T * V * 4 + T * 8 + T * 4  # the cross-entropy reads fp32 logits


def test_gradient_clipping_reads_every_gradient_twice_and_writes_it_once():
    _, ops = _ops()
    (clip,) = ops[("optim.grad_clip", Phase.OPTIM)]
    assert (clip.flops, clip.bytes) == (3 * P, 3 * P * 4)


def test_the_residual_stream_is_bf16():
    _, ops = _ops()
    _, amp = _ops("amp_bf16")
    (olmo,), (ours,) = ops[("attn.residual", Phase.FWD)], amp[("attn.residual", Phase.FWD)]
    assert olmo.bytes == L * T * D * (2 + 2 + 2) and ours.bytes == L * T * D * (4 + 2 + 4)


def test_predict_with_the_olmo_core_stack(capsys):
    assert main(["predict", "--gpu", "h100", "--model", "moe_1b", "--stack", "olmo-core", "--impl", "capacity",
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["stack"] == "olmo-core" and doc["dtype_policy"]["name"] == "olmo_core"
    names = {(o["op"], o["phase"]) for o in doc["predictions"][0]["ops"]}
    assert {("moe.router_upcast", "fwd"), ("head.logits_upcast", "fwd"), ("head.z_loss", "fwd"),
            ("optim.grad_clip", "optim"), ("moe.weight_cast", "bwd_dgrad")} <= names
    assert main(["predict", "--gpu", "h100", "--model", "moe_1b", "--stack", "olmo-core"]) == 0
    table = capsys.readouterr().out
    assert "head.z_loss" in table and "optim.grad_clip" in table


@pytest.mark.parametrize(("args", "needle"), [
    (["--impl", "triton"], "olmo-core has no MoE implementation 'triton'"),
    (["--dtype", "fp32"], "counts its own dtype handling"),
    (["--stack", "olmo"], "did you mean olmo-core"),
])
def test_stack_bad_input_is_one_line(args, needle, capsys):
    base = ["predict", "--gpu", "h100", "--model", "moe_1b"]
    code = main([*base, *(args if args[0] == "--stack" else ["--stack", "olmo-core", *args])])
    err = capsys.readouterr().err.strip()
    assert code == 2 and needle in err and len(err.splitlines()) == 1


def test_explain_holds_olmo_core_measurements_against_olmo_cores_step(tmp_path, capsys):
    f = tmp_path / "m.csv"
    f.write_text("model,gpu,tokens_per_s,stack\nmoe_1b,h100_sxm,140000,olmo-core\nmoe_1b,h100_sxm,140000,\n")
    assert main(["explain", "--measured", str(f), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [r["stack"] for r in rows] == ["olmo-core", "tpsbench"]
    assert rows[0]["predicted_tokens_per_s"] < rows[1]["predicted_tokens_per_s"]  # OLMo-core's step does more
