"""docs/extending.md's five recipes, each followed step by step: a GPU, a model, an MoE implementation, an
analysis table and a metric reach every command through the one place the recipe names."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from tpsbench import impls, profiles
from tpsbench.cli import main
from tpsbench.impls import MoEImpl, register, unregister
from tpsbench.models import get_model
from tpsbench.nn.experts import ExpertImpl, Permuted, _dropless_permute
from tpsbench.report import compare as compare_report
from tpsbench.report.tables import TableData
from tpsbench.results import load_dataframe, load_results

ROOT = Path(__file__).resolve().parents[1]
RUNS = [str(ROOT / f"results/h100-validation/h100-{m}.json") for m in ("dense_135m", "moe_1b")]


def test_recipe_add_a_gpu(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "profiles"
    folder.mkdir()
    numbers = {"bf16_tflops": 500, "tf32_tflops": 250, "fp32_tflops": 60, "mem_bandwidth_gbs": 2000, "l2_mb": 40,
               "sm_count": 100, "memory_gb": 48}
    (folder / "my_gpu.toml").write_text(
        'name = "my_gpu"\ndisplay_name = "My GPU 48GB"\nmatch = ["My GPU"]\naliases = ["mine"]\n'
        'architecture = "hopper"\n'
        + "".join(f'{k} = {{ value = {v}, source = "my datasheet" }}\n' for k, v in numbers.items()))
    monkeypatch.setenv("TPSBENCH_PROFILES", str(folder))
    assert main(["list", "gpus", "--json"]) == 0
    listed = {g["name"]: g for g in json.loads(capsys.readouterr().out)}
    assert listed["my_gpu"]["bf16_tflops"] == {"value": 500, "source": "my datasheet"}
    assert main(["predict", "--gpu", "mine", "--model", "dense_135m", "--json"]) == 0
    pred = json.loads(capsys.readouterr().out)["predictions"][0]
    assert pred["ceilings"]["matmul_tflops"] == 500 and pred["expected"]["expected_s"] is not None  # a transfer
    monkeypatch.setattr("tpsbench.bench.env.cuda_device_name", lambda: "My GPU 48GB PCIe")
    from tpsbench.bench.env import resolve_gpu

    assert resolve_gpu("auto", "cuda").name == "my_gpu"  # `run --gpu auto` finds it by `match`


MY_MOE = """
name = "my_moe"
note = "a recipe's test model"

[model]
d_model = 64
n_layers = 2
n_heads = 4
vocab_size = 512
seq_len = 64
qk_norm = true
reordered_norm = true

[moe]
num_experts = 4
top_k = 2
expert_hidden = 64
type = "dropless"
"""


def test_recipe_add_a_model(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "my_moe.toml").write_text(MY_MOE)
    monkeypatch.setenv("TPSBENCH_MODELS", str(folder))  # the recipe: a file in a folder, nothing in the package
    assert main(["list", "models", "--json"]) == 0
    listed = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    assert listed["my_moe"]["origin"] == str(folder / "my_moe.toml")
    spec = get_model("my_moe")
    assert main(["predict", "--gpu", "h100", "--model", "my_moe", "--batch", "256", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"]["total_params"] == spec.total_params
    out = tmp_path / "r.json"
    assert main(["run", "--device", "cpu", "--model", "my_moe", "--impl", "grouped", "--mode", "e2e", "--reps", "2",
                 "--min-time", "0.001", "--out", str(out)]) == 0
    assert [p.status for p in load_results(out).points] == ["ok"]


class _Gathered(ExpertImpl):
    """Each row times its own expert's weights, gathered per row (bmm): the same function, computed another way."""

    def _expert_of_row(self, p: Permuted) -> torch.Tensor:
        return torch.repeat_interleave(torch.arange(p.counts.numel(), device=p.counts.device), p.counts)

    def permute(self, x, route, experts):
        return _dropless_permute(x, route)

    def up_gate(self, p, experts):
        e, rows = self._expert_of_row(p), p.rows.unsqueeze(1)
        return torch.bmm(rows, experts.w1[e]).squeeze(1), torch.bmm(rows, experts.w3[e]).squeeze(1)

    def down(self, h, p, experts):
        return torch.bmm(h.unsqueeze(1), experts.w2[self._expert_of_row(p)]).squeeze(1)


def test_recipe_add_an_moe_implementation(tmp_path, capsys, fixed_clock):
    """The new implementation flows through run, results and compare (on a fixed clock: a busy machine cannot
    flag its points inconsistent and leave compare without a speed-up to show)."""
    register(MoEImpl(name="my_impl", factory=_Gathered, description="dropless; gathered weights per row"))
    try:
        assert "my_impl" in impls.run_choices()
        out = tmp_path / "r.json"
        assert main(["run", "--device", "cpu", "--model", "moe_tiny", "--impl", "loop,my_impl", "--mode", "micro",
                     "--layers", "moe", "--no-stages", "--reps", "2", "--min-time", "0.001", "--out", str(out)]) == 0
        points = load_results(out).points
        assert {p.impl for p in points} == {"loop", "my_impl"} and all(p.status == "ok" for p in points)
        capsys.readouterr()
        assert main(["compare", str(out), "--all-points", "--json"]) == 0
        speedups = json.loads(capsys.readouterr().out)["baseline_speedups"]
        assert {s["impl"] for s in speedups} == {"my_impl"}  # next to the baseline, loop
    finally:
        unregister("my_impl")


def test_recipe_add_an_analysis_table(tmp_path, monkeypatch, capsys):
    def fastest(c) -> TableData:
        t = TableData("Fastest point per GPU", ["gpu", "point", "tokens/s"], left={"gpu", "point"})
        for g in c.gpus:
            rows = [(e.tokens_per_s, row.label) for row in c.throughput for gpu, e in row.per_gpu.items()
                    if gpu == g.name and e.tokens_per_s]
            best = max(rows)
            t.add(g.name, best[1], f"{best[0]:,.0f}")
        return t

    views = [*compare_report.VIEWS, compare_report.View("fastest", lambda c: bool(c.throughput), fastest)]
    monkeypatch.setattr(compare_report, "VIEWS", views)
    md = tmp_path / "c.md"
    assert main(["compare", *RUNS, "--markdown", str(md)]) == 0
    assert "Fastest point per GPU" in capsys.readouterr().out  # the terminal's table
    text = md.read_text()
    assert "**Fastest point per GPU**" in text and "| h100_sxm | moe_1b dense_active fwd_bwd" in text


def test_recipe_add_a_metric(tmp_path):
    schema_md = (ROOT / "results/SCHEMA.md").read_text()
    assert "| `intensity` | `float \\| null` | FLOP/B |" in schema_md  # 1. the field, documented
    out = tmp_path / "r.json"
    assert main(["run", "--device", "cpu", "--model", "dense_tiny", "--mode", "micro", "--layers", "mlp", "--reps",
                 "2", "--min-time", "0.001", "--out", str(out)]) == 0
    for p in load_results(out).points:  # 2. computed for every point, 3. written and read back
        d = p.derived
        assert d is not None and d.intensity == pytest.approx(d.matmul_flops / d.bytes)
    assert load_dataframe(out)["derived.intensity"].gt(0).all()
    old = load_results(RUNS[0])  # a file written before the field: still loads, the value unknown
    assert all(p.derived is None or p.derived.intensity is None for p in old.points)
    assert replace(old.points[0]).derived is old.points[0].derived
    assert profiles.load_profile("h100").name == "h100_sxm"  # the rest of the tool is untouched by the field
