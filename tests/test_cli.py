"""The CLI: predict and list work without a GPU; bad input is one line on stderr and exit code 2."""

import json
import subprocess
import sys

import pytest

from tpsbench.bench.config import parse_batches
from tpsbench.cli import main


@pytest.mark.parametrize("gpu", ["rtx5090", "h100_sxm"])
def test_predict_json_shows_per_op_bounds(gpu, capsys):
    assert main(["predict", "--gpu", gpu, "--model", "moe_1b", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    pred = doc["predictions"][0]
    assert pred["tokens"] == 32768 and pred["gpu"] == gpu
    bounds = {(o["op"], o["phase"]): o["bound"] for o in pred["ops"]}
    assert bounds[("moe.expert_up_gate", "fwd")] == "memory"
    assert {"compute", "memory"} <= set(bounds.values())
    assert all(o["predicted_ms"] >= 0 for o in pred["ops"])
    assert 0 < pred["totals"]["memory_bound_share"] < 1
    assert doc["profile"]["bf16_tflops"]["source"]


def test_predict_table_explains_memory_bound_ops(capsys):
    assert main(["predict", "--gpu", "h100_sxm", "--model", "moe_1b"]) == 0
    out = capsys.readouterr().out
    assert "Memory-bound ops take" in out and "moe.expert_up_gate" in out and "Ridge point 295" in out


def test_predict_several_batches_summary(capsys):
    assert main(["predict", "--gpu", "h100", "--model", "smallmoe_1B", "--batch", "4096,32768", "--summary"]) == 0
    out = capsys.readouterr().out
    assert "Across microbatch sizes: the global step, expected and floor" in out and "expected tokens/s" in out


def test_list_models_gpus_and_impls_say_what_they_hold(capsys, monkeypatch):
    assert main(["list", "models", "--json"]) == 0
    models = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    assert models["moe_1b"]["olmo_name"] == "smallmoe_1B"
    assert (models["moe_1b"]["total_params"], models["moe_1b"]["active_params"]) == (1_017_484_032, 115_053_312)
    assert models["dense_135m"]["d_model"] == 768 and models["dense_135m"]["n_layers"] == 12
    assert main(["list", "gpus", "--json"]) == 0
    gpus = {g["name"]: g for g in json.loads(capsys.readouterr().out)}
    assert gpus["h100_sxm"]["bf16_tflops"]["value"] == 989.4 and gpus["h100_sxm"]["mem_bandwidth_gbs"]["value"] == 3350
    assert gpus["h100_sxm"]["ridge_flop_per_byte"] == pytest.approx(989.4e12 / 3350e9)
    assert main(["list", "impls", "--json"]) == 0
    impls = json.loads(capsys.readouterr().out)
    assert [i["name"] for i in impls["implementations"]] == ["loop", "grouped", "capacity", "triton"]
    assert [b["name"] for b in impls["brackets"]] == ["dense_active", "dense_total"]
    monkeypatch.setenv("COLUMNS", "250")  # wide enough that no name is folded: what the tables hold
    for what in ("models", "gpus", "impls"):
        assert main(["list", what]) == 0
    out = capsys.readouterr().out
    assert "smallmoe_1B" in out and "NVIDIA H100 SXM5 80GB" in out and "torch._grouped_mm" in out


@pytest.mark.parametrize(("argv", "needle"), [
    (["--gpu", "h100x", "--model", "moe_1b"], "did you mean h100"),
    (["--gpu", "h100", "--model", "moe_1bb"], "did you mean moe_1b"),
    (["--gpu", "h100", "--model", "moe_1b", "--batch", "3000"], "--batch 3000 counts tokens"),
    (["--gpu", "h100", "--model", "moe_1b", "--batch", "3000"], "closest valid choices (tokens): 2048, 4096"),
    (["--gpu", "h100", "--model", "moe_1b", "--batch", "0"], "must be positive"),
    (["--gpu", "h100", "--model", "moe_1b", "--batch", "-4096"], "must be positive"),
    (["--gpu", "h100", "--model", "moe_1b", "--batch", "1.5"], "not a whole number"),
    (["--gpu", "h100", "--model", "moe_1b", "--impl", "grupd"], "unknown MoE implementation"),
    (["--gpu", "h100", "--model", "dense_135m", "--impl", "capacity"], "dense_135m is dense (it has no MoE layer)"),
    (["--gpu", "rtx5090", "--model", "moe_1b", "--ceilings", "measured"], "use --ceilings spec"),
    (["--gpu", "h100", "--model", "moe_1b", "--seq", "0"], "must be positive"),
])
def test_bad_input_is_one_line_exit_2(argv, needle, capsys):
    with pytest.raises(SystemExit) as info:
        code = main(["predict", *argv])
        raise SystemExit(code)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert needle in err
    assert len(err.splitlines()) == 1


def test_parse_batches():
    assert parse_batches("4096, 8192", 2048) == [4096, 8192]


def test_python_dash_m():
    out = subprocess.run([sys.executable, "-m", "tpsbench", "list", "gpus", "--json"], capture_output=True,
                         text=True, check=True)
    assert any(p["name"] == "h200" for p in json.loads(out.stdout))


def test_predict_takes_a_list_of_implementations_as_run_does(capsys):
    assert main(["predict", "--gpu", "h100", "--model", "moe_1b", "--impl", "capacity,dropless", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [p["impl"] for p in doc["predictions"]] == ["capacity", "dropless"]
    assert main(["predict", "--gpu", "h100", "--model", "moe_1b", "--impl", "capacity,loop", "--summary"]) == 0
    out = capsys.readouterr().out
    assert "impl" in out and "capacity" in out and "loop" in out
    assert main(["predict", "--gpu", "h100", "--model", "moe_1b", "--impl", "capacity,grupd"]) == 2
    assert "unknown MoE implementation" in capsys.readouterr().err
    assert main(["predict", "--gpu", "h100", "--model", "moe_1b", "--impl", "capacity,loop", "--gpus", "8",
                 "--dist", "fsdp"]) == 2
    assert "one --impl" in capsys.readouterr().err
