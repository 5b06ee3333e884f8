"""tpsbench's own stack: its modules (tpsbench.nn), every registered MoE implementation and the dense brackets,
AdamW (fused on CUDA), bf16 autocast over fp32 master weights on a GPU. The one stack the cost, memory and
expected-time models describe."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from tpsbench.errors import closest_choices_message
from tpsbench.impls import (
    BRACKETS,
    baseline,
    bracket_hidden,
    bracket_spec,
    cpu_defaults,
    get_impl,
    is_bracket,
    moe_impl_names,
    run_choices,
)
from tpsbench.models import ModelSpec
from tpsbench.options import RoutingMode
from tpsbench.stacks import Stack, StackChoiceError, StepSpec

if TYPE_CHECKING:
    import torch

    from tpsbench.costmodel import DTypePolicy
    from tpsbench.stacks.training import Training


class TpsbenchStack(Stack):
    name: ClassVar[str] = "tpsbench"
    description: ClassVar[str] = "tpsbench's own modules (tpsbench.nn), every registered MoE implementation"
    modelled: ClassVar[bool] = True
    supports_recompute: ClassVar[bool] = True
    runs_distributed: ClassVar[bool] = True

    @property
    def label_suffix(self) -> str:
        return ""

    def prediction_choices(self, dtype: str | None, impl: str, default_dtype: str) -> tuple[str, str]:
        return dtype or default_dtype, impl

    def run_choices(self, spec: ModelSpec, device: str, dtype: str | None, impl: str | None
                    ) -> tuple[DTypePolicy, list[str]]:
        from tpsbench.costmodel import get_policy

        policy = get_policy(dtype or ("amp_bf16" if device == "cuda" else "fp32"))
        if policy.autocast and device == "cpu":
            raise StackChoiceError(f"--dtype {policy.name} needs a GPU; on the CPU use --dtype fp32 (the default "
                                   "there)")
        defaults = run_choices() if device == "cuda" else cpu_defaults()
        impls = [i.strip() for i in (impl or ",".join(defaults)).split(",") if i.strip()]
        if not impls:
            raise StackChoiceError(f"--impl '{impl}' names no implementation; choose from {', '.join(run_choices())}")
        for name in impls:
            if name not in run_choices():
                raise StackChoiceError(closest_choices_message("MoE implementation", name, run_choices()))
            if device == "cpu" and not is_bracket(name) and get_impl(name).needs_gpu:
                raise StackChoiceError(f"--impl {name} needs a CUDA GPU; on the CPU choose from "
                                       f"{', '.join(cpu_defaults())}")
        return policy, impls

    def micro_layers(self, spec: ModelSpec, impls: Sequence[str]) -> list[tuple[str, str | None]]:
        if spec.moe is None:
            return [("attention", None), ("mlp", None)]
        moe = moe_impl_names()
        return [("attention", None), *(("moe", i) for i in impls if i in moe),
                *((b, None) for b in BRACKETS if b in impls)]

    def staged(self, impl: str | None) -> bool:
        return impl is not None and get_impl(impl).staged

    def layer_key(self, layer: str, impl: str | None) -> str:
        return layer  # one MoE module per run: every implementation computes on the same weights and routing

    def build_layer(self, spec: ModelSpec, layer: str, impl: str | None, *, device: torch.device, seed: int,
                    routing: RoutingMode, skew: float) -> torch.nn.Module:
        import torch

        from tpsbench.nn.layers import SwiGLU
        from tpsbench.nn.moe import MoEFeedForward
        from tpsbench.nn.transformer import attention_for

        torch.manual_seed(seed)
        module: torch.nn.Module
        if layer == "attention":
            module = attention_for(spec, device)
        elif layer == "mlp":
            assert spec.ffn_hidden is not None
            module = SwiGLU(spec.d_model, spec.ffn_hidden, device=device)
        elif is_bracket(layer):
            module = SwiGLU(spec.d_model, bracket_hidden(spec, layer), device=device)
        else:
            assert spec.moe is not None
            module = MoEFeedForward(spec.d_model, spec.moe, device=device)
            module.router.set_routing(routing, skew, seed)
        for p in module.parameters():
            if p.dim() > 1:
                torch.nn.init.normal_(p, std=0.02)
        return module

    def select_impl(self, module: torch.nn.Module, spec: ModelSpec, impl: str | None) -> torch.nn.Module:
        from tpsbench.nn.experts import make_impl
        from tpsbench.nn.moe import MoEFeedForward

        if isinstance(module, MoEFeedForward):
            assert impl is not None and spec.moe is not None
            module.set_impl(make_impl(impl, capacity_factor=spec.moe.capacity_factor))
        return module

    def training(self, spec: ModelSpec, step: StepSpec, *, device: torch.device, policy: DTypePolicy,
                 routing: RoutingMode, skew: float, compile_model: bool, seed: int) -> Training:
        """Its modules, AdamW (fused on CUDA), bf16 autocast under the amp_bf16 policy."""
        import torch

        from tpsbench.nn.transformer import build_model, moe_layers
        from tpsbench.stacks.training import model_training, random_tokens

        s = bracket_spec(spec, step.impl) if is_bracket(step.impl) else spec
        impl = step.impl if s.moe is not None else baseline().name  # a dense model has no experts: ignored
        model = build_model(s, impl=impl, device=device)
        model.recompute = step.recompute
        for layer in moe_layers(model):
            layer.router.set_routing(routing, skew, seed)
        if compile_model:
            model.compile()  # in place: training_loss's self(...) runs the compiled forward
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=device.type == "cuda" or None)
        ids, labels = random_tokens(s.vocab_size, step.tokens, min(s.seq_len, step.tokens), device, seed)
        return model_training(model, opt, ids, labels, step.accumulation, policy, device)
