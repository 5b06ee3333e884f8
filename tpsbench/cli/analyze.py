"""`tpsbench compare`, `explain`, `plot` and `provenance`: analyses of results files (and of tokens/s measured
elsewhere)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from tpsbench.analysis.compare import compare
from tpsbench.analysis.explain import explain, read_measured_csv
from tpsbench.cli.args import add_json
from tpsbench.report.compare import compare_tables
from tpsbench.report.explain import explain_tables
from tpsbench.report.provenance import provenance_table
from tpsbench.report.tables import TableData, show, to_markdown
from tpsbench.results import finite
from tpsbench.results.origin import file_origins
from tpsbench.results.points import load_points
from tpsbench.results.typed import JsonObject

if TYPE_CHECKING:
    from rich.console import Console


def _emit(args: argparse.Namespace, console: Console, data: JsonObject, tables: list[TableData],
          preamble: str = "") -> None:
    """``--json``: the data; else the tables on the terminal, and as markdown to ``--markdown`` if given."""
    if args.json:
        print(json.dumps(finite(data), indent=1))
        return
    show(console, tables)
    if args.markdown:
        text = (preamble + "\n\n" if preamble else "") + "\n".join(to_markdown(t) for t in tables)
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(text, encoding="utf-8")
        console.print(f"markdown: {args.markdown}", highlight=False)


def add_compare_args(cp: argparse.ArgumentParser) -> None:
    cp.add_argument("results", nargs="+", help="results JSON files written by `tpsbench run`")
    cp.add_argument("--all-points", action="store_true", help="every point (default: train steps and layer fwd_bwd)")
    cp.add_argument("--markdown", default=None, help="also write the tables as markdown to this file")
    cp.add_argument("--calibration", action="append", default=[], metavar="CAL",
                    help="a `tpsbench calibrate` file of one of the GPUs (repeatable; later files of a GPU win): the "
                    "speedups also show the ratios of the measured ceilings, and judge by them when both GPUs have one")
    cp.add_argument("--estimate", default="expected", choices=["floor", "expected"],
                    help="also show the training steps against the expected estimate (default), or the floor only; "
                    "--json has both")
    add_json(cp)


def cmd_compare(args: argparse.Namespace, console: Console) -> int:
    comparison = compare(load_points(args.results), all_points=args.all_points, calibrations=args.calibration)
    _emit(args, console, comparison.to_dict(), compare_tables(comparison, estimate=args.estimate))
    if not args.json:
        show(console, [f"note: {note}" for note in comparison.notes])
    return 0


def add_explain_args(ex: argparse.ArgumentParser) -> None:
    ex.add_argument("--measured", required=True, help="CSV with columns model, gpu, tokens_per_s [, tokens, impl]")
    ex.add_argument("--ceilings", default="spec", choices=["spec", "measured"],
                    help="roofline ceilings of the predictions (default: datasheet)")
    ex.add_argument("--markdown", default=None, help="also write the tables as markdown to this file")
    ex.add_argument("--estimate", default="expected", choices=["floor", "expected"],
                    help="show the expected estimate next to the roofline bound (default), or the bound only; --json "
                    "has both")
    add_json(ex)


def cmd_explain(args: argparse.Namespace, console: Console) -> int:
    result = explain(read_measured_csv(args.measured), ceilings=args.ceilings)
    _emit(args, console, result.to_dict(), explain_tables(result, estimate=args.estimate),
          preamble=f"**Summary:** {result.summary}")
    for warning in result.warnings:
        print(f"tpsbench explain: warning: {warning}", file=sys.stderr)
    if not args.json:
        show(console, [f"summary: {result.summary}"])
    return 0


def add_plot_args(pl: argparse.ArgumentParser) -> None:
    pl.add_argument("results", nargs="+", help="results JSON files written by `tpsbench run`")
    pl.add_argument("-o", "--out", required=True, help="output image: .png, .svg or .pdf")
    pl.add_argument("--all-points", action="store_true", help="every point (default: train steps and layer fwd_bwd)")
    add_json(pl, "a line (the image's path and what it shows)")


def cmd_plot(args: argparse.Namespace, console: Console) -> int:
    from tpsbench.report.plot import plot_results

    points = load_points(args.results)
    out = plot_results(points, args.out, all_points=args.all_points)
    if args.json:
        shown = [e for e in points if e.ok and (args.all_points or e.is_headline)]
        print(json.dumps({"plot": str(out), "points": [e.label for e in shown],
                          "gpus": sorted({e.gpu for e in shown})}, indent=1))
    else:
        show(console, [f"plot: {out}"])
    return 0


def add_provenance_args(pv: argparse.ArgumentParser) -> None:
    pv.add_argument("results", nargs="+", help="results JSON files")
    add_json(pv, "a table")


def cmd_provenance(args: argparse.Namespace, console: Console) -> int:
    """Which code wrote each file, and whether it is the code of this tree (file by file, by content hash)."""
    origins = file_origins(args.results)
    if args.json:
        print(json.dumps([asdict(o) for o in origins], indent=1))
        return 0
    show(console, [provenance_table(origins)])
    return 0
