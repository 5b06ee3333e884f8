"""`tpsbench provenance`: the code that wrote each results file, against this tree."""

from __future__ import annotations

from tpsbench.report.format import NA
from tpsbench.report.tables import TableData
from tpsbench.results.origin import FileOrigin


def provenance_table(origins: list[FileOrigin]) -> TableData:
    columns = ["file", "commit", "source hash", "this tree's code", "detail"]
    t = TableData("Provenance: the code that wrote each file, against this tree", columns, left=set(columns))
    for o in origins:
        commit = o.git_commit or (f"{o.v1_git_commit} (as recorded by schema 1)" if o.v1_git_commit
                                  else f"{NA} (uncommitted changes)" if o.dirty else NA)
        same = {True: "yes", False: "no", None: "unknown"}[o.same_code_as_this_tree]
        t.add(o.file, commit, (o.source_hash or NA)[:16], same, o.detail)
    return t
