"""Bad input never reaches the user as a traceback, and no run is lost silently: one test per case found when
tpsbench was tried as a new user would (each failed on the code before it was fixed)."""

from __future__ import annotations

import fcntl
import json
from pathlib import Path

import pytest
from guard import HANG_GUARD_S
from results_factory import doc, point

from tpsbench.cli import main

ROOT = Path(__file__).resolve().parents[1]
H100_BASELINE = str(ROOT / "results/baselines/h100_sxm-moe_1b-moe-layer.json")


def _main(args: list[str]) -> int:
    """main's exit status, argparse's own errors (SystemExit) included."""
    try:
        return main(args)
    except SystemExit as exc:
        return int(exc.code or 0)


def _one_line_error(capsys, code: int, needle: str) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert needle in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


# --- 1. output paths of run ------------------------------------------------------------------------------
@pytest.mark.parametrize(("out", "needle"), [("{tmp}", "is a folder"), ("/proc/x.json", "cannot write"),
                                             ("{tmp}/a-file/x.json", "cannot write")])
def test_run_to_an_unwritable_out_is_one_line(out, needle, tmp_path, capsys):
    (tmp_path / "a-file").write_text("not a folder")  # unwritable below it, for root too
    code = main(["run", "--device", "cpu", "--model", "dense_tiny", "--mode", "e2e",
                 "--out", out.format(tmp=tmp_path)])
    _one_line_error(capsys, code, needle)


# --- 2. binary files -------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [["compare"], ["plot", "-o", "x.png"], ["check", "--baseline"],
                                     ["explain", "--measured"], ["provenance"]])
def test_a_binary_file_is_one_line(command, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "b.json").write_bytes(bytes(range(256)) * 8)
    args = [*command, "b.json"]
    if command == ["check", "--baseline"]:
        args += ["--current", "b.json"]
    _one_line_error(capsys, main(args), "not a text file")


# --- 3. documents with the right schema and the wrong content ----------------------------------------------
@pytest.mark.parametrize(("mutate", "needle"), [
    (lambda d: d.pop("points"), "field 'points': missing"),
    (lambda d: d.pop("config"), "field 'config': missing"),
    (lambda d: d.pop("machine"), "field 'machine': missing"),
    (lambda d: d.update(points="many"), "field 'points'"),
    (lambda d: d["points"][0].update(stats=None), "field 'points[0].stats'"),
    (lambda d: d["points"][0].update(tokens="many"), "field 'points[0].tokens'"),
])
def test_a_broken_results_file_names_file_and_field(mutate, needle, tmp_path, capsys):
    data = doc("moe_1b", [point(kind="micro", layer="moe", impl="grouped", mode="fwd_bwd")])
    mutate(data)
    f = tmp_path / "r.json"
    f.write_text(json.dumps(data))
    for command in (["compare", str(f)], ["plot", str(f), "-o", str(tmp_path / "x.png")],
                    ["check", "--baseline", str(f), "--current", str(f)]):
        err = _one_line_error(capsys, main(command), needle)
        assert str(f) in err


# --- 4. a CSV row with more fields than its header ---------------------------------------------------------
def test_csv_row_with_extra_fields(tmp_path, capsys):
    f = tmp_path / "m.csv"
    f.write_text("model,gpu,tokens_per_s,extra\ndense_135m,h100_sxm,1000,1,2,3\n")
    _one_line_error(capsys, main(["explain", "--measured", str(f)]), ":2: 6 fields, the header has 4")


# --- 5. capacity factors that mean nothing ----------------------------------------------------------------
@pytest.mark.parametrize(("factor", "needle"), [("inf", "positive finite number"), ("1e300", "must be in (0, 256]"),
                                                ("nan", "positive finite number"), ("257", "must be in (0, 256]")])
def test_capacity_factor_is_bounded(factor, needle, capsys):
    code = _main(["predict", "--gpu", "h100", "--model", "moe_1b", "--impl", "capacity", "--capacity-factor", factor])
    _one_line_error(capsys, code, needle)


def test_largest_capacity_factor_still_predicts(capsys):
    assert main(["predict", "--gpu", "h100", "--model", "moe_1b", "--impl", "capacity", "--capacity-factor", "256",
                 "--summary"]) == 0


# --- 6. Ctrl-C while check measures ------------------------------------------------------------------------
def test_ctrl_c_during_check_keeps_the_file_and_exits_130(tmp_path, capsys, monkeypatch):
    from tpsbench.bench import runner

    base = tmp_path / "base.json"
    assert main(["run", "--device", "cpu", "--model", "dense_tiny", "--mode", "micro", "--layers", "mlp",
                 "--reps", "2", "--min-time", "0.001", "--out", str(base)]) == 0
    capsys.readouterr()

    def interrupted(cfg, out, on_point=None, *, overwrite=False):
        Path(out).write_text("{}")  # what a real run leaves: the points measured so far
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "execute", interrupted)
    code = main(["check", "--baseline", str(base), "--out", str(tmp_path / "cur.json")])
    err = capsys.readouterr().err
    assert code == 130 and "finished points are in" in err and "Traceback" not in err
    assert (tmp_path / "cur.json").exists()


# --- 7. two runs, one output file --------------------------------------------------------------------------
def test_a_second_run_to_the_same_out_is_refused(tmp_path, capsys):
    out = tmp_path / "r.json"
    args = ["run", "--device", "cpu", "--model", "dense_tiny", "--mode", "micro", "--layers", "mlp", "--reps", "2",
            "--min-time", "0.001", "--out", str(out)]
    assert main(args) == 0
    first = out.read_text()
    _one_line_error(capsys, main(args), "exists: choose another --out, or pass --overwrite")
    assert out.read_text() == first  # the first run's file is untouched
    assert main([*args, "--overwrite"]) == 0


def test_a_run_writing_the_file_holds_a_lock(tmp_path, capsys):
    out = tmp_path / "r.json"
    with open(tmp_path / ".r.json.lock", "a") as held:  # another run, mid-sweep
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        code = main(["run", "--device", "cpu", "--model", "dense_tiny", "--mode", "micro", "--layers", "mlp",
                     "--out", str(out), "--overwrite"])
        _one_line_error(capsys, code, "another tpsbench run is writing")
    assert not out.exists()


# --- 8. check --markdown appends ---------------------------------------------------------------------------
def test_check_markdown_appends_one_section_per_check(tmp_path, capsys):
    summary = tmp_path / "summary.md"
    summary.write_text("# CI\n")
    for _ in range(3):
        main(["check", "--baseline", H100_BASELINE, "--current", H100_BASELINE, "--markdown", str(summary)])
    text = summary.read_text()
    assert text.startswith("# CI\n") and text.count("### tpsbench check: PASS") == 3


# --- 9. umask: tests/test_results.py::test_files_follow_the_umask ------------------------------------------
# --- 10. another GPU's calibration: tests/test_calibrate.py::test_another_gpus_calibration_is_refused -----


# --- 11. profiles from $TPSBENCH_PROFILES ------------------------------------------------------------------
def test_compare_refuses_a_malformed_profile(tmp_path, capsys, monkeypatch):
    from tpsbench.analysis import points

    points.profile_named.cache_clear()
    broken = tmp_path / "profiles"
    broken.mkdir()
    (broken / "h100_sxm.toml").write_text('name = "h100_sxm"\ndisplay_name = "mine"\n')  # no numbers
    monkeypatch.setenv("TPSBENCH_PROFILES", str(broken))
    try:
        _one_line_error(capsys, main(["compare", H100_BASELINE]), "missing key 'bf16_tflops'")
    finally:
        points.profile_named.cache_clear()


@pytest.mark.parametrize("where", ["nothing-here", "a-file"])
def test_a_profiles_folder_that_is_not_one_is_said_once(where, tmp_path, capsys, monkeypatch):
    from tpsbench import profiles

    target = tmp_path / where
    if where == "a-file":
        target.write_text("x")
    monkeypatch.setenv("TPSBENCH_PROFILES", str(target))
    profiles._warn_bad_profiles_dir.cache_clear()
    assert main(["list", "gpus", "--json"]) == 0
    assert main(["predict", "--gpu", "h100", "--model", "moe_1b", "--summary"]) == 0
    err = capsys.readouterr().err
    assert err.count("is not a folder") == 1 and str(target) in err


# --- 12. what cannot run on the device ---------------------------------------------------------------------
@pytest.mark.parametrize(("args", "needle"), [
    (["--impl", "triton"], "needs a CUDA GPU"),
    (["--compile", "--impl", "grouped", "--mode", "e2e"], "--compile with --impl grouped needs bf16"),
])
def test_run_refuses_up_front_what_cannot_run_on_the_cpu(args, needle, tmp_path, capsys):
    code = main(["run", "--device", "cpu", "--model", "moe_tiny", *args, "--out", str(tmp_path / "r.json")])
    _one_line_error(capsys, code, needle)
    assert not (tmp_path / "r.json").exists()


# --- 13. check of a GPU baseline on the CPU: refused before measuring ------------------------------------------
def test_check_refuses_another_device_before_measuring(tmp_path, capsys, monkeypatch):
    from tpsbench.bench import runner

    monkeypatch.setattr(runner, "execute", lambda *a, **k: pytest.fail("measured before checking the device"))
    code = main(["check", "--baseline", H100_BASELINE, "--device", "cpu", "--out", str(tmp_path / "c.json")])
    _one_line_error(capsys, code, "the baseline ran on h100_sxm, this run would be on cpu")


# --- 14. explain: faster than the floor, and microbatches that are not whole sequences -----------------------------
def test_explain_flags_a_rate_faster_than_the_floor(tmp_path, capsys):
    f = tmp_path / "m.csv"
    f.write_text("model,gpu,tokens_per_s\ndense_135m,h100_sxm,2000000\n")
    assert main(["explain", "--measured", str(f)]) == 0
    err = capsys.readouterr().err
    assert "row 2: dense_135m on h100_sxm at 2,000,000 tokens/s is" in err and "faster than the floor allows" in err
    assert main(["explain", "--measured", str(f), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["warnings"]


def test_explain_refuses_tokens_that_are_not_whole_sequences(tmp_path, capsys):
    f = tmp_path / "m.csv"
    f.write_text("model,gpu,tokens_per_s,tokens\ndense_135m,h100_sxm,200000,1000\n")
    _one_line_error(capsys, main(["explain", "--measured", str(f)]), "multiple of dense_135m's sequence length 2048")


# --- 15. profile names that are paths -----------------------------------------------------------------------
def test_profile_names_cannot_leave_the_results_folder(tmp_path, capsys):
    src = (ROOT / "profiles/h100_sxm.toml").read_text()
    evil = tmp_path / "evil.toml"
    evil.write_text(src.replace('name = "h100_sxm"', 'name = "x/../../../tmp/evil"'))
    code = main(["predict", "--gpu", str(evil), "--model", "moe_1b"])
    _one_line_error(capsys, code, "key 'name': expected lowercase letters, digits and _ . -")


# --- 16. smaller ones ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("args", "needle"), [
    (["run", "--device", "cpu", "--model", "moe_tiny", "--impl", ","], "names no implementation"),
    (["run", "--device", "cpu", "--model", "dense_tiny", "--layers", "moe"], "dense_tiny is dense"),
    (["run", "--device", "cpu", "--model", "dense_tiny", "--seq", "100000"], "longer than dense_tiny's sequence"),
    (["predict", "--gpu", "h100", "--model", "moe_1b", "--global-batch", "1000"], "closest valid choices: 32768"),
])
def test_smaller_cases_are_one_line(args, needle, capsys):
    err = _one_line_error(capsys, main(args), needle)
    assert "32768, 32768" not in err


def test_plot_has_json(tmp_path, capsys):
    assert main(["plot", H100_BASELINE, "-o", str(tmp_path / "p.png"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["plot"].endswith("p.png") and out["gpus"] == ["h100_sxm"] and out["points"]


def test_a_broken_pipe_stops_quietly(tmp_path):
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "tpsbench", "predict", "--gpu", "h100", "--model", "moe_1b",
                             "--batch", ",".join(["2048"] * 40)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.read(100)
    proc.stdout.close()  # as `| head -c 100` does
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=HANG_GUARD_S) == 141 and "Traceback" not in err and "BrokenPipe" not in err
