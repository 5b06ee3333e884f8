"""Argument types and the parser that prints one line: argparse's usage block stays out of the way."""

from __future__ import annotations

import argparse
import math
from typing import NoReturn

from tpsbench.errors import InputError


class UsageError(InputError):
    """Bad command-line input: printed as one line, exit code 2."""


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be positive")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{value} must be a positive finite number")
    return value


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse prints the usage block before an error; tpsbench prints one line, exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_json(p: argparse.ArgumentParser, what: str = "tables") -> None:
    p.add_argument("--json", action="store_true", help=f"print JSON instead of {what}")


MODEL_HELP = ("a model name or OLMo-core name (`tpsbench list models`), a model .toml file, an OLMo-core or Hugging "
              "Face config.json, or a variant BASE:key=value,... (docs/models.md)")


def parse_prices(items: list[str]) -> dict[str, float]:
    """``--price GPU=USD_PER_HOUR`` flags as GPU profile name -> dollars per GPU-hour."""
    from tpsbench.profiles import load_profile

    out = {}
    for item in items:
        gpu, sep, usd = item.partition("=")
        try:
            value = float(usd)
        except ValueError:
            value = -1.0
        if not sep or not gpu or not value > 0:
            raise UsageError(f"--price '{item}': give GPU=USD_PER_HOUR with a positive price, e.g. h100=2.5")
        out[load_profile(gpu.strip()).name] = value
    return out
