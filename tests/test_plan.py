"""`tpsbench plan` end to end on the fixture's law: candidates ranked by hours to a target loss (or by the loss
within hours or a budget), intervals from the law's resamples and the expected model's uncertainty, and a marked
row, never a number, where the law cannot cover a candidate, no GPU holds it, or the target is unreachable; FSDP
over --gpus for a model no single GPU holds; a law fitted to --losses in the same command."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from tpsbench.cli import main

FIXTURE = "tests/fixtures/scaling-curves.csv"


def _run(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    return code, out.getvalue()


@pytest.fixture(scope="module")
def law(tmp_path_factory):
    path = tmp_path_factory.mktemp("plan") / "law.toml"
    code, _ = _run(["scaling", "fit", "--losses", FIXTURE, "--map", "dense_271m-resume=dense_271m",
                    "--resamples", "60", "-o", str(path)])
    assert code == 0
    return str(path)


def test_candidates_are_ranked_by_hours_to_the_target_with_intervals(law):
    code, out = _run(["plan", "--law", law, "--candidates", "dense_135m", "dense_271m", "moe_1b", "--gpu", "h100_sxm",
                      "--target-loss", "3.0", "--price", "h100_sxm=2.5", "--json"])
    assert code == 0
    doc = json.loads(out)
    rows = doc["rows"]
    numbered = [r for r in rows if r["unavailable"] is None]
    hours = [r["hours"] for r in numbered]
    assert hours == sorted(hours) and len(numbered) == 2
    for r in numbered:
        low, high = r["hours_interval"]
        assert low < r["hours"] < high and r["cost"] == pytest.approx(2.5 * r["hours"])
        assert r["tokens"] == pytest.approx(r["throughput"]["tokens_per_s"] * r["hours"] * 3600)
    [moe] = [r for r in rows if r["model"] == "moe_1b"]
    assert moe["hours"] is None and "cannot cover an MoE" in moe["unavailable"]
    [line] = doc["answers"]
    assert line.startswith(f"on h100_sxm, {numbered[0]['model']} reaches loss 3 in ") and "x [" in line


def test_within_hours_the_lower_loss_ranks_first(law):
    code, out = _run(["plan", "--law", law, "--candidates", "dense_135m", "dense_1b", "--gpu", "h100_sxm",
                      "--hours", "24", "--json"])
    assert code == 0
    rows = json.loads(out)["rows"]
    assert rows[0]["loss"] <= rows[1]["loss"]
    for r in rows:
        low, high = r["loss_interval"]
        assert low <= r["loss"] <= high and r["hours"] == 24


def test_unreachable_targets_and_models_no_gpu_holds_are_marked_rows(law):
    code, out = _run(["plan", "--law", law, "--candidates", "dense_7b", "dense_135m", "--gpu", "rtx5090",
                      "--target-loss", "1.0", "--json"])
    assert code == 0
    rows = {r["model"]: r for r in json.loads(out)["rows"]}
    assert rows["dense_7b"]["unavailable"].startswith("fits no rtx5090")
    assert rows["dense_135m"]["unavailable"].startswith("unreachable") and rows["dense_135m"]["hours"] is None


def test_bad_input_is_one_line(tmp_path, capsys, law):
    assert main(["plan", "--law", law, "--candidates", "dense_135m", "--gpu", "h100_sxm", "--budget", "100"]) == 2
    assert "--budget needs a price for every GPU" in capsys.readouterr().err
    assert main(["plan", "--law", law, "--candidates", "dense_135m", "--gpu", "h100_sxm", "--hours", "5",
                 "--price", "h100_sxm=cheap"]) == 2
    assert "GPU=USD_PER_HOUR" in capsys.readouterr().err
    broken = tmp_path / "broken.toml"
    broken.write_text('form = "chinchilla"\n')
    assert main(["plan", "--law", str(broken), "--candidates", "dense_135m", "--gpu", "h100_sxm", "--hours", "5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "[coefficients]" in err


def test_pf_days_follow_the_flop_convention_the_runs_logged(tmp_path, monkeypatch):
    """The fixture's curves with a cumulative petaflops column as OLMo-core before 3.0 logged it (attention over
    the full S x S square): scaling fit finds that convention, worth names it, and plan's PF-days use it."""
    import csv

    from tpsbench.analysis.worth_inputs import OLMO_PRE3, flop_conventions
    from tpsbench.models import get_model
    from tpsbench.scaling.plan import PF_DAY

    with open(FIXTURE) as f:
        rows = list(csv.DictReader(f))
    logged = tmp_path / "logged.csv"
    with logged.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", "step", "loss", "tokens", "petaflops"])
        for r in rows:
            model = "dense_271m" if r["run"].startswith("dense_271m") else r["run"]
            per_token = flop_conventions(get_model(model), None)[OLMO_PRE3]
            w.writerow([r["run"], r["step"], r["loss"], r["tokens"], float(r["tokens"]) * per_token / 1e15])
    law = tmp_path / "law.toml"
    code, _ = _run(["scaling", "fit", "--losses", str(logged), "--map", "dense_271m-resume=dense_271m",
                    "--resamples", "20", "-o", str(law)])
    assert code == 0 and 'flop_convention = "olmo pre-3.0"' in law.read_text()
    code, out = _run(["plan", "--law", str(law), "--candidates", "dense_135m", "--gpu", "h100_sxm", "--hours", "10",
                      "--json"])
    [row] = json.loads(out)["rows"]
    assert row["pf_days"] == pytest.approx(row["tokens"] * flop_conventions(get_model("dense_135m"), None)[OLMO_PRE3]
                                           / PF_DAY)
    monkeypatch.setenv("COLUMNS", "400")  # the column's whole name on one line
    code, out = _run(["plan", "--law", str(law), "--candidates", "dense_135m", "--gpu", "h100_sxm", "--hours", "10"])
    assert "PF-days (olmo pre-3.0)" in out
    from tpsbench.analysis.worth_inputs import matched_convention

    conventions = flop_conventions(get_model("dense_135m"), None)
    assert matched_convention(conventions, conventions[OLMO_PRE3]) == (OLMO_PRE3, 1.0)  # what worth's table names
    assert matched_convention(conventions, 1.5 * conventions["olmo"])[0] is None  # a wrong mapping matches none


def test_the_published_joint_law_plans_dense_and_moe_candidates_and_flags_what_it_did_not_see():
    code, out = _run(["plan", "--published", "ludziejewski2025", "--candidates", "dense_1b", "moe_1b",
                      "moe_1b_a390m", "--gpu", "h100_sxm", "--target-loss", "2.9", "--json"])
    assert code == 0
    rows = {r["model"]: r for r in json.loads(out)["rows"]}
    assert all(r["hours"] is not None for r in rows.values())
    assert "E = 256 outside the fitted 1-32 experts" in rows["moe_1b"]["flags"]
    assert any("top-4 routing" in f for f in rows["moe_1b_a390m"]["flags"])
    from tpsbench.models import get_model
    assert rows["moe_1b"]["n"] == get_model("moe_1b").active_params  # N: active parameters with embeddings
    code, out = _run(["plan", "--published", "besiroglu2024", "--candidates", "moe_1b", "--gpu", "h100_sxm",
                      "--target-loss", "2.9", "--json"])
    [row] = json.loads(out)["rows"]
    assert "cannot cover an MoE" in row["unavailable"] and "ludziejewski2025" in row["unavailable"]


def test_the_plot_and_the_markdown_are_written_and_a_bad_plot_name_is_one_line(law, tmp_path, capsys):
    png, md = tmp_path / "plan.png", tmp_path / "plan.md"
    code, out = _run(["plan", "--law", law, "--candidates", "dense_135m", "dense_271m", "moe_1b", "--gpu", "h100_sxm",
                      "rtx5090", "--target-loss", "3.0", "--losses", FIXTURE, "--map", "dense_271m-resume=dense_271m",
                      "-o", str(png), "--markdown", str(md)])
    assert f"plot: {png}" in out.replace("\n", "")
    assert code == 0 and png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 20_000
    text = md.read_text()
    assert "| # | model |" in text and "- on h100_sxm, " in text and "cannot cover an MoE" in text
    assert main(["plan", "--law", law, "--candidates", "dense_135m", "--gpu", "h100_sxm", "--hours", "5",
                 "-o", str(tmp_path / "plan.txt")]) == 2
    assert "give a file ending in" in capsys.readouterr().err


def test_worth_with_a_law_shows_both_answers_and_says_which_answered(law, tmp_path):
    one = tmp_path / "one.csv"  # one model's curve: worth's own bootstrap per curve is what takes the time
    with open(FIXTURE) as f:
        one.write_text("".join(line for i, line in enumerate(f) if i == 0 or line.startswith("dense_135m,")))
    code, out = _run(["worth", "--losses", str(one), "--target-loss", "3.0", "--gpu", "h100_sxm", "--law", law,
                      "--json"])
    assert code == 0
    rows = {r["model"]: r for r in json.loads(out)["law"]}
    assert set(rows) == {"dense_135m"}
    for r in rows.values():  # the fixture was drawn from a law of this form: the two agree
        assert r["answered_by"] == "both" and r["law_tokens"] == pytest.approx(r["fit_tokens"], rel=0.10)
        low, high = r["law_interval"]
        assert low <= r["law_tokens"] <= high


def test_worth_law_marks_an_moe_the_dense_law_cannot_cover():
    from tpsbench.analysis.worth_inputs import ModelCurve
    from tpsbench.models import get_model
    from tpsbench.scaling.forms import BESIROGLU_2024, CHINCHILLA
    from tpsbench.scaling.plan import Law
    from tpsbench.scaling.worth_law import law_tokens

    class Fit:  # the two fields law_tokens reads of a worth ModelFit
        def __init__(self, model: str) -> None:
            import numpy as np
            self.curve = ModelCurve(get_model(model), (model,), np.array([1.0]), np.array([3.0]), "tokens column",
                                    None)
            self.name, self.fitted_tokens = model, 1e9

    import numpy as np
    law = Law(CHINCHILLA, dict(BESIROGLU_2024.values), np.empty((0, 5)), "published", None, None)
    [moe, dense] = law_tokens([Fit("moe_1b"), Fit("dense_135m")], law, 2.9)
    assert moe.law_tokens is None and "cannot cover an MoE" in moe.answered_by
    assert dense.law_tokens is not None and dense.answered_by == "both"


def test_measured_tokens_per_s_replace_the_expected_ones_and_say_so(law):
    files = ["results/h100-validation/h100-dense_135m.json"]
    code, out = _run(["plan", "--law", law, "--candidates", "dense_135m", "dense_271m", "--gpu", "h100_sxm",
                      "--target-loss", "3.0", "--throughput", *files, "--json"])
    assert code == 0
    rows = {r["model"]: r for r in json.loads(out)["rows"]}
    measured, expected = rows["dense_135m"], rows["dense_271m"]
    assert measured["throughput"]["tokens_per_s"] == pytest.approx(210_594, rel=1e-3)
    assert measured["throughput"]["basis"].startswith("measured: dense @ 32,768 tokens")
    assert any(f.startswith("tokens/s measured") for f in measured["flags"])
    assert not any(f.startswith("tokens/s measured") for f in expected["flags"])
    assert measured["hours"] == pytest.approx(measured["tokens"] / (210_594 * 3600), rel=1e-3)


def test_a_model_no_gpu_holds_is_planned_on_fsdp_over_gpus_and_costs_all_of_them():
    argv = ["plan", "--published", "besiroglu2024", "--candidates", "dense_7b", "dense_135m", "--gpu", "h100_sxm",
            "--target-loss", "2.6", "--price", "h100_sxm=2.5", "--json"]
    code, out = _run(argv)
    rows = {r["model"]: r for r in json.loads(out)["rows"]}
    assert code == 0 and "plan --gpus 2" in rows["dense_7b"]["unavailable"]
    code, out = _run([*argv, "--gpus", "2"])
    doc = json.loads(out)
    rows = {r["model"]: r for r in doc["rows"]}
    big, small = rows["dense_7b"], rows["dense_135m"]
    assert code == 0 and big["throughput"]["gpus"] == 2 and small["throughput"]["gpus"] == 1
    assert big["cost"] == pytest.approx(2 * 2.5 * big["hours"]) and big["gpu_hours"] == pytest.approx(2 * big["hours"])
    assert any("FSDP over 2 GPUs" in f for f in big["flags"]) and "FSDP over 2" in big["throughput"]["basis"]
    low, high = big["hours_interval"]
    assert low < big["hours"] < high
    assert any(" on 2 GPUs, " in a for a in doc["answers"])
    assert set(small["flops"]) == {"6N", "olmo", "olmo pre-3.0", "exact"}  # FLOPs under each convention
    assert small["pf_days"] == pytest.approx(small["flops"]["6N"] / (1e15 * 86400))
    assert small["flops"]["6N"] < small["flops"]["olmo"] < small["flops"]["olmo pre-3.0"]


def test_plan_fits_the_law_to_loss_files_when_no_law_is_given(capsys):
    code, out = _run(["plan", "--losses", FIXTURE, "--map", "dense_271m-resume=dense_271m", "--resamples", "20",
                      "--candidates", "dense_1b", "dense_271m", "--gpu", "h100_sxm", "--target-loss", "3.0"])
    assert code == 0
    assert "law: chinchilla fitted to 4 runs of tests/fixtures/scaling-curves.csv (20 bootstrap resamples)" in out
    assert "fitted: E, A, B, alpha, beta" in out and "left-out runs at their last tokens: " in out
    assert main(["plan", "--candidates", "dense_1b", "--gpu", "h100_sxm", "--target-loss", "3.0"]) == 2
    assert "plan needs a law: --law FILE, --published NAME, or --losses" in capsys.readouterr().err
    assert main(["plan", "--losses", FIXTURE, "--map", "dense_271m-resume=dense_271m", "--form", "granularity",
                 "--candidates", "dense_1b", "--gpu", "h100_sxm", "--target-loss", "3.0"]) == 2
    assert "cannot cover a dense model" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["scaling-curves.csv", "scaling-moe-curves.csv"])
def test_the_scaling_fixtures_are_what_their_generator_writes(name, tmp_path, monkeypatch):
    """The committed curves (the README's plan and the tests read them) come from the seeded generator."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("make_scaling_curves", "tests/fixtures/make_scaling_curves.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    monkeypatch.setattr(gen, "HERE", tmp_path)
    gen.main()
    assert (tmp_path / name).read_text() == Path("tests/fixtures", name).read_text()


def test_an_moe_plans_with_the_fastest_implementation_computing_what_it_trains_with():
    from tpsbench.models import get_model
    from tpsbench.profiles import load_profile
    from tpsbench.scaling.plan import Throughput, impl_throughput, implementations, throughput

    dropless, h100 = get_model("olmoe_1b_7b:experts=20"), load_profile("h100_sxm")
    assert set(implementations(dropless)) == {"loop", "grouped", "triton"}
    assert implementations(get_model("moe_1b")) == ["capacity"]  # token dropping changes the loss: only itself
    each = [impl_throughput(dropless, i, h100, 1) for i in implementations(dropless)]
    best = throughput(dropless, h100)
    assert isinstance(best, Throughput) and best.impl in implementations(dropless)
    assert best.tokens_per_s == max(t.tokens_per_s for t in each if isinstance(t, Throughput))
    assert f"MoE implementation {best.impl}" in best.basis
