"""Command line: parse, call a function that returns data, render. One table of subcommands, one dispatch
path; bad input of any command is one line on stderr and exit code 2 (an :class:`~tpsbench.errors.InputError`
or an output path that cannot be written). Commands that measure nothing never import torch: the command
modules import it, and what needs it, inside the commands that measure."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tpsbench import __version__
from tpsbench.cli import analyze, check, estimate, listing, measure, plan, predict, scaling, worth
from tpsbench.cli.args import OneLineErrorParser
from tpsbench.errors import InputError
from tpsbench.report.tables import output_width

if TYPE_CHECKING:
    from rich.console import Console


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, Console], int]


COMMANDS: tuple[Command, ...] = (
    Command("predict", "roofline prediction of a training step; no GPU needed", predict.add_predict_args,
            predict.cmd_predict),
    Command("run", "measure micro (layer) and end-to-end (training step) benchmarks", measure.add_run_args,
            measure.cmd_run),
    Command("calibrate", "measure this GPU's matmul TFLOP/s and memory GB/s (and the counter sampler's overhead)",
            measure.add_calibrate_args, measure.cmd_calibrate),
    Command("compare", "results side by side across GPUs, models and implementations, with verdicts",
            analyze.add_compare_args, analyze.cmd_compare),
    Command("explain", "tokens/s measured elsewhere (CSV) against tpsbench's predictions", analyze.add_explain_args,
            analyze.cmd_explain),
    Command("validate", "measured points against the expected estimates and floors (errors by kind of point)",
            estimate.add_validate_args, estimate.cmd_validate),
    Command("fit", "fit a GPU's efficiency and host-cost table to measured runs", estimate.add_fit_args,
            estimate.cmd_fit),
    Command("worth", "hours and dollars to a target loss per model and GPU, from loss curves and tokens/s "
            "(is the MoE worth it?)", worth.add_worth_args, worth.cmd_worth),
    Command("plan", "which candidate, on which GPU, reaches a target loss soonest (or the lowest loss within "
            "hours or a budget): a scaling law times expected tokens/s", plan.add_plan_args, plan.cmd_plan),
    Command("scaling", "a scaling law fitted across runs of several models (with intervals and leave-one-run-out "
            "validation), and a model's loss from it", scaling.add_scaling_args, scaling.cmd_scaling),
    Command("plot", "roofline chart and tokens/s versus batch size from results files", analyze.add_plot_args,
            analyze.cmd_plot),
    Command("check", "regression check against a baseline run; exit 1 on a regression", check.add_check_args,
            check.cmd_check),
    Command("provenance", "which code wrote each results file, and whether it is this tree's",
            analyze.add_provenance_args, analyze.cmd_provenance),
    Command("list", "list models, GPU profiles or MoE implementations", listing.add_list_args, listing.cmd_list),
)


BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a command stopped by a closed pipe (`| head`)


def _console() -> Console:
    """The terminal's width (or COLUMNS), 100 columns into a pipe; a closed pipe stops the command quietly."""
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:  # rich exits 1; a command killed by SIGPIPE reports 141
            self.quiet = True
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's flush must not fail again
            raise SystemExit(BROKEN_PIPE)

    return _Console(width=output_width())


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="tpsbench",
        description="Throughput of dense and MoE transformer training on GPUs: cost model, roofline, measurements.",
    )
    parser.add_argument("--version", action="version", version=f"tpsbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_arguments(sub.add_parser(command.name, help=command.help))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = next(c for c in COMMANDS if c.name == args.command)
    try:
        return command.run(args, _console())
    except KeyboardInterrupt:  # what was measured is on disk already (each command says where)
        print(f"tpsbench {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of the output went away (`tpsbench ... | head`): stop quietly, as a
        # command killed by SIGPIPE does; results files are complete on disk
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's flush must not fail again
        return BROKEN_PIPE
    except InputError as exc:
        print(f"tpsbench {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # an output path that cannot be written (inputs are read through InputError paths)
        print(f"tpsbench {args.command}: error: cannot write {exc.filename}: {exc.strerror}; choose a writable path",
              file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
