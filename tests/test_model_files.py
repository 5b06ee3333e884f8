"""Model files: the zoo's (every value cited), the user's (TPSBENCH_MODELS, --model PATH.toml), and every bad one
refused in one line that names the file and the key (exit 2)."""

from __future__ import annotations

import json
import tomllib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tpsbench.cli import main
from tpsbench.models import ModelError, get_model, zoo_models
from tpsbench.models.fields import FIELDS, Table
from tpsbench.models.model_file import spec_from_document
from tpsbench.models.registry import zoo_dir

MOE = """name = "{name}"

[model]
d_model = 256
n_layers = 4
n_heads = 4
vocab_size = 1024

[moe]
num_experts = 16
top_k = 2
expert_hidden = 128
type = "dropless"
"""
DENSE = """name = "{name}"

[model]
d_model = 256
n_layers = 4
n_heads = 4
vocab_size = 1024
ffn_hidden = 512
"""


def test_every_zoo_value_says_where_it_comes_from():
    for path in sorted(zoo_dir().glob("*.toml")):
        doc = tomllib.loads(path.read_text())
        for table in (Table.MODEL, Table.MOE):
            for key, item in doc.get(str(table), {}).items():
                assert isinstance(item, dict) and item.get("source"), f"{path.name}: [{table}] {key} has no source"


def test_zoo_files_are_the_twelve_models_named_after_their_files():
    specs = zoo_models()
    assert len(specs) == 12 and all(spec.origin == "zoo" for spec in specs.values())
    assert sorted(specs) == sorted(p.stem for p in zoo_dir().glob("*.toml"))


def test_a_user_file_counts_like_the_same_model_written_by_hand(tmp_path):
    path = tmp_path / "my_moe.toml"
    path.write_text(MOE.format(name="my_moe"))
    spec = get_model(str(path))
    # attention 4*256^2 + norms 2*256 + router 256*16 + experts 3*256*128*16 per layer; embedding and head 2*1024*256
    # plus the final norm 256
    per_layer = 4 * 256**2 + 2 * 256 + 256 * 16 + 3 * 256 * 128 * 16
    assert spec.total_params == 4 * per_layer + 2 * 1024 * 256 + 256
    assert spec.active_params == spec.total_params - 4 * 3 * 256 * 128 * 14
    assert spec.moe is not None and spec.moe.capacity_factor is None  # dropless
    assert spec.origin == str(path)


def test_a_user_folder_adds_its_models_and_list_shows_where_from(tmp_path, monkeypatch, capsys):
    (tmp_path / "wide.toml").write_text(DENSE.format(name="wide"))
    monkeypatch.setenv("TPSBENCH_MODELS", str(tmp_path))
    assert main(["list", "models", "--json"]) == 0
    origins = {m["name"]: m["origin"] for m in json.loads(capsys.readouterr().out)}
    assert origins["wide"] == str(tmp_path / "wide.toml") and origins["moe_1b"] == "zoo"
    assert get_model("wide").ffn_hidden == 512


def test_a_user_file_may_repeat_a_zoo_model_exactly(tmp_path, monkeypatch):
    (tmp_path / "moe_1b.toml").write_text((zoo_dir() / "moe_1b.toml").read_text())
    monkeypatch.setenv("TPSBENCH_MODELS", str(tmp_path))
    assert get_model("moe_1b") == zoo_models()["moe_1b"]


def _one_line(capsys, code: int, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def _predict(path) -> list[str]:
    return ["predict", "--gpu", "h100", "--model", str(path), "--batch", "4096"]


def test_predict_on_a_user_file(tmp_path, capsys):
    path = tmp_path / "wide.toml"
    path.write_text(DENSE.format(name="wide"))
    assert main([*_predict(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"]["total_params"] == get_model(str(path)).total_params


BAD = [
    # (what is changed, the line that replaces or is added, words the error must say)
    ("missing key", ("n_heads = 4\n", ""), ["[model] missing key 'n_heads'"]),
    ("unknown key", ("n_heads = 4\n", "n_heads = 4\nn_head = 4\n"), ["unknown key(s) 'n_head'"]),
    ("zero size", ("n_layers = 4", "n_layers = 0"), ["n_layers = 0: must be positive"]),
    ("negative size", ("d_model = 256", "d_model = -256"), ["d_model = -256: must be positive"]),
    ("zero vocab", ("vocab_size = 1024", "vocab_size = 0"), ["vocab_size = 0: must be positive"]),
    ("heads do not divide d_model", ("n_heads = 4", "n_heads = 3"), ["n_heads = 3: does not divide d_model"]),
    ("kv heads do not divide heads", ("n_heads = 4", "n_heads = 4\nn_kv_heads = 3"),
     ["n_kv_heads = 3: does not divide n_heads = 4"]),
    ("top_k above experts", ("top_k = 2", "top_k = 17"), ["moe.top_k = 17: must be in [1, num_experts = 16]"]),
    ("top_k below one", ("top_k = 2", "top_k = 0"), ["moe.top_k = 0"]),
    ("expert size with no experts", ("num_experts = 16", "num_experts = 0"), ["moe.num_experts = 0"]),
    ("dense and moe at once", ("vocab_size = 1024", "vocab_size = 1024\nffn_hidden = 512"), ["exactly one of"]),
    ("wrong type", ("d_model = 256", 'd_model = "256"'), ["[model] d_model = '256': expected an integer"]),
    ("bool for a size", ("d_model = 256", "d_model = true"), ["expected an integer"]),
    ("unknown moe type", ('type = "dropless"', 'type = "sparse"'), ['expected "capacity" or "dropless"']),
    ("capacity without factor", ('type = "dropless"', 'type = "capacity"'), ["needs capacity_factor"]),
    ("dropless with a factor", ('type = "dropless"', 'type = "dropless"\ncapacity_factor = 1.2'),
     ["a dropless MoE has none"]),
    ("value table without value", ("d_model = 256", 'd_model = { source = "x" }'), ["missing 'value'"]),
    ("not TOML", ("[model]", "[model"), ["not valid TOML"]),
    ("bad name", ('name = "bad"', 'name = "a/b"'), ["key 'name'"]),
]


@pytest.mark.parametrize(("case", "edit", "needles"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_model_file_is_one_line_naming_file_and_key(case, edit, needles, tmp_path, capsys):
    path = tmp_path / "bad.toml"
    text = MOE.format(name="bad")
    assert edit[0] in text, case
    path.write_text(text.replace(edit[0], edit[1], 1))
    _one_line(capsys, main(_predict(path)), str(path), *needles)


def test_a_missing_model_file_is_one_line(tmp_path, capsys):
    _one_line(capsys, main(_predict(tmp_path / "nowhere.toml")), "no such file")


def test_two_user_folders_defining_one_name_differently_are_refused(tmp_path, monkeypatch, capsys):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    (first / "mine.toml").write_text(DENSE.format(name="mine"))
    (second / "mine.toml").write_text(DENSE.format(name="mine").replace("ffn_hidden = 512", "ffn_hidden = 768"))
    monkeypatch.setenv("TPSBENCH_MODELS", f"{first}:{second}")
    _one_line(capsys, main(["predict", "--gpu", "h100", "--model", "mine"]), str(second / "mine.toml"),
              f"already defined, differently, by {first / 'mine.toml'}")


def test_a_user_file_redefining_a_zoo_model_is_refused(tmp_path, monkeypatch, capsys):
    (tmp_path / "moe_1b.toml").write_text(MOE.format(name="moe_1b"))
    monkeypatch.setenv("TPSBENCH_MODELS", str(tmp_path))
    _one_line(capsys, main(["list", "models"]), "already defined, differently, by zoo")


def test_a_file_in_a_folder_is_named_after_its_model(tmp_path, monkeypatch, capsys):
    (tmp_path / "other.toml").write_text(DENSE.format(name="mine"))
    monkeypatch.setenv("TPSBENCH_MODELS", str(tmp_path))
    _one_line(capsys, main(["list", "models"]), "rename the file to mine.toml")


def test_a_models_folder_that_is_not_one_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TPSBENCH_MODELS", str(tmp_path / "missing"))
    _one_line(capsys, main(["list", "models"]), "TPSBENCH_MODELS", "is not a folder")


_VALUES = st.one_of(st.integers(-3, 5000), st.floats(allow_nan=True), st.booleans(), st.text(max_size=5),
                    st.none(), st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=6),
                                                                                    st.integers(), max_size=2))
_MODEL_KEYS = [f.key for f in FIELDS if f.table is Table.MODEL]
_MOE_KEYS = [f.key for f in FIELDS if f.table is Table.MOE]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=st.dictionaries(st.sampled_from([*_MODEL_KEYS, "extra"]), _VALUES, max_size=8),
       moe=st.one_of(st.none(), st.dictionaries(st.sampled_from([*_MOE_KEYS, "extra"]), _VALUES, max_size=6)),
       top=st.dictionaries(st.sampled_from(["name", "note", "source", "olmo_core", "other"]), _VALUES, max_size=3))
def test_any_document_is_a_model_or_a_model_error(model, moe, top):
    doc = {"name": "m", **top, "model": model, **({} if moe is None else {"moe": moe})}
    try:
        spec = spec_from_document(doc, "f.toml", "f.toml")
    except ModelError as exc:
        assert str(exc).startswith("f.toml: ") and "\n" not in str(exc)
    else:
        assert spec.total_params > 0 and spec.active_params <= spec.total_params


def test_the_docs_table_lists_every_key_as_the_parser_reads_it():
    from pathlib import Path

    from tpsbench.models.model_file import described_keys

    page = (Path(__file__).resolve().parents[1] / "docs" / "models.md").read_text()
    for table, key, kind, meaning in described_keys():
        assert f"| [{table}] | `{key}` | {kind} | {meaning} |" in page, key
