"""Command line: parse, call a function that returns data, render. Bad input exits 2 with one line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tpsbench import __version__
from tpsbench.analysis.check import DEFAULT_THRESHOLD, check
from tpsbench.analysis.compare import compare
from tpsbench.analysis.explain import MeasuredCsvError, explain, read_measured_csv
from tpsbench.analysis.points import entries_from_doc, load_entries
from tpsbench.bench.calibrate import (
    CalibrationError,
    best_ceilings,
    default_calibration_path,
    latest_calibration,
    load_calibration,
    run_calibration,
)
from tpsbench.bench.env import DeviceError, resolve_gpu
from tpsbench.bench.runner import RunConfig, execute, plan, run_config_from_doc
from tpsbench.bench.timing import TimingConfig
from tpsbench.costmodel import MOE_IMPLS, POLICIES, Workload, get_policy
from tpsbench.counters.sampler import DEFAULT_INTERVAL_S
from tpsbench.models import BRACKETS, MODELS, UnknownNameError, closest_choices_message, get_model
from tpsbench.nn.experts import EXPERT_IMPLS
from tpsbench.nn.moe import DEFAULT_SKEW, ROUTING_MODES
from tpsbench.plot import PlotError, plot_results
from tpsbench.profiles import GPUProfile, ProfileError, load_all_profiles, load_profile
from tpsbench.report import (
    calibration_table,
    gpus_table,
    impls_table,
    models_table,
    print_prediction,
    run_notes,
    run_table,
    summary_table,
)
from tpsbench.report_analysis import (
    TableData,
    check_summary,
    check_table,
    compare_tables,
    explain_tables,
    to_markdown,
    to_rich,
)
from tpsbench.results import ResultsError, atomic_write_json, default_path, finite, load_results
from tpsbench.roofline import CeilingError, CeilingSource, predict

DEFAULT_MICROBATCH = 32768  # the users' microbatch (tokens), ../shared/DESIGN.md
DEFAULT_GLOBAL_BATCH = 1_048_576  # the users' global batch (tokens)


CEILING_CHOICES = [c.value for c in CeilingSource]
RUN_IMPLS = (*EXPERT_IMPLS, *BRACKETS)
LAYER_CHOICES = ("attention", "mlp", "moe", *BRACKETS)


class UsageError(ValueError):
    """Bad command-line input: printed as one line, exit code 2."""


def parse_batches(text: str, seq_len: int) -> list[int]:
    """``"4096,16384,32768"`` -> ints; each a positive integer multiple of ``seq_len``."""
    out = []
    for item in text.split(","):
        item = item.strip()
        try:
            value = int(item)
        except ValueError:
            raise UsageError(
                f"--batch '{item}' is not a whole number of tokens; give e.g. --batch {seq_len * 16}"
            ) from None
        if value <= 0:
            raise UsageError(f"--batch {value} must be positive; give e.g. --batch {seq_len * 16}")
        if value % seq_len:
            lower = max(seq_len, value // seq_len * seq_len)
            upper = (value // seq_len + 1) * seq_len
            closest = sorted({lower, upper})
            raise UsageError(
                f"--batch {value} is not a multiple of --seq {seq_len}; closest valid choices: "
                + ", ".join(str(c) for c in closest)
            )
        out.append(value)
    return out


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be positive")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value} must be positive")
    return value


class _OneLineErrorParser(argparse.ArgumentParser):
    """argparse prints the usage block before an error; tpsbench prints one line, exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineErrorParser(
        prog="tpsbench",
        description="Throughput of dense and MoE transformer training on GPUs: cost model, roofline, "
        "measurements.",
    )
    parser.add_argument("--version", action="version", version=f"tpsbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    pr = sub.add_parser("predict", help="roofline prediction of a training step; no GPU needed")
    pr.add_argument("--gpu", required=True, help="GPU profile name (see `tpsbench list gpus`) or a .toml file")
    pr.add_argument("--model", required=True, help="zoo model or OLMo-core name (see `tpsbench list models`)")
    pr.add_argument("--batch", default=str(DEFAULT_MICROBATCH),
                    help=f"tokens per microbatch, comma-separated (default {DEFAULT_MICROBATCH})")
    pr.add_argument("--seq", type=_positive_int, default=None, help="sequence length (default: the model's)")
    pr.add_argument("--global-batch", type=_positive_int, default=None,
                    help=f"tokens per optimizer step, a multiple of each microbatch (default {DEFAULT_GLOBAL_BATCH:,} "
                    "rounded down to a multiple of the microbatch)")
    pr.add_argument("--impl", default="dropless", help=f"MoE implementation: {', '.join(MOE_IMPLS)}")
    pr.add_argument("--capacity-factor", type=_positive_float, default=None,
                    help="capacity factor for --impl capacity (default: the model's, else 1.2)")
    pr.add_argument("--dtype", default="amp_bf16", help=f"dtype policy: {', '.join(POLICIES)}")
    pr.add_argument("--ceilings", default="spec", help=f"roofline ceilings: {', '.join(CEILING_CHOICES)}")
    pr.add_argument("--calibration", default=None, help="calibration file for --ceilings calibrated (default: the "
                    "newest results/calibration/*-GPU.json)")
    pr.add_argument("--summary", action="store_true", help="totals only, no per-op table")
    pr.add_argument("--json", action="store_true", help="print JSON instead of tables")

    rn = sub.add_parser("run", help="measure micro (layer) and end-to-end (training step) benchmarks")
    rn.add_argument("--gpu", default="auto", help="GPU profile of the present GPU, or auto (default); with "
                    "--device cpu, a profile only for predictions")
    rn.add_argument("--model", required=True, help="zoo model or OLMo-core name")
    rn.add_argument("--device", default=None, choices=["cuda", "cpu"], help="default: cuda if present")
    rn.add_argument("--batch", default=None, help="tokens per microbatch, comma-separated "
                    f"(default {DEFAULT_MICROBATCH} on a GPU, 4 sequences on the CPU)")
    rn.add_argument("--seq", type=_positive_int, default=None, help="sequence length (default: the model's)")
    rn.add_argument("--impl", default=None, help="comma-separated MoE implementations and brackets "
                    f"(default: all: {', '.join(RUN_IMPLS)}; triton only on a GPU)")
    rn.add_argument("--mode", default="all", choices=["micro", "e2e", "all"])
    rn.add_argument("--routing", default="learned", choices=list(ROUTING_MODES))
    rn.add_argument("--skew", type=_positive_float, default=DEFAULT_SKEW, help="Zipf exponent for --routing skewed")
    rn.add_argument("--dtype", default=None, help="dtype policy (default: amp_bf16 on a GPU, fp32 on the CPU)")
    rn.add_argument("--compile", action="store_true", help="torch.compile the model in e2e points")
    rn.add_argument("--global-batch", type=_positive_int, default=None,
                    help="e2e: tokens per optimizer step via gradient accumulation (default: one microbatch)")
    rn.add_argument("--no-stages", action="store_true", help="skip the per-stage MoE timings")
    rn.add_argument("--layers", default=None, help="micro: only these layers, comma-separated "
                    f"(from {', '.join(LAYER_CHOICES)}; default all)")
    rn.add_argument("--reps", type=_positive_int, default=None, help="minimum timed repetitions per point")
    rn.add_argument("--min-time", type=_positive_float, default=None, help="minimum measured seconds per point")
    rn.add_argument("--ceilings", default="spec", help=f"ceilings of the predictions: {', '.join(CEILING_CHOICES)}")
    rn.add_argument("--calibration", default=None, help="calibration file for --ceilings calibrated")
    rn.add_argument("--no-counters", action="store_true", help="do not sample NVML/GPM counters")
    rn.add_argument("--no-gpu-time", action="store_true",
                    help="do not profile extra calls for GPU busy/idle time (the overhead-bound evidence)")
    rn.add_argument("--counter-interval", type=_positive_float, default=DEFAULT_INTERVAL_S,
                    help=f"counter sampling interval in seconds (default {DEFAULT_INTERVAL_S})")
    rn.add_argument("--counter-window", type=_positive_float, default=TimingConfig().counter_window_s,
                    help="seconds of back-to-back repetitions per point read by the counters, after the timed "
                         f"ones (default {TimingConfig().counter_window_s})")
    rn.add_argument("--out", default=None, help="results file (default results/<time>-<gpu>-<model>.json)")
    rn.add_argument("--json", action="store_true", help="print the results document instead of tables")

    cb = sub.add_parser("calibrate", help="measure this GPU's matmul TFLOP/s and memory GB/s (and the counter "
                        "sampler's overhead)")
    cb.add_argument("--gpu", default="auto", help="profile of the present GPU, or auto (default)")
    cb.add_argument("--quick", action="store_true", help="two matmul shapes instead of five")
    cb.add_argument("--counter-interval", type=_positive_float, default=DEFAULT_INTERVAL_S)
    cb.add_argument("--out", default=None, help="default results/calibration/<time>-<gpu>.json")
    cb.add_argument("--json", action="store_true", help="print the calibration document")

    cp = sub.add_parser("compare", help="results side by side across GPUs, models and implementations, with verdicts")
    cp.add_argument("results", nargs="+", help="results JSON files written by `tpsbench run`")
    cp.add_argument("--all-points", action="store_true", help="every point (default: train steps and layer fwd_bwd)")
    cp.add_argument("--markdown", default=None, help="also write the tables as markdown to this file")
    cp.add_argument("--json", action="store_true", help="print JSON instead of tables")

    ex = sub.add_parser("explain", help="tokens/s measured elsewhere (CSV) against tpsbench's predictions")
    ex.add_argument("--measured", required=True, help="CSV with columns model, gpu, tokens_per_s [, tokens, impl]")
    ex.add_argument("--ceilings", default="spec", choices=["spec", "measured"],
                    help="roofline ceilings of the predictions (default: datasheet)")
    ex.add_argument("--markdown", default=None, help="also write the tables as markdown to this file")
    ex.add_argument("--json", action="store_true", help="print JSON instead of tables")

    pl = sub.add_parser("plot", help="roofline chart and tokens/s versus batch size from results files")
    pl.add_argument("results", nargs="+", help="results JSON files written by `tpsbench run`")
    pl.add_argument("-o", "--out", required=True, help="output image: .png, .svg or .pdf")
    pl.add_argument("--all-points", action="store_true", help="every point (default: train steps and layer fwd_bwd)")

    ck = sub.add_parser("check", help="regression check against a baseline run; exit 1 on a regression")
    ck.add_argument("--baseline", required=True, help="baseline results JSON (e.g. results/baselines/...)")
    ck.add_argument("--current", default=None,
                    help="results JSON to check; without it, the baseline's configuration is run on this machine")
    ck.add_argument("--threshold", type=_positive_float, default=DEFAULT_THRESHOLD * 100,
                    help=f"smallest change in percent that counts (default {DEFAULT_THRESHOLD * 100:g})")
    ck.add_argument("--device", default=None, choices=["cuda", "cpu"], help="device of the run (default: the "
                    "baseline's)")
    ck.add_argument("--reps", type=_positive_int, default=None, help="minimum timed repetitions per point")
    ck.add_argument("--min-time", type=_positive_float, default=None, help="minimum measured seconds per point")
    ck.add_argument("--out", default=None, help="results file of the run (default results/<time>-<gpu>-<model>.json)")
    ck.add_argument("--allow-missing", action="store_true",
                    help="baseline points the current run did not measure are listed but do not fail the check")
    ck.add_argument("--allow-gpu-mismatch", action="store_true",
                    help="compare runs from different GPUs (normally an error: the numbers are not comparable)")
    ck.add_argument("--markdown", default=None, help="also write the summary to this file (e.g. a CI job summary)")
    ck.add_argument("--json", action="store_true", help="print JSON instead of markdown")

    ls = sub.add_parser("list", help="list models, GPU profiles or MoE implementations")
    ls.add_argument("what", nargs="?", default="models", choices=["models", "gpus", "impls"])
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def _calibration(args: argparse.Namespace, profile: GPUProfile | None) -> dict[str, object] | None:
    """Best ceilings of the calibration file that --ceilings calibrated asks for (None otherwise)."""
    if args.ceilings not in CEILING_CHOICES:
        raise UsageError(f"--ceilings '{args.ceilings}': choose one of {', '.join(CEILING_CHOICES)}")
    if args.ceilings != "calibrated" or profile is None:
        return None
    path = Path(args.calibration) if args.calibration else latest_calibration(Path("results"), profile.name)
    if path is None:
        raise UsageError(f"no results/calibration/*-{profile.name}.json: run `tpsbench calibrate` on that GPU, "
                         "pass --calibration FILE, or use --ceilings spec")
    best = best_ceilings(load_calibration(path))
    return {**best, "path": str(path)}


def cmd_predict(args: argparse.Namespace, console: Console) -> int:
    model = get_model(args.model)
    profile = load_profile(args.gpu)
    policy = get_policy(args.dtype)
    calibration = _calibration(args, profile)
    if args.impl not in MOE_IMPLS:
        raise UnknownNameError(f"unknown MoE implementation '{args.impl}': choose one of {', '.join(MOE_IMPLS)}")
    seq = args.seq or model.seq_len
    batches = parse_batches(args.batch, seq)
    preds = []
    for tokens in batches:
        if args.global_batch is not None:
            if args.global_batch % tokens:
                raise UsageError(
                    f"--global-batch {args.global_batch} is not a multiple of the microbatch {tokens}; "
                    f"closest valid choices: {max(tokens, args.global_batch // tokens * tokens)}, "
                    f"{(args.global_batch // tokens + 1) * tokens}"
                )
            global_batch = args.global_batch
        else:
            global_batch = max(tokens, DEFAULT_GLOBAL_BATCH // tokens * tokens)
        work = Workload(model=model, tokens=tokens, seq_len=seq, impl=args.impl,
                        capacity_factor=args.capacity_factor, policy=policy)
        preds.append(predict(work, profile, ceilings=args.ceilings, global_batch_tokens=global_batch,
                             calibration=calibration))
    if args.json:
        doc = {
            "tool": "tpsbench", "version": __version__, "command": "predict",
            "profile": profile.describe(),
            "model": {"name": model.name, "olmo_name": model.olmo_name, "total_params": model.total_params,
                      "active_params": model.active_params},
            "dtype_policy": {"name": policy.name, "description": policy.description},
            "predictions": [p.to_dict() for p in preds],
        }
        print(json.dumps(doc, indent=2))
        return 0
    for p in preds:
        print_prediction(console, p, ops=not args.summary)
    if len(preds) > 1:
        console.print(summary_table(preds))
    return 0


def _run_config(args: argparse.Namespace) -> RunConfig:
    model = get_model(args.model)
    device = args.device or ("cuda" if torch.cuda.is_available() else None)
    if device is None:
        raise DeviceError(
            "no CUDA GPU found: measure on the CPU with --device cpu (small models, e.g. --model moe_tiny), "
            "or predict without hardware with `tpsbench predict --gpu GPU --model MODEL`"
        )
    profile = resolve_gpu(args.gpu, device)
    seq = args.seq or model.seq_len
    batches = parse_batches(args.batch or str(DEFAULT_MICROBATCH if device == "cuda" else 4 * seq), seq)
    # Triton kernels need a GPU (or TRITON_INTERPRET=1, far too slow to benchmark): not a CPU default.
    defaults = [i for i in RUN_IMPLS if device == "cuda" or i != "triton"]
    impls = [i.strip() for i in (args.impl or ",".join(defaults)).split(",") if i.strip()]
    for impl in impls:
        if impl not in RUN_IMPLS:
            raise UsageError(closest_choices_message("MoE implementation", impl, list(RUN_IMPLS)))
    policy = get_policy(args.dtype or ("amp_bf16" if device == "cuda" else "fp32"))
    if policy.autocast and device == "cpu":
        raise UsageError("--dtype amp_bf16 needs a GPU; on the CPU use --dtype fp32 (the default there)")
    if args.global_batch is not None:
        for tokens in batches:
            if args.global_batch % tokens:
                raise UsageError(f"--global-batch {args.global_batch} is not a multiple of the microbatch {tokens}")
    micro_t, e2e_t = TimingConfig(), TimingConfig(warmup=2, min_reps=5, min_time_s=1.0)
    if device == "cpu":  # CPU runs are for correctness of the pipeline and small models: keep them short
        micro_t, e2e_t = TimingConfig(warmup=1, min_reps=5, min_time_s=0.05), TimingConfig(1, 3, 0.1)
    if args.reps or args.min_time:
        micro_t = TimingConfig(micro_t.warmup, args.reps or micro_t.min_reps, args.min_time or micro_t.min_time_s,
                               max(micro_t.max_reps, args.reps or 0))
        e2e_t = TimingConfig(e2e_t.warmup, args.reps or e2e_t.min_reps, args.min_time or e2e_t.min_time_s,
                             max(e2e_t.max_reps, args.reps or 0))
    micro_t = dataclasses.replace(micro_t, counter_window_s=args.counter_window)
    e2e_t = dataclasses.replace(e2e_t, counter_window_s=args.counter_window)
    layers = None
    if args.layers:
        layers = [name.strip() for name in args.layers.split(",") if name.strip()]
        for name in layers:
            if name not in LAYER_CHOICES:
                raise UsageError(closest_choices_message("layer", name, list(LAYER_CHOICES)))
    calibration = _calibration(args, profile)
    if args.ceilings != "spec" and profile is None:
        raise UsageError("--ceilings applies to GPU predictions; a CPU run has none")
    return RunConfig(model=model, profile=profile, device=device, batches=batches, seq_len=seq, impls=impls,
                     layers=layers, ceilings=args.ceilings, calibration=calibration, counters=not args.no_counters,
                     counter_interval_s=args.counter_interval, gpu_time=not args.no_gpu_time,
                     mode=args.mode, routing=args.routing, skew=args.skew, policy=policy,
                     compile_model=args.compile, global_batch=args.global_batch, micro_timing=micro_t,
                     e2e_timing=e2e_t, stages=not args.no_stages)


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    # One process runs workloads of very different sizes; without expandable segments the caching
    # allocator fragments and a later point can OOM on memory an earlier one left reserved (seen on an
    # H100: 8.5 GiB reserved-but-unallocated at an OOM). A user's own setting wins.
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    cfg = _run_config(args)
    gpu_tag = cfg.profile.name if cfg.profile and cfg.device == "cuda" else cfg.device
    out = Path(args.out) if args.out else default_path(Path("results"), gpu_tag, cfg.model.name)
    total = len(plan(cfg))
    status_console = Console(stderr=True) if args.json else console
    status_console.print(f"tpsbench run: {cfg.model.name} on {gpu_tag}, {total} points -> {out}", highlight=False)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=status_console, transient=False)
    with progress:
        task = progress.add_task("starting", total=total)

        def on_point(done: int, _total: int, record: dict[str, object]) -> None:
            progress.update(task, completed=done, description=f"{record['label']}: {record['status']}")

        try:
            writer = execute(cfg, out, on_point)
        except KeyboardInterrupt:
            status_console.print(f"interrupted: finished points are in {out}", highlight=False)
            return 130
    if args.json:
        print(json.dumps(writer.doc, indent=1))
    else:
        console.print(run_table(writer.doc))
        for line in run_notes(writer.doc):
            console.print(line, highlight=False, soft_wrap=True)
    console.print(f"results: {out}", highlight=False) if not args.json else None
    return 0


def cmd_calibrate(args: argparse.Namespace, console: Console) -> int:
    if not torch.cuda.is_available():
        raise DeviceError("calibrate measures a GPU and none is present; for datasheet ceilings use "
                          "`tpsbench predict --ceilings spec`, for a profile's cited measurements --ceilings measured")
    profile = resolve_gpu(args.gpu, "cuda")
    assert profile is not None
    out = Path(args.out) if args.out else default_calibration_path(Path("results"), profile.name)
    doc = run_calibration(profile, quick=args.quick, interval_s=args.counter_interval,
                          log=lambda msg: console.print(msg, highlight=False) if not args.json else None)
    atomic_write_json(out, doc)
    if args.json:
        print(json.dumps(doc, indent=1))
    else:
        console.print(calibration_table(doc, profile))
        console.print(f"calibration: {out}", highlight=False)
    return 0


def _emit_tables(tables: list[TableData], console: Console, markdown: str | None, preamble: str = "") -> None:
    for t in tables:
        console.print(to_rich(t))
    if markdown:
        text = (preamble + "\n\n" if preamble else "") + "\n".join(to_markdown(t) for t in tables)
        Path(markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(markdown).write_text(text, encoding="utf-8")
        console.print(f"markdown: {markdown}", highlight=False)


def cmd_compare(args: argparse.Namespace, console: Console) -> int:
    comparison = compare(load_entries(args.results), all_points=args.all_points)
    if args.json:
        print(json.dumps(finite(comparison.to_dict()), indent=1))
        return 0
    _emit_tables(compare_tables(comparison), console, args.markdown)
    for note in comparison.notes:
        console.print(f"note: {note}", highlight=False)
    return 0


def cmd_explain(args: argparse.Namespace, console: Console) -> int:
    result = explain(read_measured_csv(args.measured), ceilings=args.ceilings)
    if args.json:
        print(json.dumps(finite(result.to_dict()), indent=1))
        return 0
    _emit_tables(explain_tables(result), console, args.markdown, preamble=f"**Summary:** {result.summary}")
    console.print(f"summary: {result.summary}", highlight=False, soft_wrap=True)
    return 0


def cmd_plot(args: argparse.Namespace, console: Console) -> int:
    out = plot_results(load_entries(args.results), args.out, all_points=args.all_points)
    console.print(f"plot: {out}", highlight=False)
    return 0


def _baseline_run(args: argparse.Namespace, baseline: dict[str, object]) -> dict[str, object]:
    """Run the baseline's configuration on this machine and return the new results document."""
    try:
        cfg = run_config_from_doc(baseline, device=args.device, reps=args.reps, min_time=args.min_time,
                                  allow_gpu_mismatch=args.allow_gpu_mismatch)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    gpu_tag = cfg.profile.name if cfg.profile and cfg.device == "cuda" else cfg.device
    out = Path(args.out) if args.out else default_path(Path("results"), gpu_tag, cfg.model.name)
    Console(stderr=True).print(f"tpsbench check: running the baseline's {len(plan(cfg))} points of "
                               f"{cfg.model.name} on {gpu_tag} -> {out}", highlight=False)
    return execute(cfg, out).doc


def cmd_check(args: argparse.Namespace, console: Console) -> int:
    base_doc = load_results(args.baseline)
    if args.current:
        cur_doc, cur_name = load_results(args.current), args.current
    else:
        os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
        cur_doc = _baseline_run(args, base_doc)
        cur_name = "this run"
    if base_doc["config"].get("model") != cur_doc["config"].get("model"):
        raise UsageError(f"baseline measures {base_doc['config'].get('model')}, current "
                         f"{cur_doc['config'].get('model')}: check a run of the same model")
    gpus = [d["machine"].get("profile") if d["config"].get("device") == "cuda" else "cpu" for d in (base_doc, cur_doc)]
    if gpus[0] != gpus[1] and not args.allow_gpu_mismatch:
        raise UsageError(f"baseline ran on {gpus[0]}, current on {gpus[1]}: times are not comparable across "
                         "devices; use a baseline of this GPU, or pass --allow-gpu-mismatch")
    report = check(entries_from_doc(base_doc, args.baseline), entries_from_doc(cur_doc, cur_name),
                   threshold=args.threshold / 100, baseline_name=args.baseline, current_name=cur_name,
                   allow_missing=args.allow_missing)
    summary = check_summary(report)
    if args.json:
        print(json.dumps(finite(report.to_dict()), indent=1))
    else:
        md = f"### tpsbench check: {summary}\n\n" + to_markdown(check_table(report))
        print(md)
        if args.markdown:
            Path(args.markdown).write_text(md, encoding="utf-8")
    return 1 if report.failed else 0


def cmd_list(args: argparse.Namespace, console: Console) -> int:
    if args.what == "models":
        models = list(MODELS.values())
        if args.json:
            print(json.dumps([{"name": m.name, "olmo_name": m.olmo_name, "d_model": m.d_model,
                               "n_layers": m.n_layers, "n_heads": m.n_heads, "total_params": m.total_params,
                               "active_params": m.active_params} for m in models], indent=2))
        else:
            console.print(models_table(models))
    elif args.what == "gpus":
        profiles = load_all_profiles()
        if args.json:
            print(json.dumps([p.describe() for p in profiles], indent=2))
        else:
            console.print(gpus_table(profiles))
    else:
        if args.json:
            print(json.dumps(MOE_IMPLS, indent=2))
        else:
            console.print(impls_table())
    return 0


COMMANDS = {"compare": cmd_compare, "explain": cmd_explain, "plot": cmd_plot, "check": cmd_check}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # A terminal gets its own width; a pipe or file gets room for the widest table.
    console = Console() if sys.stdout.isatty() else Console(width=170)
    try:
        if args.command == "predict":
            return cmd_predict(args, console)
        if args.command == "run":
            return cmd_run(args, console)
        if args.command == "calibrate":
            return cmd_calibrate(args, console)
        if args.command in COMMANDS:
            try:
                return COMMANDS[args.command](args, console)
            except OSError as exc:  # an output path that cannot be written (the inputs were read already)
                raise UsageError(f"cannot write {exc.filename}: {exc.strerror}; choose a writable path") from None
        return cmd_list(args, console)
    except (UsageError, UnknownNameError, ProfileError, CeilingError, DeviceError, CalibrationError, ResultsError,
            MeasuredCsvError, PlotError) as exc:
        print(f"tpsbench {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
