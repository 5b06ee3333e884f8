"""The training stacks tpsbench can count and build a zoo model in: its own modules (tpsbench.nn) and the users'
OLMo-core (an optional extra: ``pip install -e ".[olmo]"``). A stack fixes the dtype policy the cost model
counts (OLMo-core's is ``olmo_core``: tpsbench.costmodel.ops) and which MoE implementations exist in it."""

from __future__ import annotations

from dataclasses import dataclass

from tpsbench.errors import InputError
from tpsbench.impls import cost_model_names, get_impl
from tpsbench.models import closest_choices_message


class StackChoiceError(InputError):
    """A stack, or an MoE implementation or dtype policy that the chosen stack does not have."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Stack:
    name: str
    description: str
    policy: str | None  # the dtype policy it always runs (None: the user's choice)
    moe_types: dict[str, str] | None  # tpsbench implementation -> the stack's own MoE type (None: all of tpsbench's)


STACKS: dict[str, Stack] = {
    "tpsbench": Stack(name="tpsbench", policy=None, moe_types=None,
                      description="tpsbench's own modules (tpsbench.nn), every registered MoE implementation"),
    "olmo-core": Stack(name="olmo-core", policy="olmo_core",
                       moe_types={"capacity": "MoEType.default", "dropless": "MoEType.dropless"},
                       description="the users' OLMo-core: its dtype handling, fp32 router, fp32 loss with z-loss, "
                       "gradient clipping; its capacity (default) and dropless MoE"),
}


def get_stack(name: str) -> Stack:
    if name not in STACKS:
        raise StackChoiceError(closest_choices_message("stack", name, list(STACKS)))
    return STACKS[name]


def resolve(stack: str, dtype: str | None, impl: str, default_dtype: str) -> tuple[str, str]:
    """(dtype policy, cost-model implementation) of a prediction with the stack, both checked."""
    s = get_stack(stack)
    if s.policy is not None and dtype is not None and dtype != s.policy:
        raise StackChoiceError(f"--stack {s.name} counts its own dtype handling (policy {s.policy}); drop "
                               f"--dtype {dtype}")
    if s.moe_types is not None:
        names = {get_impl(n).name if n in cost_model_names() else n: n for n in s.moe_types}
        if impl not in s.moe_types and get_impl(impl).name not in names:
            raise StackChoiceError(f"{s.name} has no MoE implementation '{impl}': its MoE types are "
                                   + ", ".join(f"{k} ({v})" for k, v in s.moe_types.items()))
    return s.policy or dtype or default_dtype, impl
