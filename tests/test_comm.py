"""The communication cost model and `predict --gpus N --dist` against a hand count."""

from __future__ import annotations

import json

import pytest

from tpsbench.cli import main
from tpsbench.costmodel import get_policy, train_workload
from tpsbench.costmodel.comm import comm_ops
from tpsbench.costmodel.ops import Phase
from tpsbench.models import get_model

# olmoe_1b_7b: d_model 2048, top-8 of 64 experts, 16 layers; 6,919,161,856 parameters of which the routed experts
# are 16 x 3 x 2048 x 1024 x 64 = 6,442,450,944. On 8 GPUs, 32,768 tokens each, amp_bf16 (fp32 residual and
# parameters, bf16 matmul outputs):
DISPATCH = 16 * 32768 * 8 * 2048 * 4 * 7 / 8  # 16 layers x T*k rows x d x 4 B, 7/8 leave the GPU: 30,064,771,072
COMBINE = DISPATCH / 2  # bf16 expert outputs
FSDP = (6_919_161_856 - 6_442_450_944) * 4 * 7 / 8  # the non-expert parameters, fp32, a ring's 7/8: 1,668,488,192


def test_olmoe_on_8_gpus_fsdp_ep_is_the_hand_count():
    w = train_workload(get_model("olmoe_1b_7b"), "dropless", 32768, get_policy("amp_bf16"), None)
    ops = {(o.name, o.phase): o for o in comm_ops(w, "fsdp+ep", 8)}
    assert ops[("moe.dispatch", Phase.FWD)].bytes_per_rank == DISPATCH == 30_064_771_072
    assert ops[("moe.dispatch", Phase.BWD_DGRAD)].bytes_per_rank == DISPATCH
    assert ops[("moe.combine", Phase.FWD)].bytes_per_rank == COMBINE
    assert ops[("moe.combine", Phase.BWD_DGRAD)].bytes_per_rank == COMBINE
    assert ops[("fsdp.all_gather", Phase.FWD)].bytes_per_rank == FSDP == 1_668_488_192
    assert ops[("fsdp.all_gather", Phase.BWD_DGRAD)].bytes_per_rank == FSDP
    assert ops[("fsdp.reduce_scatter", Phase.BWD_WGRAD)].bytes_per_rank == FSDP
    assert ops[("moe.counts", Phase.FWD)].host_syncs == 16 and ops[("fsdp.all_gather", Phase.FWD)].count == 17


def test_layouts_differ_where_they_should():
    w = train_workload(get_model("moe_1b"), "dropless", 32768, get_policy("amp_bf16"), None)
    names = {m: {o.name for o in comm_ops(w, m, 4)} for m in ("fsdp", "ep", "fsdp+ep")}
    assert names["fsdp"] == {"fsdp.all_gather", "fsdp.reduce_scatter"}
    assert names["ep"] == {"moe.counts", "moe.dispatch", "moe.combine", "dp.all_reduce"}
    assert names["fsdp+ep"] == {"moe.counts", "moe.dispatch", "moe.combine", "fsdp.all_gather", "fsdp.reduce_scatter"}
    fsdp_only = {o.name: o.bytes_per_rank for o in comm_ops(w, "fsdp", 4)}
    with_ep = {o.name: o.bytes_per_rank for o in comm_ops(w, "fsdp+ep", 4)}
    assert with_ep["fsdp.all_gather"] < fsdp_only["fsdp.all_gather"]  # expert parallelism holds the experts
    assert comm_ops(w, "fsdp", 1) == []


def _rows(out: str) -> dict[tuple[str, str], list[str]]:
    """The collectives table's rows by (op, phase): its cells, stripped."""
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if len(cells) == 7:
            rows[cells[2], cells[0]] = cells
    return rows


def test_predict_prints_each_collective_with_its_bytes_and_bound(capsys):
    assert main(["predict", "--gpu", "h100_sxm", "--model", "olmoe_1b_7b", "--gpus", "8", "--dist", "fsdp+ep"]) == 0
    out = capsys.readouterr().out
    assert "communication over nvlink at 450 GB/s one way" in out
    # 30.06 GB / 450 GB/s
    assert _rows(out)["moe.dispatch", "fwd"] == ["fwd", "all_to_all", "moe.dispatch", "16", "30,064.8", "66.81",
                                                  "nvlink (ep)"]
    assert _rows(out)["fsdp.reduce_scatter", "bwd_wgrad"][:6] == ["bwd_wgrad", "reduce_scatter", "fsdp.reduce_scatter",
                                                                 "17", "1,668.5", "3.71"]
    assert "predicted only" in out
    assert main(["predict", "--gpu", "h100_sxm", "--model", "olmoe_1b_7b", "--gpus", "8", "--dist", "fsdp+ep",
                 "--json"]) == 0
    [d] = json.loads(capsys.readouterr().out)["dist"]
    assert d["measured"] is False and d["link"]["name"] == "nvlink"
    assert d["comm_s"] == pytest.approx((2 * DISPATCH + 2 * COMBINE + 3 * FSDP + 16 * 8 * 8) / 450e9)
    s = d["steps"]["floor_overlap_none"]
    assert s["step_s"] == pytest.approx(d["compute_floor_s"] + d["comm_s"])


@pytest.mark.parametrize(("args", "needle"), [
    (["--gpus", "8"], "--gpus and --dist go together"),
    (["--gpus", "6", "--dist", "ep"], "64 experts cannot be split evenly over 6 GPUs"),
    (["--gpu", "a100_sxm", "--gpus", "16", "--dist", "fsdp"], "cites no network bandwidth: give --network-gbs"),
])
def test_bad_distributed_predictions_are_one_line(capsys, args, needle):
    gpu = [] if "--gpu" in args else ["--gpu", "h100_sxm"]
    assert main(["predict", *gpu, "--model", "olmoe_1b_7b", *args]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1, err


def test_across_nodes_the_reference_servers_network_unless_given(capsys):
    argv = ["predict", "--gpu", "h100_sxm", "--model", "olmoe_1b_7b", "--gpus", "16", "--dist", "fsdp"]
    assert main(argv) == 0
    assert "communication over network at 50 GB/s one way (NVIDIA DGX H100 User Guide" in capsys.readouterr().out
    assert main([*argv, "--network-gbs", "25"]) == 0
    assert "communication over network at 25 GB/s one way (--network-gbs (given))" in capsys.readouterr().out


def test_a_gpu_without_nvlink_uses_pcie(capsys):
    assert main(["predict", "--gpu", "rtx5090", "--model", "moe_1b", "--gpus", "2", "--dist", "ep", "--batch",
                 "8192"]) == 0
    assert "communication over pcie at 63 GB/s one way" in capsys.readouterr().out


# qwen3_30b_a3b as torchtitan trains it on 8 B200s (fsdp+ep, FSDP2 mixed precision, full activation checkpointing):
# 48 layers, top-8, d 2048; bf16 residual stream and bf16 gathers (the olmo_core policy); 30,532,122,624
# parameters of which 48 x 3 x 2048 x 768 x 128 = 28,991,029,248 are routed experts.
Q_DISPATCH = 48 * 32768 * 8 * 2048 * 2 * 7 / 8  # 45,097,156,608
Q_GATHER = (30_532_122_624 - 28_991_029_248) * 2 * 7 / 8  # bf16: 2,696,913,408 (a ring's 7/8 of 1.54 G params x 2 B)


def test_mixed_precision_gathers_bf16_and_recompute_repeats_the_forward_exchanges():
    from dataclasses import replace

    base = train_workload(get_model("qwen3_30b_a3b"), "dropless", 32768, get_policy("olmo_core"), None)
    w = replace(base, seq_len=4096, recompute="full")
    ops = {(o.name, o.phase): o for o in comm_ops(w, "fsdp+ep", 8)}
    assert ops[("moe.dispatch", Phase.FWD)].bytes_per_rank == Q_DISPATCH == 45_097_156_608
    assert ops[("moe.dispatch.recompute", Phase.BWD_DGRAD)].bytes_per_rank == Q_DISPATCH
    assert ops[("moe.combine.recompute", Phase.BWD_DGRAD)].bytes_per_rank == Q_DISPATCH  # bf16 both ways
    assert ops[("moe.counts.recompute", Phase.BWD_DGRAD)].host_syncs == 48
    assert ops[("fsdp.all_gather", Phase.FWD)].bytes_per_rank == Q_GATHER
    assert ops[("fsdp.reduce_scatter", Phase.BWD_WGRAD)].bytes_per_rank == 2 * Q_GATHER  # fp32 gradients
    # the control: amp_bf16 gathers its fp32 parameters, and without recompute no exchange is repeated
    amp = {(o.name, o.phase): o for o in comm_ops(replace(w, policy=get_policy("amp_bf16"), recompute="none"),
                                                  "fsdp+ep", 8)}
    assert amp[("fsdp.all_gather", Phase.FWD)].bytes_per_rank == 2 * Q_GATHER
    assert not any(name.endswith(".recompute") for name, _ in amp)


def test_memory_per_gpu_shards_the_parameters_and_state():
    """fsdp+ep on 8: every parameter's fp32 value and two AdamW moments are held by one rank in 8 (12 bytes / 8 per
    parameter), plus the LM head's unsharded fp32 gradient; FSDP's mixed precision keeps no bf16 copies beyond the
    units in flight (the root and one block, bf16) and the rank's own 16 experts' casts."""
    from dataclasses import replace

    from tpsbench.estimate.distributed_memory import dist_memory

    m = get_model("qwen3_30b_a3b")
    w = replace(train_workload(m, "dropless", 32768, get_policy("olmo_core"), None), seq_len=4096, recompute="full")
    mem = dist_memory(w, "fsdp+ep", 8, compiled=True, overhead_fraction=0.0)
    assert mem.parameters_and_state_bytes == 30_532_122_624 * 12 / 8 + (2048 * 151936 + 2048) * 4
    block_without_experts = m.block_params() - 3 * 2048 * 768 * 128
    in_flight = (2 * 151936 * 2048 + 2048 + block_without_experts) * 2
    assert mem.weight_copies_bytes == in_flight + 28_991_029_248 / 8 * 2
    one_gpu = dist_memory(w, "fsdp+ep", 2, compiled=True, overhead_fraction=0.0)
    assert one_gpu.parameters_and_state_bytes > 3.9 * mem.parameters_and_state_bytes  # 1/2 against 1/8


def test_predict_qwen3_on_8_b200s_prints_the_repeated_exchanges_and_the_memory(capsys):
    argv = ["predict", "--gpu", "b200", "--model", "qwen3_30b_a3b", "--gpus", "8", "--dist", "fsdp+ep", "--ac", "full",
            "--compile", "--dtype", "olmo_core"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    # 45.1 GB / 900 GB/s
    assert _rows(out)["moe.dispatch.recompute", "bwd_dgrad"][:6] == [
        "bwd_dgrad", "all_to_all", "moe.dispatch.recompute", "48", "45,097.2", "50.11"]
    assert "memory per GPU: peak" in out and "one-GPU expected step, compiled" in out
    assert main([*argv, "--json"]) == 0
    [d] = json.loads(capsys.readouterr().out)["dist"]
    assert d["recompute"] == "full" and d["compiled"] is True and d["memory_per_gpu"]["fits"] is True


def test_expert_groups_inside_a_node_keep_the_all_to_alls_on_nvlink(capsys):
    """olmoe_1b_7b on 64 H100s in expert-parallel groups of 8 (one node each): the dispatch is the 8-GPU hand count
    over NVLink; each expert has 8 replicas whose fp32 gradients (64 / 8 experts x 16 layers x 3 x 2048 x 1024)
    are all-reduced over the network, 2 x 7/8 of them; FSDP's gathers span the 64 GPUs, over the network."""
    w = train_workload(get_model("olmoe_1b_7b"), "dropless", 32768, get_policy("amp_bf16"), None)
    ops = {(o.name, o.phase): o for o in comm_ops(w, "fsdp+ep", 64, ep_size=8)}
    dispatch = ops[("moe.dispatch", Phase.FWD)]
    assert dispatch.bytes_per_rank == DISPATCH and dispatch.group == "ep"
    replicas = ops[("moe.expert_all_reduce", Phase.BWD_WGRAD)]
    assert replicas.group == "replicas" and replicas.bytes_per_rank == 2 * 6_442_450_944 / 8 * 4 * 7 / 8
    assert ops[("fsdp.all_gather", Phase.FWD)].bytes_per_rank == (6_919_161_856 - 6_442_450_944) * 4 * 63 / 64
    argv = ["predict", "--gpu", "h100_sxm", "--model", "olmoe_1b_7b", "--gpus", "64", "--dist", "fsdp+ep",
            "--ep-size", "8"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "in expert-parallel groups of 8" in out
    assert _rows(out)["moe.dispatch", "fwd"] == ["fwd", "all_to_all", "moe.dispatch", "16", "30,064.8", "66.81",
                                                  "nvlink (ep)"]
    assert "network (replicas)" in out and "network (world)" in out
    assert main([*argv, "--json"]) == 0
    [d] = json.loads(capsys.readouterr().out)["dist"]
    assert d["ep_size"] == 8 and {c["link"] for c in d["comm"]} == {"nvlink", "network"}


@pytest.mark.parametrize(("args", "needle"), [
    (["--gpus", "64", "--dist", "fsdp+ep", "--ep-size", "6"], "--ep-size 6 does not divide the 64 GPUs"),
    (["--gpus", "128", "--dist", "fsdp+ep", "--ep-size", "128", "--network-gbs", "50"],
     "64 experts cannot be split evenly over --ep-size 128"),
    (["--gpus", "8", "--dist", "fsdp", "--ep-size", "2"], "--ep-size 2 sizes expert-parallel groups"),
    (["--gpus", "8", "--dist", "ep", "--shard-size", "2"], "--shard-size 2 sizes FSDP's shard groups"),
    (["--gpus", "8", "--dist", "fsdp", "--shard-size", "3"], "--shard-size 3 does not divide the 8 GPUs"),
])
def test_bad_expert_group_sizes_are_one_line(capsys, args, needle):
    assert main(["predict", "--gpu", "h100_sxm", "--model", "olmoe_1b_7b", *args]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1, err


def test_hybrid_sharding_gathers_inside_the_node_and_all_reduces_the_shards_across():
    """olmoe_1b_7b on 256 H100s, FSDP over groups of 8 (one node) replicated 32 times, bf16 gathers: each gather
    moves 7/8 of the 6,919,161,856 parameters x 2 B over NVLink; the fp32 gradient shard (1/8) is all-reduced over
    the network across the 32 replicas, 2 x 31/32 of it. The control: without --shard-size everything crosses the
    network."""
    w = train_workload(get_model("olmoe_1b_7b"), "dropless", 16384, get_policy("olmo_core"), None)
    ops = {(o.name, o.phase): o for o in comm_ops(w, "fsdp", 256, shard_size=8)}
    gather = ops[("fsdp.all_gather", Phase.FWD)]
    assert gather.group == "shard" and gather.bytes_per_rank == 6_919_161_856 * 2 * 7 / 8
    across = ops[("fsdp.replica_all_reduce", Phase.BWD_WGRAD)]
    assert across.group == "shard_replicas" and across.bytes_per_rank == 2 * 6_919_161_856 / 8 * 4 * 31 / 32
    flat = {(o.name, o.phase): o for o in comm_ops(w, "fsdp", 256)}
    assert flat[("fsdp.all_gather", Phase.FWD)].group == "world" and ("fsdp.replica_all_reduce",
                                                                       Phase.BWD_WGRAD) not in flat


def test_hybrid_sharding_in_predict(capsys):
    argv = ["predict", "--gpu", "h100_sxm", "--model", "olmoe_1b_7b", "--gpus", "256", "--dist", "fsdp", "--batch",
            "16384", "--dtype", "olmo_core", "--json"]
    assert main([*argv, "--shard-size", "8"]) == 0
    [hybrid] = json.loads(capsys.readouterr().out)["dist"]
    assert main(argv) == 0
    [flat] = json.loads(capsys.readouterr().out)["dist"]
    assert hybrid["shard_size"] == 8 and {c["link"] for c in hybrid["comm"]} == {"nvlink", "network"}
    assert {c["link"] for c in flat["comm"]} == {"network"}
    assert hybrid["comm_s"] < flat["comm_s"] / 4  # the gathers moved onto NVLink
    # a shard is 1/8 of the parameters, not 1/256: fp32 values and two AdamW moments (12 B each), and the LM head's
    # unsharded fp32 gradient either way
    head = (2048 * 50304 + 2048) * 4
    assert hybrid["memory_per_gpu"]["parameters_and_state_bytes"] == 6_919_161_856 * 12 / 8 + head
    assert flat["memory_per_gpu"]["parameters_and_state_bytes"] == 6_919_161_856 * 12 / 256 + head


def test_fsdp_mixed_precision_gathers_and_dispatches_bf16(capsys):
    """--fsdp-param-dtype bf16 on amp_bf16: the gathers carry 2 bytes per parameter instead of 4 and, the residual
    stream now bf16, so do the dispatched rows; the gradients are still reduce-scattered in fp32."""
    argv = ["predict", "--gpu", "h100_sxm", "--model", "olmoe_1b_7b", "--gpus", "8", "--dist", "fsdp+ep", "--json"]
    assert main([*argv, "--fsdp-param-dtype", "bf16"]) == 0
    [mixed] = json.loads(capsys.readouterr().out)["dist"]
    by = {(c["name"], c["phase"]): c["bytes_per_gpu"] for c in mixed["comm"]}
    assert by[("fsdp.all_gather", "fwd")] == FSDP / 2 and by[("fsdp.reduce_scatter", "bwd_wgrad")] == FSDP
    assert by[("moe.dispatch", "fwd")] == DISPATCH / 2 and mixed["dtype_policy"] == "amp_bf16+fsdp_bf16"


@pytest.mark.parametrize(("args", "needle"), [
    (["--gpus", "8", "--dist", "ep", "--fsdp-param-dtype", "bf16"], "is FSDP's mixed precision: use it with"),
    (["--gpus", "8", "--dist", "fsdp", "--dtype", "olmo_core", "--fsdp-param-dtype", "fp32"],
     "--dtype olmo_core gathers bf16 parameters"),
    (["--fsdp-param-dtype", "bf16"], "--fsdp-param-dtype bf16 is FSDP's mixed precision of a distributed step: "
                                     "add --gpus N --dist"),
    (["--ep-size", "8"], "--ep-size 8 sizes the expert-parallel groups of a distributed step: add --gpus N --dist"),
])
def test_bad_mixed_precision_predictions_are_one_line(capsys, args, needle):
    assert main(["predict", "--gpu", "h100_sxm", "--model", "olmoe_1b_7b", *args]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1, err
