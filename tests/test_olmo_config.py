"""OLMo-core configs as models: the reader's counts held to OLMo-core's own (parameters, active parameters,
``num_flops_per_token`` of the model built on the meta device) for every zoo model and for configs that vary each
field, and every field it cannot represent refused in one line."""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any

import pytest
from olmo_configs import EXAMPLE, FIXTURE, GENERATED, committed, experiment, olmo_core_config
from zoo_counts import SHAPE_FIELDS

from tpsbench.cli import main
from tpsbench.costmodel.step import olmo_flops_per_token
from tpsbench.models import get_model, zoo_models
from tpsbench.stacks.olmo_core import StackError, num_flops_per_token, olmo_config, require_olmo_core

try:
    require_olmo_core()
    HAVE_OLMO_CORE = True
except StackError:
    HAVE_OLMO_CORE = False
needs_olmo_core = pytest.mark.skipif(not HAVE_OLMO_CORE, reason="ai2-olmo-core not installed (the olmo extra)")


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():  # OLMo-core warns that grouped_gemm and transformer_engine are missing
        warnings.simplefilter("ignore")
        yield


def _write(path: Path, doc: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def _shape(spec) -> dict[str, object]:
    return {f: getattr(spec, f) for f in SHAPE_FIELDS if f != "seq_len"}


@needs_olmo_core
@pytest.mark.parametrize("case", sorted(GENERATED))
def test_a_generated_config_counts_what_olmo_core_counts(case, tmp_path):
    config = olmo_core_config(GENERATED[case])
    spec = get_model(str(_write(tmp_path / f"{case}.json", config.as_config_dict())))
    assert spec.name == case
    assert (spec.total_params, spec.active_params) == (config.num_params, config.num_active_params)
    for seq in (256, 257):  # an odd length too: OLMo-core divides the causal pairs as integers
        assert olmo_flops_per_token(spec, seq) == num_flops_per_token(config, seq), seq
    moe = config.block.feed_forward_moe
    assert (spec.moe is None) == (moe is None)
    if moe is not None:  # the MoE type the user trained with decides the default implementation
        assert spec.trained_impl == ("dropless" if moe.name == "dropless" else "capacity")
    # and the OLMo-core stack, which builds a model from a spec, builds one with the same counts
    rebuilt = olmo_config(spec)
    assert (rebuilt.num_params, rebuilt.num_active_params) == (config.num_params, config.num_active_params)


@needs_olmo_core
@pytest.mark.parametrize("name", sorted(zoo_models()))
def test_every_zoo_model_written_by_olmo_core_reads_back_as_itself(name, tmp_path):
    zoo = zoo_models()[name]
    config = olmo_config(zoo)
    spec = get_model(str(_write(tmp_path / "config.json", config.as_config_dict())))
    assert _shape(spec) == _shape(zoo)
    assert spec.total_params == zoo.total_params == config.num_params
    assert spec.active_params == zoo.active_params == config.num_active_params


@needs_olmo_core
def test_the_committed_configs_are_what_olmo_core_writes():
    for path, doc in committed().items():
        assert json.loads(path.read_text()) == json.loads(json.dumps(doc)), path


def test_an_experiment_config_names_the_run_and_gives_its_sequence_length(tmp_path):
    spec = get_model(str(FIXTURE))
    assert (spec.name, spec.seq_len) == ("moe-run", 2048)
    assert spec.moe is not None and spec.moe.capacity_factor is None and spec.moe.shared_hidden == 512
    assert dict(spec.sources)["model.seq_len"].endswith("dataset.sequence_length")
    doc = json.loads(FIXTURE.read_text())
    del doc["run_name"], doc["dataset"]
    doc["train_module"] = {"max_sequence_length": 8192}
    other = get_model(str(_write(tmp_path / "run-7" / "config.json", doc)))  # named after its folder
    assert (other.name, other.seq_len) == ("run-7", 8192)
    bare = get_model(str(_write(tmp_path / "bare.json", doc["model"])))  # a TransformerConfig dict alone
    assert (bare.name, bare.seq_len, bare.total_params) == ("bare", 2048, spec.total_params)


def test_predict_reads_the_worked_example_as_a_dropless_moe(capsys):
    assert main(["predict", "--gpu", "h100_sxm", "--model", str(EXAMPLE), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"]["name"] == "moe-64e-run"
    assert {p["impl"] for p in out["predictions"]} == {"dropless"}


def _mutated(edit) -> dict[str, Any]:
    doc = json.loads(FIXTURE.read_text())
    edit(doc["model"])
    return doc


def _set(path: str, value: object):
    def edit(model: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = model
        for key in parents:
            node = node[key]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = copy.deepcopy(value)
    return edit


class _Deleted:
    def __repr__(self) -> str:
        return "<deleted>"


_DELETE = _Deleted()
ATT = "block.sequence_mixer"
MOE = "block.feed_forward_moe"
REFUSED = [  # (what is changed, value, what the one line must name)
    (f"{ATT}.sliding_window", {"pattern": [4096, -1]}, f"model.{ATT}.sliding_window"),
    ("block.name", "moe_hybrid", "model.block.name: 'moe_hybrid' is not modelled"),
    (f"{MOE}.name", "expert_choice", f"model.{MOE}.name: 'expert_choice'"),
    (f"{ATT}.bias", True, f"model.{ATT}.bias"),
    (f"{ATT}.bias", _DELETE, f"model.{ATT}.bias: None"),
    ("block.layer_norm.name", "default", "model.block.layer_norm.name: 'default'"),
    ("embedding_norm", {"name": "rms", "eps": 1e-5, "bias": False}, "model.embedding_norm"),
    ("block_pattern", ["a", "b"], "model.block_pattern"),
    (f"{ATT}.rope.partial_rotary_factor", 0.5, "partial RoPE"),
    (f"{ATT}.rope", _DELETE, f"model.{ATT}.rope: missing"),
    (f"{MOE}.router.gating_function", "sigmoid", "gating_function: 'sigmoid'"),
    (f"{MOE}.shared_mlp.bias", True, f"model.{MOE}.shared_mlp.bias"),
    ("lm_head.layer_norm", None, "model.lm_head.layer_norm: missing"),
    (f"{ATT}.gate", {"name": "sigmoid"}, f"model.{ATT}.gate"),
    (f"{ATT}.qk_norm.eps", 1e-3, "different epsilons"),
    (f"{MOE}.latent_moe", {"latent_size": 128}, f"model.{MOE}.latent_moe"),
    ("d_model", 0, "d_model = 0: must be positive"),
    ("d_model", "big", "model.d_model: expected int"),
    (f"{ATT}.n_heads", 7, "n_heads = 7: does not divide d_model = 512"),
    (f"{MOE}.router.top_k", 17, "moe.top_k = 17: must be in [1, num_experts = 16]"),
    ("vocab_size", 0, "vocab_size = 0"),
    ("block", {"dense": {"name": "default"}, "moe": {"name": "moe"}}, "several named block configs"),
    ("tie_word_embeddings", "yes", "model.tie_word_embeddings: expected bool"),
]


@pytest.mark.parametrize(("key", "value", "named"), REFUSED, ids=[f"{k}={v!r}"[:50] for k, v, _ in REFUSED])
def test_a_field_the_model_cannot_represent_is_one_line(key, value, named, tmp_path, capsys):
    path = _write(tmp_path / "config.json", _mutated(_set(key, value)))
    assert main(["predict", "--gpu", "h100", "--model", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and named in err, err


def test_a_json_that_is_no_model_config_is_one_line(tmp_path, capsys):
    for name, text in (("list.json", "[1, 2]"), ("other.json", '{"trainer": {}}'), ("broken.json", "{")):
        path = tmp_path / name
        path.write_text(text)
        assert main(["predict", "--gpu", "h100", "--model", str(path)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(path) in err, err
    assert "neither an OLMo-core config" in main_error(tmp_path / "other.json", capsys)


def main_error(path: Path, capsys) -> str:
    assert main(["predict", "--gpu", "h100", "--model", str(path)]) == 2
    return capsys.readouterr().err


def test_a_tiny_config_runs_on_the_cpu_and_compares_without_its_file(tmp_path, capsys, monkeypatch):
    """A run records the whole spec: its file compares after the config is gone, TPSBENCH_MODELS unset."""
    if not HAVE_OLMO_CORE:
        pytest.skip("the config is written by OLMo-core")
    monkeypatch.delenv("TPSBENCH_MODELS", raising=False)
    config = olmo_core_config({"d_model": 64, "n_layers": 2, "n_heads": 4}, vocab_size=512)
    path = _write(tmp_path / "tiny-run" / "config.json", experiment("tiny-run", config, 64))
    out = tmp_path / "r.json"
    assert main(["run", "--device", "cpu", "--model", str(path), "--mode", "e2e", "--batch", "128", "--reps", "2",
                 "--min-time", "0.001", "--out", str(out)]) == 0
    path.unlink()
    from tpsbench.models.registry import forget_remembered

    forget_remembered()
    capsys.readouterr()
    assert main(["compare", str(out), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["throughput"]
    assert rows and all(r["point"].startswith("tiny-run ") for r in rows)
    assert all(r["per_gpu"]["cpu"]["tokens_per_s"] > 0 for r in rows)


@needs_olmo_core
def test_the_olmo_core_stack_builds_the_model_of_a_config_and_runs_it(tmp_path):
    """``run --stack olmo-core`` on a config: OLMo-core's own training step of the model the config describes
    (grouped-query attention, head-wise qk-norm and tied embeddings included), recorded with its counts."""
    config = olmo_core_config(GENERATED["dense_head_qk_norm_tied"], vocab_size=512)
    path = _write(tmp_path / "gqa-run" / "config.json", experiment("gqa-run", config, 64))
    out = tmp_path / "r.json"
    assert main(["run", "--device", "cpu", "--stack", "olmo-core", "--model", str(path), "--mode", "e2e",
                 "--batch", "128", "--reps", "2", "--min-time", "0.001", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["config"]["model_spec"]["tie_embeddings"] and doc["config"]["model_spec"]["n_kv_heads"] == 2
    assert doc["config"]["stack"] == "olmo-core" and any(p["status"] == "ok" for p in doc["points"])
