"""Which code wrote each results file, and whether it is the code of this tree, source file by source file (by
content hash): what `tpsbench provenance` answers."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tpsbench.provenance import differing_files
from tpsbench.results.io import load_results


@dataclass(frozen=True, slots=True)
class FileOrigin:
    file: str
    git_commit: str | None
    dirty: bool | None
    v1_git_commit: str | None
    source_hash: str | None
    same_code_as_this_tree: bool | None  # None: the file predates source hashes
    detail: str


def file_origins(paths: Iterable[str | Path]) -> list[FileOrigin]:
    out = []
    for path in paths:
        prov = load_results(path).provenance
        same: bool | None
        if not prov.source_files:
            same, detail = None, "written before source hashes (schema 1): unknown"
        else:
            differ = differing_files(prov.source_files)
            same = not differ
            detail = (f"all {len(prov.source_files)} source files as in this tree" if same else
                      f"{len(differ)} of {len(prov.source_files)} source files differ: " + ", ".join(differ[:4])
                      + (" ..." if len(differ) > 4 else ""))
        out.append(FileOrigin(str(path), prov.git_commit, prov.dirty, prov.v1_git_commit, prov.source_hash, same,
                              detail))
    return out
