"""Results files: the typed schema (every committed file loads, version 1 upgraded, no number changed), atomic
writes with the user's umask, one pandas row per point, and errors that name the file and the field."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from committed import COMMITTED_RUNS
from results_factory import TIMING, doc, point

from tpsbench.bench.config import RunConfig
from tpsbench.bench.env import machine_info
from tpsbench.models import get_model
from tpsbench.results import SCHEMA, ResultsError, ResultsWriter, from_dict, load_dataframe, load_results, to_dict
from tpsbench.results.io import parse_results
from tpsbench.results.model_record import model_record
from tpsbench.results.schema import ALL_CLASSES, ConfigRecord, Point, Raw, RunDoc, Stats, TimingRecord
from tpsbench.results.schema_doc import render

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = COMMITTED_RUNS


def _config() -> ConfigRecord:
    t = from_dict(TimingRecord, TIMING)
    return ConfigRecord(model="moe_tiny", model_spec=model_record(get_model("moe_tiny")), gpu_profile=None,
                        device="cpu", batches=[256], seq_len=64, impls=["loop"],
                        mode="micro", routing="learned", skew=None, dtype_policy="fp32", compile=False,
                        global_batch=None, micro_timing=t, e2e_timing=t, stages=True, seed=0)


def _point(median: float, tokens: int = 64, status: str = "ok") -> Point:
    if status != "ok":
        return Point(kind="micro", layer="moe", impl="loop", tokens=tokens, mode="fwd", label="x", routing="learned",
                     status=status, error="boom")
    stats = Stats(n=2, median=median, q1=median, q3=median, min=median, max=median, mean=median, stdev=0.0,
                  mad=0.0, outliers=[], iqr=0.0)
    from tpsbench.results.schema import Derived

    return Point(kind="micro", layer="moe", impl="loop", tokens=tokens, mode="fwd", label="x", routing="learned",
                 status="ok", stats=stats, derived=Derived(tokens_per_s=tokens / median, achieved_tflops=None),
                 raw=Raw(samples_s=[median, median], warmup=1, l2_flushed=False, timer="perf_counter"))


def _writer(path: Path) -> ResultsWriter:
    return ResultsWriter(path, config=_config(), machine=machine_info("cpu", None), tool_version="0")


def _leaves(data, prefix=""):
    """Every number and string of a JSON document by its path."""
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _leaves(v, f"{prefix}.{k}")
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from _leaves(v, f"{prefix}[{i}]")
    else:
        yield prefix, data


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: str(p.relative_to(ROOT / "results")))
def test_every_committed_file_loads_through_the_schema_with_no_value_changed(path):
    data = json.loads(path.read_text())
    doc = load_results(path)
    assert doc.schema == SCHEMA  # version 1 files are upgraded
    written = to_dict(doc)
    before = dict(_leaves({k: v for k, v in data.items() if k not in ("schema", "git_commit")}))
    after = dict(_leaves(written))
    for key, value in before.items():
        if key == ".config.calibration" and value is not None:  # v1: a path; v2: the calibration's ceilings and path
            assert after[".config.calibration.path"] == value
            continue
        assert after[key] == value, key  # every value of the file, unchanged
    assert written["provenance"]["v1_git_commit"] == data["git_commit"]
    # a version 2 document round-trips exactly
    assert to_dict(from_dict(RunDoc, written)) == written


def test_every_add_leaves_a_valid_file(tmp_path):
    path = tmp_path / "r.json"
    w = _writer(path)
    assert load_results(path).points == []
    w.add(_point(1.0))
    assert len(json.loads(path.read_text())["points"]) == 1
    w.add(_point(1.0, status="oom"))
    w.finish("complete")
    doc = load_results(path)
    assert doc.schema == SCHEMA and doc.status == "complete" and len(doc.points) == 2
    assert not list(tmp_path.glob(".*.tmp"))  # no temp files left behind


def test_provenance_hashes_the_code_that_ran(tmp_path):
    w = _writer(tmp_path / "r.json")
    prov = load_results(tmp_path / "r.json").provenance
    assert prov.source_hash and len(prov.source_hash) == 64
    assert "tpsbench/results/io.py" in prov.source_files and "tpsbench/bench/config.py" in prov.source_files
    assert prov.dirty is not None and (prov.git_commit is None) == prov.dirty  # a commit only from clean code
    assert w.doc.provenance.source_hash == prov.source_hash


def test_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        _writer(tmp_path / "shared.json")
    finally:
        os.umask(old)
    assert (tmp_path / "shared.json").stat().st_mode & 0o777 == 0o644


def test_dataframe_one_row_per_point(tmp_path):
    path = tmp_path / "r.json"
    w = _writer(path)
    for i in range(3):
        w.add(_point(0.5 * (i + 1), tokens=64 * (i + 1)))
    df = load_dataframe(path)
    assert len(df) == 3
    assert list(df["tokens"]) == [64, 128, 192]
    assert list(df["stats.median"]) == [0.5, 1.0, 1.5]
    assert set(df["run.model"]) == {"moe_tiny"}


def test_bad_status_rejected(tmp_path):
    w = _writer(tmp_path / "r.json")
    with pytest.raises(ValueError, match="status"):
        w.add(Point(kind="micro", layer="moe", impl=None, tokens=1, mode="fwd", label="x", routing=None,
                    status="great"))


def test_not_a_results_file(tmp_path):
    p = tmp_path / "x.json"
    p.write_text('{"schema": "other"}')
    with pytest.raises(ResultsError, match="schema"):
        load_results(p)


@pytest.mark.parametrize(("mutate", "needle"), [
    (lambda d: d.pop("points"), "field 'points': missing"),
    (lambda d: d.pop("machine"), "field 'machine': missing"),
    (lambda d: d.update(points="many"), "field 'points': expected list[Point], found 'many'"),
    (lambda d: d["points"][0].update(tokens="many"), "field 'points[0].tokens': expected a whole number"),
    (lambda d: d["points"][0].update(stats=None), "field 'points[0].stats': missing (null) for a point with status ok"),
    (lambda d: d["points"][0]["stats"].update(median=True), "field 'points[0].stats.median'"),
    (lambda d: d["config"].update(batches=[1.5]), "field 'config.batches[0]'"),
    (lambda d: d["points"][0].update(status="great"), "field 'points[0].status'"),
    (lambda d: d["points"][0].update(surprise=1), "unknown key(s) 'surprise'"),
])
def test_a_broken_document_is_one_error_naming_the_file_and_field(mutate, needle, tmp_path):
    data = doc("moe_1b", [point(kind="micro", layer="moe", impl="grouped", mode="fwd_bwd")])
    mutate(data)
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(data))
    with pytest.raises(ResultsError) as info:
        load_results(f)
    assert str(info.value).startswith(f"{f}: ") and needle in str(info.value)


@pytest.mark.parametrize("content", [b"\xff\xfe\x00garbage", b'{"schema": ', b"[1, 2]"])
def test_unreadable_bytes_are_one_error(content, tmp_path):
    f = tmp_path / "b.json"
    f.write_bytes(content)
    with pytest.raises(ResultsError, match=str(f)):
        load_results(f)


def test_non_finite_numbers_become_null(tmp_path):
    from tpsbench.results import atomic_write_json

    atomic_write_json(tmp_path / "x.json", {"a": float("inf"), "b": [1.0, float("nan")]})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": None, "b": [1.0, None]}


def test_describe_and_from_doc_round_trip_every_field():
    cfg = RunConfig.from_options(model="moe_tiny", device="cpu", cuda_available=False, impl="loop,capacity",
                                 batch="128,256", mode="micro", routing="skewed", skew=2.0, layers="moe,attention",
                                 reps=7, min_time=0.01, counters=False, counter_interval_s=0.2,
                                 counter_window_s=0.5, gpu_time=False, global_batch=512, stages=False)
    record = cfg.describe()
    back = RunConfig.from_doc(from_dict(ConfigRecord, to_dict(record)), profile=None)
    assert back == cfg
    assert back.describe() == record
    assert set(to_dict(record)) == {f.name for f in ConfigRecord.__dataclass_fields__.values()}


def test_schema_md_is_generated_from_the_dataclasses():
    assert (ROOT / "results" / "SCHEMA.md").read_text() == render(), (
        "results/SCHEMA.md is stale: python -m tpsbench.results.schema_doc > results/SCHEMA.md")
    text = render()
    for cls in ALL_CLASSES:
        assert f"## {cls.__name__}" in text


def test_parse_results_of_synthetic_data_names_its_source():
    with pytest.raises(ResultsError, match=r"^mine: "):
        parse_results({"schema": "tpsbench.results/2"}, "mine")


def test_provenance_command_tells_whether_a_file_is_this_trees_code(tmp_path, capsys, monkeypatch):
    from tpsbench import provenance
    from tpsbench.cli import main

    out = tmp_path / "r.json"
    _writer(out).finish("complete")
    assert main(["provenance", str(out), "results/baselines/h100_sxm-moe_1b-moe-layer.json", "--json"]) == 0
    mine, old = json.loads(capsys.readouterr().out)
    assert mine["same_code_as_this_tree"] is True and mine["source_hash"]
    assert old["same_code_as_this_tree"] is None and old["v1_git_commit"].startswith("3e007e6")
    # the same file against a tree where one of its source files changed
    changed = tmp_path / "tree"
    for name in load_results(out).provenance.source_files:
        (changed / name).parent.mkdir(parents=True, exist_ok=True)
        (changed / name).write_bytes((ROOT / name).read_bytes())
    (changed / "tpsbench/results/io.py").write_text("# changed\n")
    monkeypatch.setattr(provenance, "REPO_ROOT", changed)
    monkeypatch.setattr(provenance.differing_files, "__defaults__", (changed,))
    assert main(["provenance", str(out), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["same_code_as_this_tree"] is False and "tpsbench/results/io.py" in row["detail"]
