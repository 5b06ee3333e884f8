"""`tpsbench compare`, `explain`, `plot` and `check`: analyses of results files (check may measure first)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from rich.console import Console

from tpsbench.analysis.check import DEFAULT_THRESHOLD, check
from tpsbench.analysis.compare import compare
from tpsbench.analysis.explain import explain, read_measured_csv
from tpsbench.analysis.points import entries_from_doc, load_entries
from tpsbench.bench.config import rerun_config
from tpsbench.bench.runner import execute, plan
from tpsbench.cli.args import UsageError, add_json, positive_float
from tpsbench.cli.measure import add_timing_args, use_expandable_segments
from tpsbench.plot import plot_results
from tpsbench.profiles import gpu_label
from tpsbench.provenance import differing_files
from tpsbench.report_analysis import (
    TableData,
    check_summary,
    check_table,
    compare_tables,
    explain_tables,
    to_markdown,
    to_rich,
)
from tpsbench.results import RunDoc, finite, load_results
from tpsbench.results.io import check_output


def _emit(args: argparse.Namespace, console: Console, data: dict[str, object], tables: list[TableData],
          preamble: str = "") -> None:
    """``--json``: the data; else the tables on the terminal, and as markdown to ``--markdown`` if given."""
    if args.json:
        print(json.dumps(finite(data), indent=1))
        return
    for t in tables:
        console.print(to_rich(t))
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
    comparison = compare(load_entries(args.results), all_points=args.all_points, calibrations=args.calibration)
    _emit(args, console, comparison.to_dict(), compare_tables(comparison, estimate=args.estimate))
    for note in [] if args.json else comparison.notes:
        console.print(f"note: {note}", highlight=False)
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
        console.print(f"summary: {result.summary}", highlight=False, soft_wrap=True)
    return 0


def add_plot_args(pl: argparse.ArgumentParser) -> None:
    pl.add_argument("results", nargs="+", help="results JSON files written by `tpsbench run`")
    pl.add_argument("-o", "--out", required=True, help="output image: .png, .svg or .pdf")
    pl.add_argument("--all-points", action="store_true", help="every point (default: train steps and layer fwd_bwd)")
    add_json(pl, "a line (the image's path and what it shows)")


def cmd_plot(args: argparse.Namespace, console: Console) -> int:
    entries = load_entries(args.results)
    out = plot_results(entries, args.out, all_points=args.all_points)
    if args.json:
        shown = [e for e in entries if e.status == "ok" and (args.all_points or e.is_headline)]
        print(json.dumps({"plot": str(out), "points": [e.label for e in shown],
                          "gpus": sorted({e.gpu for e in shown})}, indent=1))
    else:
        console.print(f"plot: {out}", highlight=False)
    return 0


def add_check_args(ck: argparse.ArgumentParser) -> None:
    ck.add_argument("--baseline", required=True, help="baseline results JSON (e.g. results/baselines/...)")
    ck.add_argument("--current", default=None,
                    help="results JSON to check; without it, the baseline's configuration is run on this machine")
    ck.add_argument("--threshold", type=positive_float, default=DEFAULT_THRESHOLD * 100,
                    help=f"smallest change in percent that counts (default {DEFAULT_THRESHOLD * 100:g})")
    ck.add_argument("--device", default=None, choices=["cuda", "cpu"], help="device of the run (default: the "
                    "baseline's)")
    add_timing_args(ck)
    ck.add_argument("--out", default=None, help="results file of the run (default results/<time>-<gpu>-<model>.json)")
    ck.add_argument("--allow-missing", action="store_true",
                    help="baseline points the current run did not measure are listed but do not fail the check")
    ck.add_argument("--allow-gpu-mismatch", action="store_true",
                    help="compare runs from different GPUs (normally an error: the numbers are not comparable)")
    ck.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    ck.add_argument("--markdown", default=None, help="also append the summary to this file (e.g. "
                    "$GITHUB_STEP_SUMMARY: one section per check)")
    add_json(ck, "markdown")


def _baseline_run(args: argparse.Namespace, baseline: RunDoc) -> RunDoc:
    """Run the baseline's configuration on this machine and return the new results document."""
    from rich.console import Console as StderrConsole

    cfg = rerun_config(baseline, device=args.device, cuda_available=torch.cuda.is_available(), reps=args.reps,
                       min_time=args.min_time, allow_gpu_mismatch=args.allow_gpu_mismatch)
    out = Path(args.out) if args.out else cfg.default_out()
    check_output(out, overwrite=args.overwrite)  # before anything runs
    status = StderrConsole(stderr=True)
    status.print(f"tpsbench check: running the baseline's {len(plan(cfg))} points of {cfg.model.name} on "
                 f"{cfg.gpu_label} -> {out}", highlight=False)
    try:
        return execute(cfg, out, overwrite=args.overwrite).doc
    except KeyboardInterrupt:
        status.print(f"interrupted: finished points are in {out}; nothing was checked", highlight=False)
        raise


def _run_gpu(doc: RunDoc) -> str:
    return gpu_label(doc.config.device, doc.machine.profile)


def cmd_check(args: argparse.Namespace, console: Console) -> int:
    base_doc = load_results(args.baseline)
    if args.current and args.out:
        raise UsageError("--out names the results of a run, and with --current nothing is run: drop one of them")
    if args.current:
        cur_doc, cur_name = load_results(args.current), args.current
    else:
        use_expandable_segments()
        cur_doc = _baseline_run(args, base_doc)
        cur_name = "this run"
    if base_doc.config.model != cur_doc.config.model:
        raise UsageError(f"baseline measures {base_doc.config.model}, current {cur_doc.config.model}: check a run of "
                         "the same model")
    gpus = [_run_gpu(d) for d in (base_doc, cur_doc)]
    if gpus[0] != gpus[1] and not args.allow_gpu_mismatch:
        raise UsageError(f"baseline ran on {gpus[0]}, current on {gpus[1]}: times are not comparable across "
                         "devices; use a baseline of this GPU, or pass --allow-gpu-mismatch")
    report = check(entries_from_doc(base_doc, args.baseline), entries_from_doc(cur_doc, cur_name),
                   threshold=args.threshold / 100, baseline_name=args.baseline, current_name=cur_name,
                   allow_missing=args.allow_missing)
    if args.json:
        print(json.dumps(finite(report.to_dict()), indent=1))
    else:
        md = f"### tpsbench check: {check_summary(report)}\n\n" + to_markdown(check_table(report))
        print(md)
        if args.markdown:  # appended: a CI job summary collects every model's check in one file
            with Path(args.markdown).open("a", encoding="utf-8") as f:
                f.write(md + "\n")
    return 1 if report.failed else 0


def add_provenance_args(pv: argparse.ArgumentParser) -> None:
    pv.add_argument("results", nargs="+", help="results JSON files")
    add_json(pv, "a table")


def cmd_provenance(args: argparse.Namespace, console: Console) -> int:
    """Which code wrote each file, and whether it is the code of this tree (file by file, by content hash)."""
    rows = []
    for path in args.results:
        prov = load_results(path).provenance
        if not prov.source_files:
            same, detail = None, "written before source hashes (schema 1): unknown"
        else:
            differ = differing_files(prov.source_files)
            same = not differ
            detail = (f"all {len(prov.source_files)} source files as in this tree" if same else
                      f"{len(differ)} of {len(prov.source_files)} source files differ: " + ", ".join(differ[:4])
                      + (" ..." if len(differ) > 4 else ""))
        rows.append({"file": path, "git_commit": prov.git_commit, "dirty": prov.dirty,
                     "v1_git_commit": prov.v1_git_commit, "source_hash": prov.source_hash,
                     "same_code_as_this_tree": same, "detail": detail})
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    t = TableData("Provenance: the code that wrote each file, against this tree",
                  ["file", "commit", "source hash", "this tree's code", "detail"],
                  left={"file", "commit", "source hash", "this tree's code", "detail"})
    for r in rows:
        commit = r["git_commit"] or (f"{r['v1_git_commit']} (as recorded by schema 1)" if r["v1_git_commit"]
                                     else "n/a (uncommitted changes)" if r["dirty"] else "n/a")
        same = {True: "yes", False: "no", None: "unknown"}[r["same_code_as_this_tree"]]
        t.rows.append([str(r["file"]), str(commit), str(r["source_hash"] or "n/a")[:16], same, str(r["detail"])])
    console.print(to_rich(t))
    return 0
