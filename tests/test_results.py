"""Results files: atomic, schema-versioned, one pandas row per point."""

import json

import pytest

from tpsbench.results import SCHEMA, ResultsError, ResultsWriter, load_dataframe, load_results


def _writer(path):
    return ResultsWriter(path, config={"model": "m"}, machine={"gpu_name": None, "profile": None},
                         git_commit="abc", tool_version="0")


def test_every_add_leaves_a_valid_file(tmp_path):
    path = tmp_path / "r.json"
    w = _writer(path)
    assert load_results(path)["points"] == []
    w.add({"status": "ok", "kind": "micro", "stats": {"median": 1.0}})
    assert len(json.loads(path.read_text())["points"]) == 1
    w.add({"status": "oom", "kind": "e2e", "stats": None})
    w.finish("complete")
    doc = load_results(path)
    assert doc["schema"] == SCHEMA and doc["status"] == "complete" and len(doc["points"]) == 2
    assert not list(tmp_path.glob(".*.tmp"))  # no temp files left behind


def test_dataframe_one_row_per_point(tmp_path):
    path = tmp_path / "r.json"
    w = _writer(path)
    for i in range(3):
        w.add({"status": "ok", "kind": "micro", "tokens": 64 * (i + 1), "stats": {"median": 0.5 * i}})
    df = load_dataframe(path)
    assert len(df) == 3
    assert list(df["tokens"]) == [64, 128, 192]
    assert list(df["stats.median"]) == [0.0, 0.5, 1.0]
    assert set(df["run.model"]) == {"m"}


def test_bad_status_rejected(tmp_path):
    w = _writer(tmp_path / "r.json")
    with pytest.raises(ValueError, match="status"):
        w.add({"status": "great"})


def test_not_a_results_file(tmp_path):
    p = tmp_path / "x.json"
    p.write_text('{"schema": "other"}')
    with pytest.raises(ResultsError, match="schema"):
        load_results(p)


def test_non_finite_numbers_become_null(tmp_path):
    w = _writer(tmp_path / "r.json")
    w.add({"status": "ok", "derived": {"tokens_per_s": float("inf"), "x": [1.0, float("nan")]}})
    p = load_results(tmp_path / "r.json")["points"][0]
    assert p["derived"] == {"tokens_per_s": None, "x": [1.0, None]}
