"""The training stacks tpsbench can count, build and time a model in: its own modules (tpsbench.nn) and the users'
OLMo-core (an optional extra: ``pip install -e ".[olmo]"``). A stack is an object that knows what it runs: the
dtype policy the cost model counts for it, its MoE implementations, the layers and the training step it builds,
whether tpsbench's cost, memory and expected-time models describe it, and how its points are named. Everything
that differs between stacks is asked of the stack; nothing else tests a stack's name.

Importing this package costs no torch: a stack imports torch when it builds something."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from tpsbench.errors import InputError, closest_choices_message
from tpsbench.models import ModelSpec
from tpsbench.options import Recompute, RoutingMode

if TYPE_CHECKING:
    import torch

    from tpsbench.costmodel import DTypePolicy
    from tpsbench.stacks.training import Training


class StackChoiceError(InputError):
    """A stack, or an MoE implementation, dtype policy or model that the chosen stack does not have."""


@dataclass(frozen=True, slots=True)
class StepSpec:
    """The training step a stack builds: implementation, tokens per microbatch, microbatches per optimizer step,
    activation checkpointing."""

    impl: str
    tokens: int
    accumulation: int = 1
    recompute: Recompute = Recompute.NONE


class Stack:
    """What a stack answers; the two built-in ones are :class:`tpsbench.stacks.own.TpsbenchStack` and
    :class:`tpsbench.stacks.olmo_core.OlmoCoreStack`."""

    name: ClassVar[str]
    description: ClassVar[str]
    policy: ClassVar[str | None] = None  # the dtype policy it always runs (None: the user's choice)
    modelled: ClassVar[bool] = False  # tpsbench's cost, memory and expected-time models describe its step
    supports_recompute: ClassVar[bool] = False  # `run --ac` can checkpoint its blocks
    runs_distributed: ClassVar[bool] = False  # `run --dist` can spread its step over ranks

    @property
    def label_suffix(self) -> str:
        """What a point's name says of the stack (nothing for tpsbench's own)."""
        return f" [{self.name}]"

    # --- prediction -------------------------------------------------------------------------------------
    def check_model(self, spec: ModelSpec) -> None:
        """Refuse a model the stack cannot express (StackChoiceError)."""

    def prediction_choices(self, dtype: str | None, impl: str, default_dtype: str) -> tuple[str, str]:
        """(dtype policy, cost-model implementation) of a prediction with the stack, both checked."""
        raise NotImplementedError

    def counterpart(self, impl: str) -> str | None:
        """The tpsbench implementation that computes what this stack's ``impl`` computes (compare puts them
        side by side); None when none does."""
        return impl

    # --- measurement ------------------------------------------------------------------------------------
    def run_choices(self, spec: ModelSpec, device: str, dtype: str | None, impl: str | None
                    ) -> tuple[DTypePolicy, list[str]]:
        """The dtype policy and the implementations (and brackets) of a run on ``device``, checked up front."""
        raise NotImplementedError

    def micro_layers(self, spec: ModelSpec, impls: Sequence[str]) -> list[tuple[str, str | None]]:
        """(layer, implementation) of each layer a run's micro points time."""
        raise NotImplementedError

    def staged(self, impl: str | None) -> bool:
        """Whether an MoE implementation's stages can be timed one by one."""
        return False

    def layer_key(self, layer: str, impl: str | None) -> str:
        """Which built layers a micro benchmark reuses: the same key, the same module."""
        return f"{layer}/{impl}"

    def build_layer(self, spec: ModelSpec, layer: str, impl: str | None, *, device: torch.device, seed: int,
                    routing: RoutingMode, skew: float) -> torch.nn.Module:
        raise NotImplementedError

    def select_impl(self, module: torch.nn.Module, spec: ModelSpec, impl: str | None) -> torch.nn.Module:
        """The module, set to run ``impl`` (a stack that builds one module per implementation returns it)."""
        return module

    def training(self, spec: ModelSpec, step: StepSpec, *, device: torch.device, policy: DTypePolicy,
                 routing: RoutingMode, skew: float, compile_model: bool, seed: int) -> Training:
        raise NotImplementedError


def _registry() -> dict[str, Stack]:
    from tpsbench.stacks.olmo_core import OlmoCoreStack
    from tpsbench.stacks.own import TpsbenchStack

    return {s.name: s for s in (TpsbenchStack(), OlmoCoreStack())}


STACKS: dict[str, Stack] = _registry()
DEFAULT_STACK = "tpsbench"


def get_stack(name: str) -> Stack:
    if name not in STACKS:
        raise StackChoiceError(closest_choices_message("stack", name, list(STACKS)))
    return STACKS[name]


def stack_named(name: str) -> Stack | None:
    """The stack a results file names; None for one this version does not know."""
    return STACKS.get(name)


def stack_label(name: str) -> str:
    """What a point's name says of the stack it ran in."""
    stack = stack_named(name)
    return f" [{name}]" if stack is None else stack.label_suffix


def is_modelled(name: str) -> bool:
    """Whether tpsbench's models describe a step of the stack a results file names."""
    stack = stack_named(name)
    return stack is not None and stack.modelled
