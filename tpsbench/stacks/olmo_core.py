"""The zoo in OLMo-core (PyPI ``ai2-olmo-core`` >= 3, < 4, the optional extra ``.[olmo]``): each zoo model as an
OLMo-core ``TransformerConfig`` with the same dimensions, and the upstream factory that equals it where one does
(``ModelSpec.olmo_factory``).

The users' configs (OLMo-core's ``llama_like`` / ``llama_like_moe`` rules): no biases, an LM head with its own
norm (tied to the embedding when the spec says so), grouped-query attention and head-wise qk-norm as the spec
says, SwiGLU of the spec's width, RMSNorm, RoPE with the spec's theta; MoE blocks with the reordered norm and
qk-norm, a softmax top-k router, the shared expert, ``MoEType.default`` (capacity) or ``dropless`` as the spec
says. tests/test_olmo_core.py holds tpsbench's counts to OLMo-core's: the same total and active parameters,
the ``olmo`` FLOP convention equal to ``Transformer.num_flops_per_token`` to the FLOP.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from tpsbench.models import ModelSpec
from tpsbench.options import RoutingMode
from tpsbench.stacks import Stack, StackChoiceError, StepSpec

if TYPE_CHECKING:
    import torch

    from tpsbench.costmodel import DTypePolicy
    from tpsbench.stacks.training import Training

OLMO_CORE_INSTALL = 'pip install -e ".[olmo]"'


class StackError(StackChoiceError):
    """The OLMo-core stack is not installed, or cannot express what was asked for."""


def require_olmo_core() -> Any:
    """The ``olmo_core`` package, or a one-line error saying how to install it."""
    try:
        import olmo_core
    except ImportError:
        raise StackError(f"the OLMo-core stack needs the ai2-olmo-core package: {OLMO_CORE_INSTALL}") from None
    return olmo_core


def cannot_express(spec: ModelSpec) -> str | None:
    """Why OLMo-core's config cannot hold the model, or None (it would otherwise be built as a different model
    without a word)."""
    if spec.qkv_bias:
        return "OLMo-core's attention bias is on all four projections, the model's on query, key and value only"
    if spec.moe is not None and spec.moe.shared_gate:
        return "OLMo-core's shared expert has no gate"
    if spec.rope_theta != int(spec.rope_theta):
        return f"OLMo-core's rope_theta is an integer, {spec.name} has {spec.rope_theta:g}"
    return None


def dropless_expert_gemms() -> str:
    """What OLMo-core's dropless MoE multiplies its experts with here: the ``grouped_gemm`` package's ``gmm`` when
    it is installed, else a per-expert matmul loop after ``batch_sizes.cpu()`` (olmo_core/nn/moe/mlp.py, 3.0.0): a
    GPU->CPU sync in every MoE layer, which a measured OLMo-core step then includes."""
    import importlib.util

    if importlib.util.find_spec("grouped_gemm") is not None:
        return "grouped_gemm.gmm"
    return "per-expert loop (grouped_gemm not installed: batch sizes copied to the host per layer)"


def olmo_config(spec: ModelSpec) -> Any:
    """The OLMo-core ``TransformerConfig`` of a zoo model, built from its dimensions."""
    require_olmo_core()
    reason = cannot_express(spec)
    if reason is not None:
        raise StackError(f"OLMo-core cannot express {spec.name}: {reason}; measure it with --stack tpsbench")
    from olmo_core.nn.feed_forward import FeedForwardConfig
    from olmo_core.nn.transformer import TransformerBlockType, TransformerConfig

    common = {"d_model": spec.d_model, "vocab_size": spec.vocab_size, "n_layers": spec.n_layers,
              "n_heads": spec.n_heads, "n_kv_heads": spec.n_kv_heads, "head_dim": spec.head_width,
              "qk_norm": spec.qk_norm, "use_head_qk_norm": spec.qk_norm_per_head,
              "rope_theta": int(spec.rope_theta), "layer_norm_eps": spec.norm_eps,
              "tie_word_embeddings": spec.tie_embeddings}
    if spec.moe is None:
        block = TransformerBlockType.reordered_norm if spec.reordered_norm else TransformerBlockType.default
        return TransformerConfig.llama_like(**common, block_name=block,
                                            feed_forward=FeedForwardConfig(hidden_size=spec.ffn_hidden, bias=False))
    moe = spec.moe
    return TransformerConfig.llama_like_moe(
        **common, num_experts=moe.num_experts, top_k=moe.top_k, expert_hidden_size=moe.expert_hidden,
        shared_expert_hidden_size=moe.shared_hidden, dropless=moe.capacity_factor is None,
        capacity_factor=moe.capacity_factor, reordered_norm=spec.reordered_norm,
        lb_loss_weight=moe.lb_loss_weight, z_loss_weight=moe.z_loss_weight)


def factory_config(spec: ModelSpec) -> Any | None:
    """The config of the upstream factory that equals the zoo entry (``spec.olmo_factory``), or None."""
    if spec.olmo_factory is None:
        return None
    require_olmo_core()
    from olmo_core.nn.transformer import TransformerConfig

    return getattr(TransformerConfig, spec.olmo_factory)(vocab_size=spec.vocab_size)


def num_flops_per_token(config: Any, seq_len: int) -> int:
    """OLMo-core's own count for a config: the model built on the meta device (no memory, no weights)."""
    import torch

    with torch.device("meta"):
        model = config.build(init_device="meta")
    return int(model.num_flops_per_token(seq_len))


def tpsbench_state_dict(olmo_state: dict[str, torch.Tensor], spec: ModelSpec) -> dict[str, torch.Tensor]:
    """OLMo-core model weights (``model.state_dict()`` of ``olmo_config(spec).build()``) renamed and reshaped for
    ``tpsbench.nn.transformer.build_model(spec)``: the LM head's norm and projection, the MoE's router (flat ``E*d``
    -> ``[E, d]``), experts and shared expert. OLMo-core stores the expert weights flat, in one layout per MoE
    type: the capacity MLP views W1 and W3 as ``[E, d, h]``, the dropless one as ``[E, h, d]`` (used transposed);
    W2 is ``[E, h, d]`` in both, as in tpsbench."""
    renames = (("lm_head.norm.weight", "final_norm.weight"), ("lm_head.w_out.weight", "lm_head.weight"),
               ("feed_forward_moe.", "feed_forward."), ("experts.mlp.", "experts."), ("shared_mlp.", "shared."))
    out = {}
    for key, value in olmo_state.items():
        name = key
        for old, new in renames:
            name = name.replace(old, new)
        if spec.moe is not None:
            e, h, d = spec.moe.num_experts, spec.moe.expert_hidden, spec.d_model
            dropless = spec.moe.capacity_factor is None
            if name.endswith("feed_forward.router.weight"):
                value = value.view(e, d)
            elif name.endswith(("experts.w1", "experts.w3")):
                value = value.view(e, h, d).transpose(1, 2).contiguous() if dropless else value.view(e, d, h)
            elif name.endswith("experts.w2"):
                value = value.view(e, h, d)
        out[name] = value
    return out


# OLMo-core's own training scripts (src/scripts/train/*.py: TransformerTrainModuleConfig): the loss with z-loss
# at this multiplier, and the gradient norm clipped at 1.0
Z_LOSS_MULTIPLIER = 1e-5
MAX_GRAD_NORM = 1.0
MOE_TYPES = {"capacity": "default", "dropless": "dropless"}  # tpsbench's name -> OLMo-core's MoEType


def olmo_spec(spec: ModelSpec, impl: str) -> ModelSpec:
    """The zoo model with the MoE type asked for: capacity (the spec's factor, else 1.2) or dropless."""
    import dataclasses

    if spec.moe is None or impl not in MOE_TYPES:
        return spec
    factor = None if impl == "dropless" else (spec.moe.capacity_factor or 1.2)
    return dataclasses.replace(spec, moe=dataclasses.replace(spec.moe, capacity_factor=factor))


def olmo_core_training(spec: ModelSpec, impl: str, *, tokens: int, accumulation: int, device: Any, autocast: bool,
                       compile_model: bool, seed: int) -> Training:
    """OLMo-core's model trained as its scripts train it, in one process: the loss of its forward with labels
    (cross-entropy and z-loss, the MoE's load-balancing and router z-losses attached in training mode), the
    gradient norm clipped at 1.0, AdamW; per-block ``torch.compile`` (``apply_compile``) when asked. Precision:
    the scripts' FSDP policy (bf16 parameters, fp32 reduction) needs a process group; the single-process
    equivalent, which OLMo-core's train module offers as ``autocast_precision``, is bf16 autocast over fp32
    parameters (on a GPU; fp32 on the CPU)."""
    require_olmo_core()
    import contextlib

    import torch

    from tpsbench.stacks.training import RoutingFacts, Training, load_balance, random_tokens

    s = olmo_spec(spec, impl)
    if device.type == "cpu" and s.is_moe:
        interpreter_autotuners()  # a CPU MoE run is in the interpreter: the config saw to it
    torch.manual_seed(seed)
    model = olmo_config(s).build(init_device=str(device))
    model.init_weights(device=device)
    model.train()
    if compile_model:
        model.apply_compile()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=device.type == "cuda" or None)
    ids, labels = random_tokens(s.vocab_size, tokens, min(s.seq_len, tokens), device, seed)

    def precision() -> contextlib.AbstractContextManager[None]:
        return torch.autocast(device.type, dtype=torch.bfloat16) if autocast else contextlib.nullcontext()

    def microbatches() -> None:
        for _ in range(accumulation):
            with precision():
                out = model(ids, labels=labels, z_loss_multiplier=Z_LOSS_MULTIPLIER, loss_div_factor=accumulation)
            out.loss.backward()

    def optimizer_step() -> None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
        opt.step()

    def routing() -> RoutingFacts:
        routers = [m for m in model.modules() if hasattr(m, "batch_size_per_expert")
                   and isinstance(getattr(m, "batch_size_per_expert", None), torch.Tensor)]
        return load_balance([r.batch_size_per_expert for r in routers])

    recipe = {"stack": "olmo-core", "moe_type": MOE_TYPES.get(impl, "none") if s.moe else "none",
              "precision": "bf16 autocast over fp32 parameters (single-process equivalent of FSDP bf16/fp32-reduce)"
              if autocast else "fp32", "loss": f"cross-entropy + z-loss {Z_LOSS_MULTIPLIER:g} (+ MoE aux losses)",
              "optimizer": f"AdamW, gradient norm clipped at {MAX_GRAD_NORM:g}",
              "compile": "per block (apply_compile)" if compile_model else "none",
              "triton_kernels": "none" if not s.moe else "interpreter (TRITON_INTERPRET=1)"
              if os.environ.get("TRITON_INTERPRET") == "1" else "compiled",
              "expert_gemms": dropless_expert_gemms() if s.moe and impl == "dropless" else "none"}
    return Training(microbatches, optimizer_step, lambda: opt.zero_grad(set_to_none=True),
                    sum(p.numel() for p in model.parameters()), routing, recipe)


def interpreter_autotuners() -> None:
    """Triton's CPU interpreter cannot benchmark (no driver): give each of OLMo-core's autotuned MoE kernels one
    config, its widest tile (the interpreter's cost is per program and per loop step, so the fewest steps). Only
    for CPU runs under TRITON_INTERPRET=1, never on a GPU."""
    import triton
    from olmo_core.kernels import moe as kernels

    for name in dir(kernels):
        kernel = getattr(kernels, name)
        if isinstance(kernel, triton.runtime.autotuner.Autotuner):
            kernel.configs = [max(kernel.configs, key=lambda c: sum(v for v in c.kwargs.values()
                                                                    if isinstance(v, int)))]


def olmo_core_layer(spec: ModelSpec, layer: str, impl: str | None, *, device: Any, seed: int) -> Any:
    """One of OLMo-core's own layers at the zoo model's widths, for the micro points: its attention (input
    ``[B, S, d]``), its feed-forward or its MoE (capacity or dropless; input ``[T, d]``), from a one-layer model
    of the same config, initialised as OLMo-core initialises it."""
    import dataclasses

    import torch

    s = dataclasses.replace(olmo_spec(spec, impl or ""), n_layers=1)
    if device.type == "cpu" and s.is_moe and layer == "moe":
        interpreter_autotuners()  # a CPU MoE run is in the interpreter: the config saw to it
    torch.manual_seed(seed)
    model = olmo_config(s).build(init_device=str(device))
    model.init_weights(device=device)
    block = next(iter(model.blocks.values()))
    if layer == "attention":
        return block.attention
    if layer == "mlp":
        return block.feed_forward
    return _token_rows(block.feed_forward_moe)


def _token_rows(moe: Any) -> Any:
    """OLMo-core's MoE on token rows ``[T, d]`` (its router expects ``[B, S, d]``), with its routing's balance."""
    import torch

    from tpsbench.stacks.training import RoutingFacts, load_balance

    class TokenRows(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.moe = moe

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.moe(x.view(1, *x.shape)).view(x.shape)

        def routing_facts(self) -> RoutingFacts:
            counts = getattr(self.moe.router, "batch_size_per_expert", None)
            return RoutingFacts() if counts is None else load_balance([counts])

    return TokenRows()


class OlmoCoreStack(Stack):
    name: ClassVar[str] = "olmo-core"
    description: ClassVar[str] = ("the users' OLMo-core: its dtype handling, fp32 router, fp32 loss with z-loss, "
                                  "gradient clipping; its capacity (default) and dropless MoE")
    policy: ClassVar[str | None] = "olmo_core"
    # the tpsbench implementation that computes what each of its MoE types computes (tests/olmo_check.py holds
    # them equal)
    counterparts: ClassVar[dict[str, str]] = {"capacity": "capacity", "dropless": "grouped", "dense": "dense",
                                              "-": "-"}

    def check_model(self, spec: ModelSpec) -> None:
        if (reason := cannot_express(spec)) is not None:
            raise StackError(f"OLMo-core cannot express {spec.name}: {reason}; use --stack tpsbench")

    def prediction_choices(self, dtype: str | None, impl: str, default_dtype: str) -> tuple[str, str]:
        from tpsbench.impls import cost_model_names, get_impl

        if dtype is not None and dtype != self.policy:
            raise StackError(f"--stack {self.name} counts its own dtype handling (policy {self.policy}); drop "
                             f"--dtype {dtype}")
        names = {get_impl(n).name if n in cost_model_names() else n for n in MOE_TYPES}
        if impl not in MOE_TYPES and get_impl(impl).name not in names:
            raise StackError(f"{self.name} has no MoE implementation '{impl}': its MoE types are "
                             + ", ".join(f"{k} (MoEType.{v})" for k, v in MOE_TYPES.items()))
        return str(self.policy), impl

    def counterpart(self, impl: str) -> str | None:
        return self.counterparts.get(impl)

    def run_choices(self, spec: ModelSpec, device: str, dtype: str | None, impl: str | None
                    ) -> tuple[DTypePolicy, list[str]]:
        """Checked up front: the extra installed, its MoE types only (no brackets, no stages), and on the CPU an
        MoE only in Triton's interpreter (OLMo-core's MoE runs Triton kernels)."""
        from tpsbench.costmodel import get_policy

        require_olmo_core()
        self.check_model(spec)
        if dtype is not None:
            raise StackError(f"--stack {self.name} runs its own precision (bf16 autocast on a GPU, fp32 on the "
                             f"CPU): drop --dtype {dtype}")
        default = spec.trained_impl if spec.is_moe else ",".join(MOE_TYPES)  # an MoE as it trained
        impls = [i.strip() for i in (impl or default).split(",") if i.strip()]
        for name in impls:
            if name not in MOE_TYPES:
                raise StackError(f"{self.name} has no MoE implementation '{name}': its MoE types are "
                                 + ", ".join(f"{k} (MoEType.{v})" for k, v in MOE_TYPES.items()))
        if device == "cpu" and spec.is_moe and os.environ.get("TRITON_INTERPRET") != "1":
            # @triton.jit reads TRITON_INTERPRET when a kernel is defined, so it can still be switched on here if
            # no Triton module has been imported in this process yet; each point's recipe says so
            if "triton" in sys.modules:
                raise StackError(f"OLMo-core's MoE runs Triton kernels: on the CPU run with TRITON_INTERPRET=1 "
                                 f"(Triton's interpreter, slow: tiny models only), or measure {spec.name} on a GPU")
            os.environ["TRITON_INTERPRET"] = "1"
        return get_policy("olmo_core" if device == "cuda" else "fp32"), impls

    def micro_layers(self, spec: ModelSpec, impls: Sequence[str]) -> list[tuple[str, str | None]]:
        if spec.moe is None:
            return [("attention", None), ("mlp", None)]
        return [("attention", None), *(("moe", i) for i in impls)]

    def build_layer(self, spec: ModelSpec, layer: str, impl: str | None, *, device: torch.device, seed: int,
                    routing: RoutingMode, skew: float) -> torch.nn.Module:
        return olmo_core_layer(spec, layer, impl, device=device, seed=seed)

    def training(self, spec: ModelSpec, step: StepSpec, *, device: torch.device, policy: DTypePolicy,
                 routing: RoutingMode, skew: float, compile_model: bool, seed: int) -> Training:
        return olmo_core_training(spec, step.impl, tokens=step.tokens, accumulation=step.accumulation,
                                  device=device, autocast=policy.autocast, compile_model=compile_model, seed=seed)
