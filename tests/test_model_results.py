"""A results file records its whole model: a run of the user's own model compares, explains and plots where the
model file is not, every zoo model survives the round trip, and files written before version 3 read as the zoo's."""

from __future__ import annotations

import json

import pytest
from committed import COMMITTED_RUNS
from results_factory import doc, point

from tpsbench.cli import main
from tpsbench.models import ModelError, get_model, zoo_models
from tpsbench.models.registry import forget_remembered
from tpsbench.results import load_results
from tpsbench.results.io import parse_results
from tpsbench.results.model_record import model_record, model_spec
from tpsbench.results.points import load_points
from tpsbench.results.schema import SCHEMA, SCHEMA_V2
from tpsbench.results.typed import from_dict, to_dict
from tpsbench.results.upgrade import upgrade

MINE = """name = "mine"
source = "a test's own model"

[model]
d_model = 64
n_layers = 2
n_heads = 4
vocab_size = 512
seq_len = 64

[moe]
num_experts = 4
top_k = 2
expert_hidden = 32
type = "capacity"
capacity_factor = 1.5
"""


@pytest.mark.parametrize("name", sorted(zoo_models()))
def test_every_zoo_model_survives_the_record(name):
    spec = zoo_models()[name]
    record = from_dict(type(model_record(spec)), json.loads(json.dumps(to_dict(model_record(spec)))))
    back = model_spec(record, "config.model_spec")
    assert back == spec and back.origin == spec.origin and back.total_params == spec.total_params


@pytest.fixture(scope="module")
def run_of_my_model(tmp_path_factory):
    """One CPU run of a model known only from its file (the fixture's folder is gone from the search path after)."""
    folder = tmp_path_factory.mktemp("mine")
    path = folder / "mine.toml"
    path.write_text(MINE)
    out = folder / "r.json"
    assert main(["run", "--device", "cpu", "--model", str(path), "--impl", "capacity", "--mode", "e2e", "--reps", "2",
                 "--min-time", "0.001", "--out", str(out)]) == 0
    forget_remembered()
    path.unlink()  # the model exists now only in the results file
    return out


def test_the_run_records_the_whole_model(run_of_my_model):
    cfg = load_results(run_of_my_model).config
    assert cfg.model == "mine" and cfg.model_spec.moe is not None and cfg.model_spec.moe.capacity_factor == 1.5
    assert cfg.model_spec.origin.endswith("mine.toml")


@pytest.mark.parametrize("command", [["compare"], ["compare", "--json"]])
def test_analyses_read_a_file_of_a_model_they_never_saw(run_of_my_model, command, monkeypatch, capsys):
    monkeypatch.delenv("TPSBENCH_MODELS", raising=False)
    assert main([*command, str(run_of_my_model)]) == 0
    assert "mine" in capsys.readouterr().out


def test_validate_estimates_a_gpu_run_of_a_model_it_never_saw(tmp_path, capsys):
    """A GPU run of the user's model (synthetic numbers): validate costs it from the recorded model."""
    path = tmp_path / "mine.toml"
    path.write_text(MINE.replace("seq_len = 64", "seq_len = 2048"))
    spec = get_model(str(path))
    forget_remembered()
    path.unlink()
    data = upgrade(doc("moe_1b", [point(impl="capacity", median=0.01)]))
    data["config"]["model"] = "mine"
    data["config"]["model_spec"] = to_dict(model_record(spec))
    f = tmp_path / "r.json"
    f.write_text(json.dumps(data))
    assert main(["validate", str(f), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "mine" in json.dumps(out)
    assert not any(p["in_sample"] for p in out["points"]) and "in-sample" not in out["tables"]["h100_sxm"]


def test_plot_reads_it_too(run_of_my_model, tmp_path, monkeypatch):
    monkeypatch.delenv("TPSBENCH_MODELS", raising=False)
    assert main(["plot", str(run_of_my_model), "-o", str(tmp_path / "p.png")]) == 0


def test_points_find_the_recorded_model_by_name(run_of_my_model):
    (p,) = load_points([run_of_my_model])
    assert get_model(p.key.model).moe is not None and get_model("mine").moe.capacity_factor == 1.5


def test_a_version_2_file_reads_as_the_zoos_model():
    data = json.loads(COMMITTED_RUNS[0].read_text())
    older = upgrade(data)
    older.pop("schema")
    older["config"].pop("model_spec")
    doc_v3 = upgrade({"schema": SCHEMA_V2, **older})
    assert doc_v3["schema"] == SCHEMA
    name = doc_v3["config"]["model"]
    assert model_spec(parse_results(doc_v3, "f").config.model_spec, "x") == zoo_models()[name]


def test_a_version_2_file_of_a_model_not_in_the_zoo_is_one_error(capsys, tmp_path):
    data = upgrade(doc("moe_1b", [point()]))
    data["schema"] = SCHEMA_V2
    data["config"].pop("model_spec")
    data["config"]["model"] = "nobody"
    f = tmp_path / "r.json"
    f.write_text(json.dumps(data))
    assert main(["compare", str(f)]) == 2
    err = capsys.readouterr().err
    assert "a tpsbench.results/2 file names a zoo model; found 'nobody'" in err and len(err.strip().splitlines()) == 1


def test_a_file_whose_model_differs_from_the_zoos_of_that_name_is_refused(tmp_path, capsys):
    data = upgrade(doc("moe_1b", [point()]))
    data["config"]["model_spec"]["n_layers"] = 3
    f = tmp_path / "r.json"
    f.write_text(json.dumps(data))
    assert main(["compare", str(f)]) == 2
    err = capsys.readouterr().err
    assert "model 'moe_1b' differs from the model of that name in zoo" in err and len(err.strip().splitlines()) == 1


def test_a_recorded_model_no_model_can_be_is_a_schema_error(tmp_path, capsys):
    data = upgrade(doc("moe_1b", [point()]))
    data["config"]["model_spec"]["n_heads"] = 7
    f = tmp_path / "r.json"
    f.write_text(json.dumps(data))
    assert main(["compare", str(f)]) == 2
    assert "config.model_spec" in capsys.readouterr().err
    with pytest.raises(ModelError):
        get_model("no_such_model.toml")


def test_worth_maps_a_run_to_a_model_file(tmp_path, capsys):
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    path = tmp_path / "my_dense.toml"
    path.write_text((root / "models/dense_135m.toml").read_text().replace('name = "dense_135m"', 'name = "my_dense"'))
    assert main(["worth", "--losses", str(root / "tests/fixtures/wandb-curves.csv"), "--target-loss", "3.45",
                 "--map", f"dense_135m-lr3e-3={path}", "--gpu", "h100", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"my_dense"' in out


def test_explain_takes_a_model_file_in_its_model_column(tmp_path, capsys):
    path = tmp_path / "mine.toml"
    path.write_text(MINE.replace("seq_len = 64", "seq_len = 2048"))
    csv = tmp_path / "measured.csv"
    csv.write_text(f"model,gpu,tokens_per_s,tokens,impl,global_tokens\n{path},h100_sxm,50000,32768,capacity,32768\n")
    assert main(["explain", "--measured", str(csv), "--json"]) == 0
    assert '"mine"' in capsys.readouterr().out


def test_check_reads_a_file_of_a_model_it_never_saw(run_of_my_model, monkeypatch, capsys):
    monkeypatch.delenv("TPSBENCH_MODELS", raising=False)
    assert main(["check", "--baseline", str(run_of_my_model), "--current", str(run_of_my_model)]) == 0
    assert "mine" in capsys.readouterr().out
