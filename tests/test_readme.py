"""The README is the front door: at most 12 KB, and every command it shows with output is run here and prints what
the README pastes (the lines shown, in order; "..." stands for lines left out). The quick start's two lines are
what CI runs (.ci/run)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tpsbench.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


# docs pages whose ```text blocks are real runs, checked like the README's
CHECKED_DOCS = ("docs/models.md", "docs/commands.md")


def _shown(text: str = README) -> list[tuple[str, list[str]]]:
    """(command, the output lines shown) of every ```text block that starts with `$ tpsbench`."""
    out = []
    for block in re.findall(r"```text\n(.*?)```", text, flags=re.S):
        lines = block.rstrip("\n").split("\n")
        if lines[0].startswith("$ tpsbench "):
            out.append((lines[0].removeprefix("$ tpsbench "), lines[1:]))
    return out


def test_the_readme_is_short_and_links_only_to_files_that_exist():
    assert len(README.encode()) <= 12 * 1024
    for target in re.findall(r"\]\(([^)#]+)", README):
        assert (ROOT / target).exists(), target
    assert len(_shown()) >= 3


_DOCS_SHOWN = [shown for page in CHECKED_DOCS for shown in _shown((ROOT / page).read_text())]


@pytest.mark.parametrize(("command", "shown"), _shown() + _DOCS_SHOWN, ids=[c for c, _ in _shown() + _DOCS_SHOWN])
def test_every_command_shown_prints_what_the_readme_pastes(command, shown, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("COLUMNS", "100")
    assert main(command.split()) == 0
    printed = [line.rstrip() for line in capsys.readouterr().out.split("\n")]
    at = 0
    for line in shown:
        if line == "...":
            continue
        assert line.rstrip() in printed[at:], f"not printed (after line {at}): {line!r}"
        at = printed.index(line.rstrip(), at) + 1


def test_every_docs_link_points_at_a_file_that_exists():
    for page in (ROOT / "docs").glob("*.md"):
        for target in re.findall(r"\]\(([^)#\s]+)", page.read_text()):
            if not target.startswith("http"):
                assert (page.parent / target).exists(), f"{page.name}: {target}"
