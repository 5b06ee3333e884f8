"""The inputs of `tpsbench worth` beyond the loss CSVs: which runs are which zoo model (``--map``), the curve of
each model in tokens, and the tokens/s of each model on each GPU (measured files, else predicted).

* ``--map RUN=MODEL`` (repeatable) or a TOML file of ``RUN = "MODEL"`` lines (under ``[runs]`` or at the top);
  a run named exactly like a zoo model maps to it without a flag. Several runs of one model are segments of
  one training run, joined by step. Runs no mapping names are listed and left out.
* Throughput: results JSON of `tpsbench run` (its training-step points; the fastest implementation of a model
  on a GPU, brackets such as ``dense_active`` left out: they are not the model), or `explain`'s CSV
  (``model, gpu, tokens_per_s, ...``); without files, `predict`'s floor and expected estimate for each ``--gpu``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np

from tpsbench.analysis.losses import LossRun, join_runs
from tpsbench.costmodel import FlopConvention, Workload, flops_per_token, get_policy, train_workload
from tpsbench.costmodel.step import olmo_pre3_flops_per_token
from tpsbench.errors import InputError, UnknownNameError, parse_toml, read_text
from tpsbench.impls import is_bracket
from tpsbench.models import (
    USERS_MICROBATCH_TOKENS,
    ModelSpec,
    default_global_batch,
    get_model,
    is_known_model,
)
from tpsbench.options import PointKind
from tpsbench.profiles import GPUProfile, load_profile
from tpsbench.results.points import load_points
from tpsbench.roofline import predict

DEFAULT_TOKENS_PER_STEP = 1_048_576  # the users' global batch (OLMo-core configs of the users' runs)


class WorthInputError(InputError):
    """A mapping, throughput file or option `worth` cannot use; one line saying what to change."""


@dataclass(frozen=True, slots=True)
class ModelCurve:
    """One model's loss against cumulative tokens (its mapped runs joined)."""

    model: ModelSpec
    runs: tuple[str, ...]
    tokens: np.ndarray
    losses: np.ndarray
    tokens_source: str  # "tokens column" or "step x N tokens/step"
    implied_flops_per_token: float | None  # from a cumulative-petaflops column, when the file has one
    lr: np.ndarray | None = None  # the learning rate at each point, when the file logs it


class ThroughputBasis(StrEnum):
    """Where a tokens/s comes from, best-founded first."""

    MEASURED = "measured"
    EXPECTED = "predicted expected"
    FLOOR = "predicted floor"


@dataclass(frozen=True, slots=True)
class Throughput:
    """Tokens/s of one model on one GPU, and where the number comes from."""

    model: str
    gpu: str  # profile name
    tokens_per_s: float
    basis: ThroughputBasis
    detail: str  # the implementation and the file (measured) or the workload (predicted)


def parse_map(pairs: Sequence[str]) -> dict[str, str]:
    """``RUN=MODEL`` flags and mapping files (an argument without ``=`` that names a .toml file) as run -> zoo
    model name; an unknown model is an error naming the closest ones."""
    out: dict[str, str] = {}
    for item in pairs:
        if "=" in item:
            run, _, model = item.partition("=")  # the first "=": a variant model has its own
            entries = {run.strip(): model.strip()}
        elif item.endswith(".toml"):
            entries = _read_map_file(Path(item))
        else:
            raise WorthInputError(f"--map '{item}': give RUN=MODEL (one pair per flag) or a .toml mapping file")
        for run, model in entries.items():
            if not run or not model:
                raise WorthInputError(f"--map '{item}': both the run and the model must be named (RUN=MODEL)")
            try:
                out[run] = get_model(model).name
            except UnknownNameError as exc:
                raise WorthInputError(f"--map {run}={model}: {exc}") from None
    return out


def _read_map_file(p: Path) -> dict[str, str]:
    what = 'a TOML mapping file of RUN = "MODEL" lines'
    doc = parse_toml(read_text(p, WorthInputError, what), str(p), WorthInputError, what)
    table = doc.get("runs", doc)
    bad = [k for k, v in table.items() if not isinstance(v, str)]
    if bad:
        raise WorthInputError(f"{p}: '{bad[0]}' is not a string; write RUN = \"MODEL\" (under [runs] or at the top)")
    return dict(table)


def assign_runs(runs: Sequence[LossRun], mapping: dict[str, str]) -> tuple[dict[str, list[LossRun]], list[str]]:
    """Runs grouped by model (mapped, or named exactly like a zoo model) and the names of the runs left out."""
    unknown = sorted(set(mapping) - {r.name for r in runs})
    if unknown:
        names = ", ".join(r.name for r in runs)
        raise WorthInputError(f"--map names run '{unknown[0]}', which no loss file has (runs: {names})")
    by_model: dict[str, list[LossRun]] = {}
    left_out = []
    for r in runs:
        model = mapping.get(r.name) or (r.name if is_known_model(r.name) else None)
        if model is None:
            left_out.append(r.name)
        else:
            by_model.setdefault(model, []).append(r)
    return by_model, left_out


def model_curve(model: str, segments: Sequence[LossRun], tokens_per_step: int) -> ModelCurve:
    joined = join_runs(model, segments)
    steps = np.array(joined.steps, float)
    if joined.tokens is not None:
        tokens, source = np.array(joined.tokens, float), "tokens column"
    else:
        tokens, source = steps * tokens_per_step, f"step x {tokens_per_step:,} tokens/step"
    implied = None
    if joined.petaflops is not None and len(tokens) > 1 and tokens[-1] > tokens[0]:
        implied = (joined.petaflops[-1] - joined.petaflops[0]) * 1e15 / (tokens[-1] - tokens[0])
    elif any(s.petaflops is not None for s in segments):  # only some segments have it: use the longest that does
        seg = max((s for s in segments if s.petaflops is not None and len(s) > 1), key=len, default=None)
        if seg is not None and seg.petaflops is not None:
            seg_tokens = (np.array(seg.tokens, float) if seg.tokens is not None
                          else np.array(seg.steps, float) * tokens_per_step)
            if seg_tokens[-1] > seg_tokens[0]:
                implied = (seg.petaflops[-1] - seg.petaflops[0]) * 1e15 / (seg_tokens[-1] - seg_tokens[0])
    return ModelCurve(get_model(model), tuple(s.name for s in segments), tokens, np.array(joined.losses, float),
                      source, implied, None if joined.lr is None else np.array(joined.lr, float))


def flop_conventions(model: ModelSpec, impl: str | None) -> dict[str, float]:
    """Training FLOPs per token of ``model`` under each convention of the cost model (``exact`` counts ``impl``,
    by default the one the model trained with: capacity padding is work done)."""
    w = _workload(model, impl, USERS_MICROBATCH_TOKENS)
    out = {c.value: flops_per_token(w, c) for c in FlopConvention}
    out[OLMO_PRE3] = float(olmo_pre3_flops_per_token(model, w.seq_len))
    return out


# What OLMo-core logged before 3.0 (``throughput/total petaflops`` of older W&B runs): attention over the full square
OLMO_PRE3 = "olmo pre-3.0"
MATCH_TOLERANCE = 0.02  # a logged FLOP rate within 2% of a convention is that convention (others differ by more)


def matched_convention(conventions: dict[str, float], implied: float) -> tuple[str | None, float]:
    """The convention closest to the FLOPs per token a file's cumulative petaflops imply, and implied / it; None
    when none is within MATCH_TOLERANCE (a run mapped to the wrong model, or another framework's count)."""
    name = min(conventions, key=lambda k: abs(np.log(implied / conventions[k])))
    ratio = implied / conventions[name]
    return (name if abs(ratio - 1) <= MATCH_TOLERANCE else None), ratio


def _workload(model: ModelSpec, impl: str | None, tokens: int) -> Workload:
    chosen = "dense" if model.moe is None else impl or model.trained_impl
    cap = None if model.moe is None else model.moe.capacity_factor
    return train_workload(model, chosen, tokens, get_policy("amp_bf16"), cap)


def read_throughput(paths: Sequence[str], models: set[str], impl: str | None = None) -> list[Throughput]:
    """Measured tokens/s of the models in ``models`` from results JSON or explain CSV files: per model and GPU
    the fastest training step (implementation and compile as measured) of MoE implementation ``impl`` when
    given, else of an implementation computing what the model trained with (a capacity factor drops tokens, so it
    changes the loss curve: a capacity model's tokens/s from a capacity step, a dropless one's from the fastest
    dropless step). A file with none of ``models`` is an error: its numbers would be silently unused."""
    from tpsbench.impls import get_impl

    wanted = None if impl is None else get_impl(impl).name

    def chosen(model: str, name: str) -> bool:
        spec = get_model(model)
        if name == "dense" or spec.moe is None:
            return True
        if wanted is not None:
            return get_impl(name).name == wanted
        return get_impl(name).dropless == (spec.trained_impl == "dropless")

    from tpsbench.analysis.explain import read_measured_csv

    out: list[Throughput] = []
    for path in paths:
        found: list[Throughput] = []
        seen: set[str] = set()
        if path.endswith(".csv"):
            for m in read_measured_csv(path):
                seen.add(m.model.name)
                if m.model.name in models and chosen(m.model.name, m.impl):
                    found.append(Throughput(m.model.name, m.profile.name, m.tokens_per_s, ThroughputBasis.MEASURED,
                                            f"{m.impl}, {path}:{m.row}"))
        else:
            for e in load_points([path]):
                k = e.key
                seen.add(k.model)
                if (k.kind is not PointKind.E2E or not e.ok or e.tokens_per_s is None or k.model not in models
                        or is_bracket(k.impl) or e.gpu == "cpu" or not chosen(k.model, k.impl)):
                    continue
                how = k.impl + (" compiled" if k.compiled else "")
                found.append(Throughput(k.model, e.gpu, e.tokens_per_s, ThroughputBasis.MEASURED,
                                        f"{how} @ {e.step_tokens:,} tokens, {path}"))
        if not found:
            if seen & models and wanted is not None:
                raise WorthInputError(f"--throughput {path}: no training step of --impl {wanted} on a GPU; drop "
                                      "--impl to take the fastest one computing what the model trained with")
            if seen & models:
                raise WorthInputError(f"--throughput {path}: no training step on a GPU of an implementation that "
                                      "computes what the model trained with (capacity or dropless); pass --impl to "
                                      "take another")
            other = ", ".join(sorted(seen)) or "no training-step points on a GPU"
            raise WorthInputError(f"--throughput {path}: holds {other}, not a model the loss runs map to "
                                  f"({', '.join(sorted(models))}); pass that model's file, or map runs to {other}")
        out += found
    best: dict[tuple[str, str], Throughput] = {}
    for t in out:
        key = (t.model, t.gpu)
        if key not in best or t.tokens_per_s > best[key].tokens_per_s:
            best[key] = t
    return list(best.values())


def predicted_throughput(models: Sequence[ModelSpec], gpus: Sequence[str], impl: str | None,
                         microbatch: int = USERS_MICROBATCH_TOKENS) -> tuple[list[Throughput], list[str]]:
    """`predict`'s tokens/s (floor and expected) of each model on each GPU at ``microbatch`` tokens and the
    users' global batch, and a note for each one left out: a step the GPU cannot hold (neither: a floor of a
    step that cannot run is no answer), or no efficiency table for the expected estimate."""
    from tpsbench.estimate.step import expected_for

    out, notes = [], []
    global_batch = default_global_batch(microbatch)
    accumulation = global_batch // microbatch
    for gpu in gpus:
        profile: GPUProfile = load_profile(gpu)
        for model in models:
            if microbatch % model.seq_len:
                raise WorthInputError(f"--batch {microbatch} is not a multiple of {model.name}'s sequence length "
                                      f"{model.seq_len}")
            w = _workload(model, impl, microbatch)
            what = f"{'dense' if model.moe is None else w.impl} @ {microbatch:,} x {accumulation} tokens"
            est = expected_for(w, profile, accumulation=accumulation)
            if not est.fits:
                notes.append(f"{model.name} on {profile.name}: not predicted, a {microbatch:,}-token step does not "
                             f"fit ({est.memory.required_bytes / 2**30:.1f} GiB needed, "
                             f"{est.usable_bytes / 2**30:.1f} usable): try a smaller --batch")
                continue
            # the floor of the whole global step (accumulation included), as the label and the expected row say
            out.append(Throughput(model.name, profile.name, predict(w, profile, global_batch_tokens=global_batch)
                                  .global_tokens_per_s, ThroughputBasis.FLOOR, what))
            if est.expected is None:
                notes.append(f"{model.name} on {profile.name}: no expected estimate ({est.reason})")
            else:
                out.append(Throughput(model.name, profile.name, est.tokens / est.expected.seconds,
                                      ThroughputBasis.EXPECTED, what))
    return out, notes
