"""Property-based tests (Hypothesis): whatever bytes, JSON or CSV a user hands tpsbench, and whatever arguments,
the answer is a valid document or one tpsbench-worded error (exit 2) -- never a Python exception escaping.

Seeded (derandomize) and bounded, so CI sees the same examples every run and the file stays well under 60 s."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from results_factory import doc, point

from tpsbench.analysis.explain import MeasuredCsvError, read_measured_csv
from tpsbench.errors import InputError
from tpsbench.results import RunDoc
from tpsbench.results.io import ResultsError, load_results, parse_results

ROOT = Path(__file__).resolve().parents[1]
FUZZ = settings(derandomize=True, deadline=None, max_examples=150,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)
VALID = doc("moe_1b", [point(kind="micro", layer="moe", impl="grouped", mode="fwd_bwd"), point(status="oom")])


def _paths(data):
    """Every (path, value) of a JSON document, to mutate one place at a time."""
    if isinstance(data, dict):
        for k, v in data.items():
            yield (k,), v
            for p, w in _paths(v):
                yield (k, *p), w
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield (i,), v
            for p, w in _paths(v):
                yield (i, *p), w


PLACES = [p for p, _ in _paths(VALID)]


def _set(data, path, value):
    data = json.loads(json.dumps(data))
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return data


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_load_or_fail_in_one_line(tmp_path_factory, content):
    f = tmp_path_factory.mktemp("b") / "x.json"
    f.write_bytes(content)
    try:
        assert isinstance(load_results(f), RunDoc)
    except ResultsError as exc:
        assert str(exc).startswith(str(f)) and "\n" not in str(exc)


@FUZZ
@given(st.integers(min_value=0, max_value=len(json.dumps(VALID)) - 1))
def test_truncated_documents_fail_in_one_line(tmp_path_factory, cut):
    f = tmp_path_factory.mktemp("t") / "x.json"
    f.write_text(json.dumps(VALID)[:cut])
    with pytest.raises(ResultsError, match=r"not valid JSON|not a tpsbench results"):
        load_results(f)


@FUZZ
@given(JSON)
def test_random_json_structures_are_documents_or_one_error(data):
    try:
        assert isinstance(parse_results(data, "x"), RunDoc)
    except ResultsError as exc:
        assert "\n" not in str(exc)


@FUZZ
@given(st.sampled_from(PLACES), JSON)
def test_one_field_replaced_by_anything_is_a_document_or_one_error(place, value):
    try:
        parse_results(_set(VALID, place, value), "x")
    except ResultsError as exc:
        assert str(exc).startswith("x: ") and "\n" not in str(exc)


CSV_CELL = st.one_of(st.sampled_from(["dense_135m", "moe_1b", "h100_sxm", "rtx5090", "capacity", "grouped", "32768",
                                      "2048", "1000", "-5", "nan", "inf", "1e309", ""]),
                     st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=6))
CSV_ROW = st.lists(CSV_CELL, min_size=0, max_size=7).map(lambda cells: ",".join(cells))
HEADER = st.sampled_from(["model,gpu,tokens_per_s", "model,gpu,tokens_per_s,tokens,impl,global_tokens",
                          "model,gpu", "gpu,model,tokens_per_s,extra", ""])


@FUZZ
@given(HEADER, st.lists(CSV_ROW, max_size=5))
def test_random_csv_rows_read_or_fail_in_one_line(tmp_path_factory, header, rows):
    f = tmp_path_factory.mktemp("c") / "m.csv"
    f.write_text("\n".join([header, *rows]) + "\n")
    try:
        measured = read_measured_csv(f)
        assert measured and all(m.tokens_per_s > 0 for m in measured)
    except MeasuredCsvError as exc:
        assert "\n" not in str(exc)


# --- every subcommand's parser with random argument lists ----------------------------------------------------
OPTIONS = ["--gpu", "--model", "--batch", "--seq", "--impl", "--capacity-factor", "--dtype", "--ceilings",
           "--calibration", "--global-batch", "--device", "--mode", "--layers", "--routing", "--skew", "--reps",
           "--min-time", "--out", "--overwrite", "--json", "--summary", "--compile", "--no-stages", "--threshold",
           "--baseline", "--current", "--measured", "--markdown", "-o", "--all-points", "--allow-missing", "--stack"]
VALUES = ["h100", "h100_sxm", "rtx5090", "moe_1b", "moe_tiny", "dense_tiny", "olmoe_1b_7b", "cpu", "cuda", "0", "-1",
          "64", "128", "2048", "32768", "1e300", "inf", "nan", "grouped", "capacity", "triton", ",", "fp32", "amp_bf16",
          "spec", "calibrated", "micro", "e2e", "moe", "mlp", "skewed", "x.json", "x.csv", "x.png", "missing.json",
          "models", "gpus", "impls", "olmo-core", "tpsbench", "", "é", "--"]


@pytest.fixture
def no_measuring(monkeypatch, tmp_path):
    """Parsing and validation are what is fuzzed: a run that gets through them measures nothing."""
    from tpsbench.bench import calibrate, runner

    def nothing(*args, **kwargs):
        raise KeyboardInterrupt  # what a user's Ctrl-C right after the start would do: exit 130, no traceback

    monkeypatch.setattr(runner, "execute", nothing)
    monkeypatch.setattr(calibrate, "run_calibration", nothing)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.csv").write_text("model,gpu,tokens_per_s\ndense_135m,h100,1000\n")
    (tmp_path / "x.json").write_bytes(
        (ROOT / "results/baselines/h100_sxm-moe_1b-moe-layer.json").read_bytes())


# Each command with its required arguments in place, so the random tail reaches the validation behind argparse.
VALID_STARTS = {
    "predict": ["--gpu", "h100", "--model", "moe_1b"], "run": ["--device", "cpu", "--model", "moe_tiny"],
    "calibrate": [], "compare": ["x.json"], "explain": ["--measured", "x.csv"], "plot": ["x.json", "-o", "x.png"],
    "check": ["--baseline", "x.json"], "list": [], "provenance": ["x.json"],
}
ARGS = st.lists(st.one_of(st.sampled_from(OPTIONS), st.sampled_from(VALUES)), max_size=7)


@FUZZ
@given(st.sampled_from(sorted(VALID_STARTS)), st.booleans(), ARGS)
def test_random_arguments_give_a_result_or_one_error(no_measuring, capsys, command, with_start, args):
    from tpsbench.cli import main

    try:
        code = main([command, *(VALID_STARTS[command] if with_start else []), *args])
    except SystemExit as exc:  # argparse: --help, or its one-line error
        code = int(exc.code or 0)
    except InputError as exc:  # pragma: no cover - main catches these
        pytest.fail(f"escaped: {exc}")
    err = capsys.readouterr().err
    assert code in (0, 1, 2, 130), (command, args, err)
    assert "Traceback" not in err, (command, args, err)
    if code == 2:
        assert len([line for line in err.splitlines() if line.strip()]) == 1, (command, args, err)
