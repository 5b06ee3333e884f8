"""The registry of MoE implementations and dense brackets: one descriptor each, the one place to add one.

Every list of implementations tpsbench shows or accepts is derived from here: the cost model's counting
(`Counting`), the PyTorch module that computes it (``factory``, imported only when a layer is built, so this
module stays plain data like the model zoo), the CLI's choices, the micro and end-to-end points of `run`,
`list impls`, the equivalence tests and the speed-up columns of `compare`. Like tritonbench, one entry is
marked the **baseline**: the reference the others are checked against for correctness and compared with for
speed (``loop``: the simplest dropless implementation, one matmul per expert).

Brackets are dense SwiGLU layers that bracket an MoE layer's cost: ``dense_active`` with the width of the
experts a token uses (top_k * h + shared h), ``dense_total`` with the width of all of them (E * h + shared h).

To add an implementation: a subclass of ``tpsbench.nn.experts.ExpertImpl`` and one ``register(MoEImpl(...))``
call (the built-ins are below); `tests/test_registry.py` shows a dummy one reaching every command.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum

from tpsbench.errors import UnknownNameError, closest_choices_message
from tpsbench.models import ModelSpec


class Counting(StrEnum):
    """How the cost model counts an implementation's routed experts (tpsbench.costmodel)."""

    UNFUSED = "unfused"  # permute, up/gate GEMM, SwiGLU, down GEMM, unpermute: each its own kernels
    FUSED = "fused"  # gather inside the GEMMs, SwiGLU in their epilogues (fused_expert_ops)


@dataclass(frozen=True, slots=True, kw_only=True)
class MoEImpl:
    """One MoE implementation: what it is, how the cost model counts it, and the module that runs it."""

    name: str
    description: str  # what is counted and run, one line for `list impls`
    factory: str | Callable[..., object]  # "module:attribute" of an ExpertImpl class, or the class itself
    counting: Counting = Counting.UNFUSED
    pads_to_capacity: bool = False  # token dropping: each expert padded to C rows (capacity routing)
    launches_per_expert: bool = False  # one GEMM launch per expert per stage (E times the launches)
    counts_to_host: bool = False  # copies the per-expert counts to the host once per forward (a GPU->CPU sync)
    grouped_mm: bool = False  # torch._grouped_mm: 2 kernels per call on its fast path, a sync + loop elsewhere
    casts_expert_grads: bool = True  # under autocast, the experts' bf16 weight gradients are cast to fp32
    needs_gpu: bool = False  # runs only on a CUDA GPU (Triton kernels; the interpreter is far too slow to time)
    staged: bool = True  # permute / up_gate / act / down / unpermute can be timed one by one
    compile_needs_bf16: bool = False  # torch.compile of it accepts only bf16 operands (refused for fp32 runs)
    baseline: bool = False  # the reference for correctness and speed-ups (exactly one entry)
    aliases: tuple[str, ...] = ()  # other names the cost model accepts (e.g. "dropless")

    @property
    def dropless(self) -> bool:
        return not self.pads_to_capacity

    def resolve_factory(self) -> Callable[..., object]:
        if callable(self.factory):
            return self.factory
        module, _, attr = self.factory.partition(":")
        return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True, slots=True, kw_only=True)
class Bracket:
    """A dense SwiGLU standing in for an MoE layer's FFN, of the active or of the total expert width."""

    name: str
    description: str
    all_experts: bool  # width E * h (+ shared) instead of top_k * h (+ shared)


_IMPLS: dict[str, MoEImpl] = {}
BRACKETS: dict[str, Bracket] = {
    b.name: b for b in (
        Bracket(name="dense_active", all_experts=False,
                description="dense SwiGLU of the active expert width (top_k * h + shared h)"),
        Bracket(name="dense_total", all_experts=True,
                description="dense SwiGLU of the total expert width (E * h + shared h)"),
    )
}


def register(impl: MoEImpl) -> MoEImpl:
    """Add an implementation (its name and aliases must be new); returns it."""
    taken = {*_IMPLS, *aliases(), *BRACKETS}
    clash = [n for n in (impl.name, *impl.aliases) if n in taken]
    if clash:
        raise ValueError(f"implementation name(s) {clash} already registered")
    if impl.baseline and any(i.baseline for i in _IMPLS.values()):
        raise ValueError(f"{impl.name}: the registry has a baseline already ({baseline().name})")
    _IMPLS[impl.name] = impl
    return impl


def unregister(name: str) -> None:
    """Remove an implementation (tests that register a dummy one clean up with this)."""
    _IMPLS.pop(name, None)


def aliases() -> dict[str, str]:
    return {a: i.name for i in _IMPLS.values() for a in i.aliases}


def moe_impls() -> list[MoEImpl]:
    """Every registered implementation, in registration order (the baseline first)."""
    return list(_IMPLS.values())


def moe_impl_names() -> list[str]:
    return list(_IMPLS)


def cost_model_names() -> list[str]:
    """Names the cost model accepts: the implementations and their aliases."""
    return [*_IMPLS, *aliases()]


def get_impl(name: str) -> MoEImpl:
    """An implementation by name or alias; an unknown name gets the closest choices."""
    key = aliases().get(name, name)
    if key not in _IMPLS:
        raise UnknownNameError(closest_choices_message("MoE implementation", name, cost_model_names()))
    return _IMPLS[key]


def baseline() -> MoEImpl:
    return next(i for i in _IMPLS.values() if i.baseline)


def is_bracket(name: str) -> bool:
    return name in BRACKETS


def get_bracket(name: str) -> Bracket:
    if name not in BRACKETS:
        raise UnknownNameError(closest_choices_message("bracket", name, list(BRACKETS)))
    return BRACKETS[name]


def bracket_hidden(spec: ModelSpec, name: str) -> int:
    """FFN width of a dense bracket of an MoE model."""
    bracket = get_bracket(name)
    moe = spec.moe
    if moe is None:
        raise ValueError(f"{spec.name} is dense; brackets exist for MoE models")
    experts = moe.num_experts if bracket.all_experts else moe.top_k
    return experts * moe.expert_hidden + (moe.shared_hidden or 0)


def bracket_spec(spec: ModelSpec, name: str) -> ModelSpec:
    """The MoE model with its MoE FFN replaced by a dense SwiGLU of the bracket's width."""
    return replace(spec, name=f"{spec.name}:{name}", moe=None, ffn_hidden=bracket_hidden(spec, name))


def run_choices() -> list[str]:
    """What `run --impl` accepts: every implementation and every bracket."""
    return [*_IMPLS, *BRACKETS]


def cpu_defaults() -> list[str]:
    """`run --device cpu`'s default implementations: those that do not need a GPU, and the brackets."""
    return [*(i.name for i in _IMPLS.values() if not i.needs_gpu), *BRACKETS]


# --- the built-in implementations (tpsbench.nn.experts) -----------------------------------------------------
register(MoEImpl(
    name="loop", baseline=True, launches_per_expert=True, counts_to_host=True,
    factory="tpsbench.nn.experts:LoopExperts",
    description="dropless; one GEMM launch per expert per stage in Python, per-expert counts copied to the host "
    "(same bytes and FLOPs as grouped, E times the launches)",
))
register(MoEImpl(
    # torch.compile traces torch._grouped_mm through its meta function, which accepts only bf16 operands
    # (torch 2.13: "Expected inputs of BF16 type"); eager fp32 runs its per-group fallback
    name="grouped", aliases=("dropless",), grouped_mm=True, factory="tpsbench.nn.experts:GroupedExperts",
    compile_needs_bf16=True,
    description="dropless; every routed token computed, tokens sorted by expert, torch._grouped_mm over "
    "device-side offsets (one grouped GEMM per stage)",
))
register(MoEImpl(
    name="capacity", pads_to_capacity=True, factory="tpsbench.nn.experts:CapacityExperts",
    description="token dropping: each expert padded to C = round_up(cf * T*k/E, 8) rows, batched GEMM",
))
register(MoEImpl(
    name="triton", counting=Counting.FUSED, casts_expert_grads=False, needs_gpu=True, staged=False,
    factory="tpsbench.nn.experts:TritonExperts",
    description="dropless, fused (kernels/): router, routing plan, GEMMs gathering token rows with the SwiGLU in "
    "their epilogues, top-k rows summed per token, weight gradients in the parameters' dtype",
))
