"""`tpsbench fit` (efficiency tables from measured runs) and `tpsbench validate` (measured points against the
expected estimates and floors, in-sample and leave-one-model-out)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from tpsbench import __version__
from tpsbench.analysis.validate import summarize, validate
from tpsbench.cli.args import UsageError, add_json
from tpsbench.estimate.fit import fit_table
from tpsbench.estimate.memory import ALLOCATOR_RESERVE
from tpsbench.estimate.select import calibration_fixed, table_for
from tpsbench.estimate.table import EfficiencyTable, parse_table
from tpsbench.points import MeasuredPoint
from tpsbench.profiles import load_profile
from tpsbench.report.tables import show
from tpsbench.report.validate import summary_table, validation_table
from tpsbench.results.calibration import load_calibration
from tpsbench.results.points import gemm_points, read_points

if TYPE_CHECKING:
    from rich.console import Console


def _points(paths: Sequence[str], gpu: str | None) -> list[MeasuredPoint]:
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise UsageError(f"no such results file: {missing[0]}")
    points = read_points(paths)
    if gpu is not None:
        wanted = load_profile(gpu).name
        held = sorted({p.gpu for p in points})
        points = [p for p in points if p.gpu == wanted]
        if not points and held:
            raise UsageError(f"no points measured on {wanted} in those files (they hold {', '.join(held)}): pass "
                             f"{wanted}'s results, or --gpu {held[0]}")
    if not points:
        raise UsageError("no measured GPU points of tpsbench's stack in those files (CPU runs and other stacks are "
                         "left out); pass results of `tpsbench run` on a GPU")
    return points


def add_fit_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", nargs="+", help="results files of `tpsbench run` on one GPU")
    p.add_argument("--gpu", required=True, help="the GPU profile the points ran on (others in the files are left out)")
    p.add_argument("--calibration", action="append", default=[],
                   help="`tpsbench calibrate` file(s) of that GPU: the large-GEMM and DRAM fractions and the kernel "
                   "floor come from them instead of the fit (repeatable; later files win)")
    p.add_argument("--host", default="the host of the measured runs",
                   help="what drove the GPU (CPU, software), recorded with the host costs")
    p.add_argument("-o", "--output", required=True, help="the efficiency table to write (.toml)")
    add_json(p, "a summary")


def cmd_fit(args: argparse.Namespace, console: Console) -> int:
    profile = load_profile(args.gpu)
    points = _points(args.results, args.gpu)
    fixed = calibration_fixed([Path(c) for c in args.calibration], profile)
    fixed.setdefault("memory_overhead_fraction", ALLOCATOR_RESERVE)
    for c in args.calibration:  # calibrate's GEMM shape sweep, where the file has one
        points += gemm_points(load_calibration(c), c)
    source = (f"fitted by `tpsbench fit` (scipy least_squares on log errors) to {len(points)} points of "
              + ", ".join(sorted({Path(p.source).as_posix() for p in points})))
    result = fit_table(points, gpu=profile.name, host=args.host, source=source, fixed=fixed)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(result.table.to_toml(), encoding="utf-8")
    summary = {"output": str(out), "points": result.points, "fitted": list(result.names),
               "fixed": sorted(fixed), "rms_log_error": result.rms_log_error}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        show(console, [f"fitted {len(result.names)} numbers to {result.points} points (rms log error "
                       f"{result.rms_log_error:.3f}); {len(fixed)} fixed from calibration or bounds; wrote {out}"])
    return 0


def add_validate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", nargs="+", help="results files of `tpsbench run` on a GPU")
    p.add_argument("--table", default=None, help="efficiency table (.toml; default: the GPU's own, else transferred)")
    p.add_argument("--leave-one-model-out", action="store_true",
                   help="also refit without each model's points and predict them (one fit per model, ~10 s each)")
    p.add_argument("--calibration", action="append", default=[],
                   help="calibration file(s) held fixed in the leave-one-model-out fits (as `tpsbench fit` takes)")
    p.add_argument("--summary", action="store_true", help="the summary only, no per-point table")
    add_json(p, "tables")


def cmd_validate(args: argparse.Namespace, console: Console) -> int:
    points = _points(args.results, None)
    gpus = sorted({p.gpu for p in points})
    if len(gpus) > 1 and args.leave_one_model_out:
        raise UsageError(f"--leave-one-model-out fits one GPU at a time; these files hold {', '.join(gpus)}")
    rows = []
    bases: dict[str, str] = {}  # which table predicted each GPU's points (its own, or transferred)
    in_sample: set[str] = set()  # files whose points the table was fitted to
    for gpu in gpus:
        profile = load_profile(gpu)
        table: EfficiencyTable = parse_table(Path(args.table)) if args.table else table_for(profile)
        bases[gpu] = f"{args.table}: {table.basis}" if args.table else f"{table.gpu}'s table, {table.basis}"
        sel = [p for p in points if p.gpu == gpu]
        files = sorted({p.source for p in sel})
        if fitted := [f for f in files if table.fitted_to(f)]:
            in_sample |= set(fitted)
            bases[gpu] += (f"; in-sample: the table was fitted to {len(fitted)} of these {len(files)} files "
                           "(--leave-one-model-out predicts each model from the others)")
        refit = None
        if args.leave_one_model_out:
            fixed = calibration_fixed([Path(c) for c in args.calibration], profile)
            fixed.setdefault("memory_overhead_fraction", table.memory_overhead_fraction)

            def refit(pts: Sequence[MeasuredPoint], profile=profile, fixed=fixed, table=table) -> EfficiencyTable:
                return fit_table(pts, gpu=profile.name, host=table.host, source="leave-one-model-out fit",
                                 fixed=fixed).table

        rows += validate(sel, table, refit)
    summary = summarize(rows)
    if args.json:
        print(json.dumps({
            "tool": "tpsbench", "version": __version__, "command": "validate",
            "points": [{"source": r.point.source, "label": r.point.label, "gpu": r.point.gpu,
                        "kind": r.point.key.scope, "measured_s": r.point.median_s, "expected_s": r.expected_s,
                        "floor_s": r.floor_s, "in_sample": r.point.source in in_sample,
                        "error": r.error, "floor_error": r.floor_error, "lomo_expected_s": r.lomo_expected_s,
                        "lomo_error": r.lomo_error, "expected_gpu_idle_fraction": r.expected_idle_fraction,
                        "measured_peak_bytes": r.point.peak_memory_bytes,
                        "expected_peak_bytes": r.expected_peak_bytes, "memory_error": r.memory_error}
                       for r in rows],
            "summary": [asdict(s) for s in summary], "tables": bases,
        }, indent=2))
        return 0
    tables = [] if args.summary else [validation_table(rows, lomo=args.leave_one_model_out)]
    show(console, [*tables, summary_table(summary, lomo=args.leave_one_model_out),
                   *(f"{gpu}: estimated with {basis}" for gpu, basis in bases.items())])
    return 0
