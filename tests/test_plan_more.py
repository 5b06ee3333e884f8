"""`tpsbench plan` beyond one GPU and one law file: FSDP over --gpus for a model no single GPU holds (hours on all
of them, cost of all), and a law fitted to --losses in the same command, saying what it fitted and held."""

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
