"""``results/SCHEMA.md``, generated from the schema's dataclasses: ``python -m tpsbench.results.schema_doc >
results/SCHEMA.md`` (tests/test_results.py fails when the file is stale)."""

from __future__ import annotations

import inspect
from dataclasses import MISSING

from tpsbench.results.schema import ALL_CLASSES, SCHEMA, SCHEMA_V1, SCHEMA_V2
from tpsbench.results.typed import schema_fields, type_name


def render() -> str:
    lines = [
        f"# Results schema `{SCHEMA}`",
        "",
        "Generated from `tpsbench/results/schema.py` by `python -m tpsbench.results.schema_doc`; do not edit.",
        f"Files of `{SCHEMA_V1}` and `{SCHEMA_V2}` are read through `tpsbench.results.upgrade.upgrade` (a version 1",
        "`git_commit` becomes `provenance.v1_git_commit`, a calibration path becomes `config.calibration.path`; the",
        "`config.model_spec` of a file before version 3 is the zoo's model of its name).",
        "A field with a default may be absent from a file (it was added after version 1); every other field is",
        "required, `null` where its type allows. Units: s seconds, B bytes, FLOP floating-point operations,",
        "fractions in [0, 1].",
        "",
    ]
    for cls in ALL_CLASSES:
        doc = inspect.getdoc(cls) or ""
        lines += [f"## {cls.__name__}", ""]
        if doc and not doc.startswith(f"{cls.__name__}("):
            lines += [" ".join(doc.split()), ""]
        lines += ["| field | type | unit | default | meaning |", "|:---|:---|:---|:---|:---|"]
        for f, tp in schema_fields(cls):
            if f.default is not MISSING:
                default = "null" if f.default is None else f"`{f.default!r}`"
            elif f.default_factory is not MISSING:
                default = f"`{f.default_factory()!r}`"
            else:
                default = ""
            meaning = f.metadata.get("doc", "").replace("|", "\\|")
            kind = type_name(tp).replace("|", "\\|")
            lines.append(f"| `{f.name}` | `{kind}` | {f.metadata.get('unit', '')} | {default} | {meaning} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    print(render(), end="")
