"""Files built to break a reader: nested deeper than the parser goes, a million keys, a gigabyte of whitespace. Each is
one line on stderr and exit 2, whichever reader meets it (results, calibration, measured CSV, GPU profile, loss
curves); the gigabyte is refused by its size before a byte of it is read, so memory stays bounded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from guard import HANG_GUARD_S

from tpsbench import errors
from tpsbench.cli import main

GIB = 1 << 30


def _one_line(capsys, code: int, needle: str) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert needle in err and "Traceback" not in err, err
    assert len(err.splitlines()) == 1 and len(err) < 600, err[:600]
    return err


def _deep(tmp_path: Path, depth: int = 200_000) -> Path:
    path = tmp_path / "deep.json"
    path.write_text("[" * depth + "]" * depth)
    return path


def _many_keys(tmp_path: Path, keys: int = 1_000_000) -> Path:
    path = tmp_path / "keys.json"
    with path.open("w") as f:
        f.write('{"schema": "tpsbench.results/2", ')
        f.write(", ".join(f'"k{i}": {i}' for i in range(keys)))
        f.write("}")
    return path


def _gigabyte_of_whitespace(tmp_path: Path) -> Path:
    path = tmp_path / "spaces.json"
    block = b" " * (1 << 20)
    with path.open("wb") as f:
        for _ in range(GIB // len(block)):
            f.write(block)
    return path


@pytest.mark.parametrize("command", [["compare"], ["check", "--baseline"], ["plot", "-o", "x.png"]])
def test_a_results_file_nested_200000_deep_is_one_line(command, tmp_path, capsys):
    path = _deep(tmp_path)
    argv = [*command, str(path)] if command[0] != "plot" else ["plot", str(path), "-o", str(tmp_path / "x.png")]
    if command[0] == "check":
        argv += ["--current", str(path)]
    _one_line(capsys, main(argv), "nested too deeply")


def test_a_calibration_nested_too_deeply_is_one_line(tmp_path, capsys):
    run = Path(__file__).resolve().parents[1] / "results/h100-validation/h100-moe_1b.json"
    _one_line(capsys, main(["compare", str(run), "--calibration", str(_deep(tmp_path))]), "nested too deeply")


def test_a_million_keys_is_one_short_line(tmp_path, capsys):
    err = _one_line(capsys, main(["compare", str(_many_keys(tmp_path))]), "unknown key(s)")
    assert "and 999," in err  # a few keys named, the rest counted


def test_a_toml_profile_nested_too_deeply_is_one_line(tmp_path, capsys):
    profile = tmp_path / "deep.toml"
    profile.write_text("x = " + "[" * 100_000 + "]" * 100_000 + "\n")
    _one_line(capsys, main(["predict", "--gpu", str(profile), "--model", "moe_1b"]), "nested too deeply")


def test_a_gigabyte_of_whitespace_is_refused_unread(tmp_path, capsys, monkeypatch):
    path = _gigabyte_of_whitespace(tmp_path)
    read = []
    real = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: read.append(self) or real(self))
    for argv in (["compare", str(path)], ["explain", "--measured", str(path)],
                 ["worth", "--losses", str(path), "--target-loss", "3", "--gpu", "h100"]):
        _one_line(capsys, main(argv), "larger than any")
    assert path not in read  # refused by its size: memory stays bounded whatever the file holds
    path.unlink()


def test_a_gigabyte_of_whitespace_from_the_shell(tmp_path):
    """The command a user types, in its own process: one line, exit 2."""
    path = _gigabyte_of_whitespace(tmp_path)
    done = subprocess.run([sys.executable, "-m", "tpsbench", "compare", str(path)], capture_output=True, text=True,
                          timeout=HANG_GUARD_S)
    path.unlink()
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"{GIB >> 20:,} MiB is larger than any JSON results file" in done.stderr


def test_whitespace_under_the_size_limit_is_not_json(tmp_path, capsys):
    path = tmp_path / "spaces.json"
    path.write_bytes(b" \n\t" * (1 << 20))
    _one_line(capsys, main(["compare", str(path)]), "not valid JSON")


def test_the_size_limit_is_above_any_file_tpsbench_writes():
    biggest = max(p.stat().st_size for p in (Path(__file__).resolve().parents[1] / "results").rglob("*.json"))
    assert biggest * 100 < errors.MAX_INPUT_BYTES
    assert json.loads("[1]") == [1]  # the parser itself is the standard library's
