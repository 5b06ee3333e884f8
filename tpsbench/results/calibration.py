"""Reading `tpsbench calibrate` files (torch-free, so that the analyses can read them without loading torch):
the schema check and the best ceilings a roofline or a cross-GPU comparison uses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tpsbench.errors import InputError

SCHEMA = "tpsbench.calibration/1"


class CalibrationError(InputError):
    """A calibration file that cannot be used."""


def best_ceilings(doc: dict[str, Any]) -> dict[str, float | None]:
    """The ceilings a roofline uses from a calibration document: best matmul per dtype, best large-array
    copy GB/s over torch and CuPy (copy, the bytes-read-plus-written convention of the profiles)."""
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        found = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise CalibrationError(f"not a calibration file (schema {found!r}, expected '{SCHEMA}')")
    mm = {name: (entry or {}).get("best_tflops") for name, entry in doc.get("matmul", {}).items()}
    copies = []
    for lib in ("torch", "cupy"):
        entry = doc.get("bandwidth", {}).get("large", {}).get(lib) or {}
        if entry.get("copy"):
            copies.append(entry["copy"]["gbs"])
    return {"bf16_tflops": mm.get("bf16"), "fp32_tflops": mm.get("fp32"), "copy_gbs": max(copies) if copies else None}


def load_calibration(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CalibrationError(f"{p}: cannot read a calibration file ({exc}); run `tpsbench calibrate` first") from exc
    try:
        best_ceilings(doc)  # validates the schema
    except CalibrationError as exc:
        raise CalibrationError(f"{p}: {exc}") from exc
    return doc


__all__ = ["SCHEMA", "CalibrationError", "best_ceilings", "load_calibration"]
