"""The options every layer shares, as types: what a run measures, how a layer or a point is timed, how a step
recomputes, how routing and several GPUs are laid out; and the checks of the options that `run` and `predict`
both take (microbatch and global batch sizes, the distributed layout), written once so the two commands say
the same thing about the same mistake. Pure: no torch, nothing above the model zoo."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from tpsbench.errors import InputError
from tpsbench.models import ModelSpec


class OptionError(InputError):
    """Options that do not describe a run or a prediction (printed as one line, exit 2)."""


class RunMode(StrEnum):
    """What `run` measures: layers (micro), whole training steps (e2e), or both."""

    MICRO = "micro"
    E2E = "e2e"
    ALL = "all"

    @property
    def layers(self) -> bool:
        return self is not RunMode.E2E

    @property
    def steps(self) -> bool:
        return self is not RunMode.MICRO


class LayerMode(StrEnum):
    """How a layer point is timed: forward, backward (after an untimed forward) or both."""

    FWD = "fwd"
    BWD = "bwd"
    FWD_BWD = "fwd_bwd"


class Stage(StrEnum):
    """One stage of an MoE layer's forward, timed alone (``stage:<name>`` in a results file)."""

    ROUTER = "router"
    PERMUTE = "permute"
    UP_GATE = "up_gate"
    ACT = "act"
    DOWN = "down"
    UNPERMUTE = "unpermute"

    @property
    def mode(self) -> str:
        return f"stage:{self.value}"


TRAIN_STEP = "train_step"  # the mode of a whole training step's point
HEADLINE_MODES = (TRAIN_STEP, LayerMode.FWD_BWD.value)  # what a cross-run comparison shows by default


class PointKind(StrEnum):
    """A results file's point: one layer (micro) or one whole training step (e2e)."""

    MICRO = "micro"
    E2E = "e2e"


class Scope(StrEnum):
    """What one measured time covers, as the expected-time model estimates it."""

    STEP = "step"  # a training step (one optimizer step)
    LAYER = "layer"  # one layer forward, backward or both
    STAGE = "stage"  # one MoE stage forward
    GEMM = "gemm"  # one GEMM of calibrate's shape sweep

    @classmethod
    def of(cls, kind: str, mode: str) -> Scope:
        if kind == PointKind.E2E:
            return cls.STEP
        return cls.STAGE if mode.startswith("stage:") else cls.LAYER


class Recompute(StrEnum):
    """Activation checkpointing of a training step."""

    NONE = "none"
    FULL = "full"  # every block's forward runs again in the backward; only its input is kept


class RoutingMode(StrEnum):
    """Where an MoE layer's router sends tokens: its learned (random) weights, evenly, or Zipf-skewed."""

    LEARNED = "learned"
    UNIFORM = "uniform"
    SKEWED = "skewed"


DEFAULT_SKEW = 1.2  # Zipf exponent of skewed routing


E = TypeVar("E", bound=StrEnum)


def choice(kind: type[E], text: str, flag: str) -> E:
    """``text`` as a member of ``kind``, or a one-line error listing the choices."""
    try:
        return kind(text)
    except ValueError:
        raise OptionError(f"{flag} '{text}': choose one of {', '.join(m.value for m in kind)}") from None


# --- sizes -----------------------------------------------------------------------------------------------
def parse_batches(text: str, seq_len: int) -> list[int]:
    """``"4096,16384,32768"`` -> ints; each a positive integer multiple of ``seq_len``."""
    out = []
    for item in text.split(","):
        item = item.strip()
        try:
            value = int(item)
        except ValueError:
            raise OptionError(
                f"--batch '{item}' is not a whole number of tokens; give e.g. --batch {seq_len * 16}"
            ) from None
        if value <= 0:
            raise OptionError(f"--batch {value} must be positive; give e.g. --batch {seq_len * 16}")
        if value % seq_len:
            raise OptionError(f"--batch {value} counts tokens, and is not a whole number of sequences of --seq "
                              f"{seq_len}; closest valid choices (tokens): "
                              + ", ".join(map(str, _multiples_around(value, seq_len))))
        out.append(value)
    return out


def check_impl_applies(model_name: str, is_moe: bool, impl: str | None) -> None:
    """``--impl`` chooses how an MoE layer computes; a dense model has none, so an explicit one is refused rather
    than ignored (`run` and `predict` both call this)."""
    if impl and not is_moe:
        raise OptionError(f"--impl {impl}: {model_name} is dense (it has no MoE layer); drop --impl")


def check_global_batch(global_batch: int | None, microbatches: list[int]) -> None:
    """Gradient accumulation needs a global batch that is a whole number of each microbatch."""
    for tokens in microbatches if global_batch is not None else []:
        if global_batch % tokens:
            raise OptionError(f"--global-batch {global_batch} is not a multiple of the microbatch {tokens}; closest "
                              f"valid choices: {', '.join(map(str, _multiples_around(global_batch, tokens)))}")


def _multiples_around(value: int, step: int) -> list[int]:
    return sorted({max(step, value // step * step), (value // step + 1) * step})


# --- several GPUs ----------------------------------------------------------------------------------------
class DistMode(StrEnum):
    """How a training step is spread over ranks: FSDP, expert parallelism, or both."""

    FSDP = "fsdp"
    EP = "ep"
    FSDP_EP = "fsdp+ep"

    @property
    def uses_ep(self) -> bool:
        return self is not DistMode.FSDP

    @property
    def uses_fsdp(self) -> bool:
        return self is not DistMode.EP


class DistError(OptionError):
    """A distributed layout that cannot be run or predicted."""


def experts_per_rank(num_experts: int, group_size: int) -> int:
    if group_size < 1 or num_experts % group_size:
        raise DistError(f"{num_experts} experts cannot be split evenly over {group_size} expert-parallel ranks; "
                        f"choose a group size that divides {num_experts}")
    return num_experts // group_size


@dataclass(frozen=True, slots=True)
class DistLayout:
    """Several ranks' layout: the mode, how many ranks, the expert-parallel and FSDP shard group sizes
    (consecutive ranks; None: all of them) and FSDP's unsharded parameter dtype (None: the dtype policy's)."""

    mode: DistMode
    world: int
    ep_size: int | None = None
    shard_size: int | None = None
    param_dtype: str | None = None

    @classmethod
    def from_flags(cls, mode: str | None, world: int | None, *, ep_size: int | None = None,
                   shard_size: int | None = None, param_dtype: str | None = None,
                   ranks: str = "ranks") -> DistLayout | None:
        """The layout the command-line flags describe (None: one process), every flag checked; ``ranks`` names
        what is counted ("GPUs" for a prediction, whose layout also needs --gpus)."""
        if mode is None:
            add = "--gpus N --dist" if ranks == "GPUs" else "--dist"
            for flag, value, what, layouts in (
                    ("--ep-size", ep_size, "sizes the expert-parallel groups of", "ep or fsdp+ep"),
                    ("--shard-size", shard_size, "sizes FSDP's shard groups of", "fsdp or fsdp+ep"),
                    ("--fsdp-param-dtype", param_dtype, "is FSDP's mixed precision of", "fsdp or fsdp+ep")):
                if value is not None:
                    raise DistError(f"{flag} {value} {what} a distributed step: add {add} {layouts}"
                                    + ("" if ranks == "GPUs" else " (under torchrun)"))
            return None
        layout = cls(choice(DistMode, mode, "--dist"), world or 1, ep_size, shard_size, param_dtype)
        layout.check_sizes(ranks)
        return layout

    def check_sizes(self, ranks: str = "ranks") -> None:
        """An expert-parallel or shard group size belongs to a layout that has the groups and divides the world;
        FSDP's mixed precision to a layout with FSDP."""
        if self.param_dtype not in (None, "fp32") and not self.mode.uses_fsdp:
            raise DistError(f"--fsdp-param-dtype {self.param_dtype} is FSDP's mixed precision: use it with --dist "
                            "fsdp or fsdp+ep")
        for flag, size, has, what in (("--ep-size", self.ep_size, self.mode.uses_ep,
                                       "expert-parallel groups: use it with --dist ep or fsdp+ep"),
                                      ("--shard-size", self.shard_size, self.mode.uses_fsdp,
                                       "FSDP's shard groups: use it with --dist fsdp or fsdp+ep")):
            if size is None:
                continue
            if not has:
                raise DistError(f"{flag} {size} sizes {what}")
            if self.world % size:
                raise DistError(f"{flag} {size} does not divide the {self.world} {ranks} into groups; choose a "
                                f"divisor of {self.world}")

    def check_model(self, spec: ModelSpec, brackets: Sequence[str] = (), ranks: str = "expert-parallel ranks"
                    ) -> None:
        """Refuse what the layout cannot shard: experts of a dense model, a dense bracket, an uneven split."""
        if not self.mode.uses_ep:
            return
        if spec.moe is None:
            raise DistError(f"--dist {self.mode}: {spec.name} is dense and has no experts to split; use --dist fsdp")
        if brackets:
            raise DistError(f"--dist {self.mode}: {', '.join(brackets)} is a dense bracket, not an MoE "
                            "implementation")
        experts, group = spec.moe.num_experts, self.ep_size or self.world
        if experts % group:
            over = f"--ep-size {group}" if self.ep_size else f"{group} {ranks}"
            raise DistError(f"--dist {self.mode}: {experts} experts cannot be split evenly over {over}; choose a "
                            f"group size that divides {experts}")
