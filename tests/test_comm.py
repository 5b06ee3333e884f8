"""The communication cost model and `predict --gpus N --dist` (issue 20) against a hand count."""

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


def test_predict_prints_each_collective_with_its_bytes_and_bound(capsys):
    assert main(["predict", "--gpu", "h100_sxm", "--model", "olmoe_1b_7b", "--gpus", "8", "--dist", "fsdp+ep"]) == 0
    out = capsys.readouterr().out
    assert "communication over nvlink at 450 GB/s one way" in out
    assert "fwd        all_to_all      moe.dispatch            16    30,064.8      66.81" in out  # 30.06 GB / 450 GB/s
    assert "bwd_wgrad  reduce_scatter  fsdp.reduce_scatter     17     1,668.5       3.71" in out
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
    (["--gpus", "16", "--dist", "fsdp"], "give --network-gbs"),
])
def test_bad_distributed_predictions_are_one_line(capsys, args, needle):
    assert main(["predict", "--gpu", "h100_sxm", "--model", "olmoe_1b_7b", *args]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1, err


def test_a_gpu_without_nvlink_uses_pcie(capsys):
    assert main(["predict", "--gpu", "rtx5090", "--model", "moe_1b", "--gpus", "2", "--dist", "ep", "--batch",
                 "8192"]) == 0
    assert "communication over pcie at 63 GB/s one way" in capsys.readouterr().out
