"""A non-editable install ships every subpackage: pyproject lists packages explicitly."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "tpsbench").rglob("__init__.py")}
    assert found - listed == set(), "add these to [tool.setuptools] packages"
