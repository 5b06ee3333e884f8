"""What code produced a results file: a content hash of the tpsbench/ and kernels/ source files a run actually
imported, and the git commit only where the code has no uncommitted changes.

The GPU machine runs a copy of the working tree with the ``.git`` of an earlier commit, so a commit id alone
named code that did not run (committed GPU files said ``3e007e6-dirty`` for later trees). The hash cannot
say that: it is computed from the bytes that ran, and `tpsbench provenance FILE` compares it with this tree.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent  # tpsbench/
REPO_ROOT = PACKAGE_ROOT.parent
CODE_PATHS = ("tpsbench", "kernels", "pyproject.toml")  # what "the code" is for the clean-tree check


def _source_root(path: Path) -> Path | None:
    """The folder a source file counts from: the repository (tpsbench/, kernels/), or None if it is not ours."""
    resolved = path.resolve()
    for root in (REPO_ROOT / "tpsbench", REPO_ROOT / "kernels"):
        if resolved.is_relative_to(root):
            return REPO_ROOT
    return None


# Module file -> (repository path, sha256), or None when it is not tpsbench's: each file is resolved and hashed
# once, when a run first sees it imported (a results file is rewritten after every point)
_SEEN: dict[str, tuple[str, str] | None] = {}


def _hashed(file: str) -> tuple[str, str] | None:
    if file not in _SEEN:
        path = Path(file)
        root = _source_root(path) if file.endswith(".py") else None
        _SEEN[file] = None if root is None or not path.is_file() else (
            str(path.resolve().relative_to(root)), hashlib.sha256(path.read_bytes()).hexdigest())
    return _SEEN[file]


def imported_sources() -> dict[str, str]:
    """Each imported module file of tpsbench and its kernels (repository-relative path) -> sha256 of its bytes."""
    files = {getattr(m, "__file__", None) for m in list(sys.modules.values())}
    found = [h for f in files if isinstance(f, str) and (h := _hashed(f)) is not None]
    return dict(sorted(found))


def source_hash(files: dict[str, str]) -> str:
    """One sha256 over the files' paths and hashes, in path order."""
    h = hashlib.sha256()
    for name, digest in sorted(files.items()):
        h.update(f"{name}\0{digest}\n".encode())
    return h.hexdigest()


def git_state(root: Path = REPO_ROOT) -> tuple[str | None, bool | None]:
    """(HEAD, dirty): HEAD only when the code paths have no uncommitted change, tracked or untracked; (None,
    None) without git or a repository."""
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=60, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", *CODE_PATHS],
                                capture_output=True, text=True, timeout=60, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None, None
    dirty = bool(status)
    return (None if dirty else head), dirty


def current_file_hashes(names: list[str], root: Path = REPO_ROOT) -> dict[str, str | None]:
    """The sha256 of each named source file in this tree now (None: the file is gone)."""
    out: dict[str, str | None] = {}
    for name in names:
        path = root / name
        out[name] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    return out


def differing_files(recorded: dict[str, str], root: Path = REPO_ROOT) -> list[str]:
    """The recorded source files whose bytes in this tree differ from those that ran (or that are gone)."""
    now = current_file_hashes(list(recorded), root)
    return [name for name, digest in recorded.items() if now[name] != digest]
