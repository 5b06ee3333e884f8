"""`tpsbench worth` end to end on the project's loss fixtures (tests/fixtures/make_loss_curves.py says how they were
made and with which laws), its arithmetic, its golden markdown, and its one-line errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from tpsbench.analysis.lossfit import Interval
from tpsbench.analysis.worth import Ratio
from tpsbench.cli import main

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests/fixtures"
sys.path.insert(0, str(FIXTURES))
from make_loss_curves import LAWS  # noqa: E402 - the laws the fixtures were written from

H100 = [str(ROOT / "results/h100-validation/h100-dense_135m.json"),
        str(ROOT / "results/h100-validation/h100-moe_1b.json")]
WANDB_MAP = ["--map", "moe_1b-run1=moe_1b", "--map", "moe_1b-run1-resume=moe_1b",
             "--map", "dense_135m-lr3e-3=dense_135m"]
TARGET = 3.45


def _true_tokens(law: str, target: float) -> float:
    e, b, beta = LAWS[law]
    return (b / (target - e)) ** (1 / beta)


def _worth_json(capsys, *args: str) -> dict:
    assert main(["worth", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_wandb_export_with_measured_h100_throughput(capsys):
    doc = _worth_json(capsys, "--losses", str(FIXTURES / "wandb-curves.csv"), "--target-loss", str(TARGET),
                      *WANDB_MAP, "--throughput", *H100, "--price", "h100=2.5")
    models = {m["model"]: m for m in doc["models"]}
    assert models["moe_1b"]["runs"] == ["moe_1b-run1", "moe_1b-run1-resume"]  # the continued run joined
    assert models["moe_1b"]["points"] == 121  # steps 0-12,000 every 100, the overlap once
    assert doc["left_out_runs"] == ["smoke-test"]
    for name, law in (("dense_135m", "dense"), ("moe_1b", "moe")):
        fitted = models[name]["tokens_to_target"]["fitted"]
        assert fitted == pytest.approx(_true_tokens(law, TARGET), rel=0.05)
        low, high = models[name]["tokens_to_target"]["fitted_interval"]
        assert low <= fitted <= high
    # the petaflops column was written at the cost model's OLMo-core FLOPs per token of moe_1b: the check says so
    assert models["moe_1b"]["implied_flops_per_token"] == pytest.approx(models["moe_1b"]["flops_per_token"]["olmo"],
                                                                        rel=1e-3)
    rows = {r["model"]: r for r in doc["rows"]}
    for r in rows.values():
        assert r["gpu"] == "h100_sxm" and r["throughput_kind"] == "measured"
        assert r["hours"] == pytest.approx(r["tokens"] / r["tokens_per_s"] / 3600)
        assert r["cost_usd"] == pytest.approx(2.5 * r["hours"])
    # moe_1b trained with a capacity factor: its tokens/s from the capacity step, not the faster dropless grouped one
    assert rows["moe_1b"]["tokens_per_s"] == pytest.approx(134987.4, rel=1e-4)
    assert "capacity" in rows["moe_1b"]["throughput_from"]
    [ratio] = doc["ratios"]
    assert ratio["hours"] == pytest.approx(rows["moe_1b"]["hours"] / rows["dense_135m"]["hours"])
    assert ratio["hours_interval"][0] <= ratio["hours"] <= ratio["hours_interval"][1]
    assert ratio["tokens"] == pytest.approx(_true_tokens("moe", TARGET) / _true_tokens("dense", TARGET), rel=0.07)
    assert ratio["verdict"] == "the MoE reaches the target sooner"
    assert doc["summary"][0].startswith("on h100_sxm, moe_1b reaches loss 3.45 in ")


def test_long_csv_with_predicted_throughput(capsys):
    doc = _worth_json(capsys, "--losses", str(FIXTURES / "losses-long-curves.csv"), "--target-loss", "3.5",
                      "--map", "dense-baseline=dense_135m", "--map", "moe-candidate=moe_1b", "--gpu", "h100")
    models = {m["model"]: m for m in doc["models"]}
    assert {m["tokens_source"] for m in models.values()} == {"tokens column"}
    assert models["dense_135m"]["tokens_to_target"]["fitted"] == pytest.approx(_true_tokens("dense", 3.5), rel=0.05)
    kinds = {(r["model"], r["throughput_kind"]) for r in doc["rows"]}
    assert kinds == {(m, k) for m in models for k in ("predicted floor", "predicted expected")}
    assert all(r["gpu"] == "h100_sxm" for r in doc["rows"])
    assert {q["throughput_kind"] for q in doc["ratios"]} == {"predicted floor", "predicted expected"}
    # the floor row is the floor of the step its label names: 32 microbatches of 32,768 tokens, accumulated
    from tpsbench.costmodel import Workload, get_policy
    from tpsbench.models import get_model
    from tpsbench.profiles import load_profile
    from tpsbench.roofline import predict

    floor = next(r for r in doc["rows"] if r["model"] == "moe_1b" and r["throughput_kind"] == "predicted floor")
    assert "capacity @ 32,768 x 32 tokens" in floor["throughput_from"]
    w = Workload(model=get_model("moe_1b"), tokens=32768, seq_len=2048, impl="capacity", capacity_factor=1.2,
                 policy=get_policy("amp_bf16"))
    p = predict(w, load_profile("h100"), global_batch_tokens=32 * 32768)
    assert floor["tokens_per_s"] == pytest.approx(p.global_tokens_per_s) and p.global_tokens_per_s > p.tokens_per_s


def test_a_dropless_model_takes_its_fastest_dropless_step_and_is_predicted_dropless(tmp_path, capsys):
    variant = "moe_1b:type=dropless"
    csv = tmp_path / "measured.csv"
    csv.write_text("model,gpu,tokens_per_s,tokens,impl\n" + "".join(
        f"{variant},h100_sxm,{tps},32768,{impl}\n" for tps, impl in
        ((140462, "grouped"), (150000, "capacity"), (120000, "loop"))))  # capacity is faster but drops tokens
    maps = ["--map", f"moe_1b-run1={variant}", "--map", f"moe_1b-run1-resume={variant}",
            "--map", "dense_135m-lr3e-3=dense_135m"]
    doc = _worth_json(capsys, "--losses", str(FIXTURES / "wandb-curves.csv"), "--target-loss", str(TARGET), *maps,
                      "--throughput", str(csv), "--gpu", "h100")
    rows = [r for r in doc["rows"] if r["model"] == variant]
    measured = next(r for r in rows if r["throughput_kind"] == "measured")
    assert measured["tokens_per_s"] == 140462 and "grouped" in measured["throughput_from"]
    assert all("dropless @" in r["throughput_from"] for r in rows if r["throughput_kind"] != "measured")


def test_markdown_golden(tmp_path, capsys):
    out = tmp_path / "worth.md"
    assert main(["worth", "--losses", str(FIXTURES / "wandb-curves.csv"), "--target-loss", str(TARGET), *WANDB_MAP,
                 "--throughput", *H100, "--price", "h100=2.5", "--markdown", str(out)]) == 0
    text = out.read_text().replace(str(ROOT) + "/", "")
    golden = ROOT / "tests/golden/worth-wandb-h100.md"
    assert text == golden.read_text(), "worth's markdown changed: if on purpose, rewrite tests/golden/" + golden.name


def test_the_plot_is_written(tmp_path, capsys):
    out = tmp_path / "worth.png"
    assert main(["worth", "--losses", str(FIXTURES / "wandb-curves.csv"), "--target-loss", str(TARGET), *WANDB_MAP,
                 "--throughput", *H100, "--gpu", "h200", "-o", str(out)]) == 0
    assert out.stat().st_size > 20_000 and out.read_bytes()[:4] == b"\x89PNG"


def test_a_target_below_every_fitted_floor_is_unreachable_not_a_number(capsys):
    doc = _worth_json(capsys, "--losses", str(FIXTURES / "wandb-curves.csv"), "--target-loss", "1.0", *WANDB_MAP,
                      "--throughput", *H100)
    assert all(m["tokens_to_target"]["unreachable"] and m["tokens_to_target"]["fitted"] is None
               for m in doc["models"])
    assert all(r["hours"] is None for r in doc["rows"])
    assert doc["ratios"][0]["verdict"].startswith("cannot tell")
    assert sum("unreachable by the fit" in n for n in doc["notes"]) == 2


def test_ratio_intervals_and_verdicts():
    def ratio(low: float, high: float) -> Ratio:
        iv = Interval(low, high)
        return Ratio("h100_sxm", "measured", "m", "d", (low + high) / 2, iv, 1.0, iv, 1.0, iv, 1.0)

    assert ratio(0.5, 0.9).verdict == "the MoE reaches the target sooner"
    assert ratio(1.1, 1.5).verdict == "the dense model reaches the target sooner"
    assert ratio(0.9, 1.2).verdict.startswith("cannot tell apart")
    assert ratio(0.9, float(np.inf)).verdict.startswith("cannot tell apart")


def _bad(tmp_path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize(("args", "needle"), [
    (["--losses", "{nocols}", "--target-loss", "3", "--gpu", "h100"], "no '<run> - train/CE loss' column"),
    (["--losses", "{wandb}", "--target-loss", "3", "--gpu", "h100", "--map", "moe_1b-run1=moe_9000"],
     "--map moe_1b-run1=moe_9000: "),
    (["--losses", "{nonnum}", "--target-loss", "3", "--gpu", "h100"], "'abc' is not a number"),
    (["--losses", "{wandb}", "--target-loss", "3", *WANDB_MAP,
      "--throughput", str(ROOT / "results/h100-validation/h100-moe_1b_a390m.json")], "holds moe_1b_a390m, not a model"),
    (["--losses", "{wandb}", "--target-loss", "3", *WANDB_MAP], "give --throughput FILE"),
    (["--losses", "{wandb}", "--target-loss", "3", "--gpu", "h100", "--map", "nope=moe_1b"],
     "--map names run 'nope', which no loss file has"),
    (["--losses", "{wandb}", "--target-loss", "3", "--gpu", "h100"], "no run maps to a zoo model"),
    (["--losses", "{wandb}", "--target-loss", "3", *WANDB_MAP, "--gpu", "h100", "--price", "h100"],
     "--price 'h100': give GPU=USD_PER_HOUR"),
    (["--losses", "{wandb}", "--target-loss", "3", *WANDB_MAP, "--gpu", "h100", "--map", "x"],
     "--map 'x': give RUN=MODEL"),
    (["--losses", "{wandb}", "--target-loss", "-1", "--gpu", "h100"], "must be a positive finite number"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, needle):
    files = {"nocols": _bad(tmp_path, "nocols.csv", "a,b\n1,2\n"),
             "nonnum": _bad(tmp_path, "nonnum.csv", "Step,r - train/CE loss\n0,abc\n"),
             "wandb": str(FIXTURES / "wandb-curves.csv")}
    argv = ["worth", *[a.format(**files) for a in args]]
    if "-1" in args:  # argparse's own check of the value: it exits 2 itself
        with pytest.raises(SystemExit) as stopped:
            main(argv)
        assert stopped.value.code == 2
    else:
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1, err


def test_impl_picks_the_implementation_the_curves_were_trained_with(capsys):
    doc = _worth_json(capsys, "--losses", str(FIXTURES / "wandb-curves.csv"), "--target-loss", str(TARGET), *WANDB_MAP,
                      "--throughput", *H100, "--impl", "capacity")
    rows = {r["model"]: r for r in doc["rows"]}
    assert "capacity" in rows["moe_1b"]["throughput_from"] and rows["moe_1b"]["tokens_per_s"] < 140462
    assert "dense @" in rows["dense_135m"]["throughput_from"]  # a dense model has no MoE implementation to pick


def test_a_toml_mapping_file_and_explain_csv_throughput(tmp_path, capsys):
    mapping = tmp_path / "runs.toml"
    mapping.write_text('[runs]\n"moe_1b-run1" = "moe_1b"\n"moe_1b-run1-resume" = "smallmoe_1B"\n'
                       '"dense_135m-lr3e-3" = "dense_135m"\n')
    doc = _worth_json(capsys, "--losses", str(FIXTURES / "wandb-curves.csv"), "--target-loss", str(TARGET),
                      "--map", str(mapping), "--throughput", str(ROOT / "results/examples/h100-measured.csv"),
                      "--impl", "capacity")
    rows = {r["model"]: r for r in doc["rows"]}  # the OLMo-core name maps to the zoo model
    assert rows["moe_1b"]["tokens_per_s"] == 134987 and "h100-measured.csv:3" in rows["moe_1b"]["throughput_from"]
    assert rows["dense_135m"]["tokens_per_s"] == 210594


@pytest.mark.parametrize(("text", "needle"), [
    ('"moe_1b-run1" = 3\n', "is not a string"),
    ("moe_1b-run1 = \n", "not valid TOML"),
])
def test_a_bad_mapping_file_is_one_line(tmp_path, capsys, text, needle):
    mapping = tmp_path / "runs.toml"
    mapping.write_text(text)
    assert main(["worth", "--losses", str(FIXTURES / "wandb-curves.csv"), "--target-loss", "3", "--gpu", "h100",
                 "--map", str(mapping)]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1, err
