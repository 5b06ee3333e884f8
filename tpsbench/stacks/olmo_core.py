"""The zoo in OLMo-core (PyPI ``ai2-olmo-core`` >= 3, < 4, the optional extra ``.[olmo]``): each zoo model as an
OLMo-core ``TransformerConfig`` with the same dimensions, and the upstream factory that equals it where one does
(``ModelSpec.olmo_factory``).

The users' configs (OLMo-core's ``llama_like`` / ``llama_like_moe`` rules): no biases, untied LM head with its own
norm, SwiGLU of the spec's width, RMSNorm, RoPE with the spec's theta; MoE blocks with the reordered norm and
qk-norm, a softmax top-k router, the shared expert, ``MoEType.default`` (capacity) or ``dropless`` as the spec
says. tests/test_olmo_core.py holds tpsbench's counts to OLMo-core's: the same total and active parameters,
the ``olmo`` FLOP convention equal to ``Transformer.num_flops_per_token`` to the FLOP.
"""

from __future__ import annotations

from typing import Any

from tpsbench.errors import InputError
from tpsbench.models import ModelSpec

OLMO_CORE_INSTALL = 'pip install -e ".[olmo]"'


class StackError(InputError):
    """The OLMo-core stack is not installed, or cannot express what was asked for."""


def require_olmo_core() -> Any:
    """The ``olmo_core`` package, or a one-line error saying how to install it."""
    try:
        import olmo_core
    except ImportError:
        raise StackError(f"the OLMo-core stack needs the ai2-olmo-core package: {OLMO_CORE_INSTALL}") from None
    return olmo_core


def olmo_config(spec: ModelSpec) -> Any:
    """The OLMo-core ``TransformerConfig`` of a zoo model, built from its dimensions."""
    require_olmo_core()
    from olmo_core.nn.feed_forward import FeedForwardConfig
    from olmo_core.nn.transformer import TransformerBlockType, TransformerConfig

    common = {"d_model": spec.d_model, "vocab_size": spec.vocab_size, "n_layers": spec.n_layers,
              "n_heads": spec.n_heads, "qk_norm": spec.qk_norm, "rope_theta": int(spec.rope_theta),
              "layer_norm_eps": spec.norm_eps}
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


def tpsbench_state_dict(olmo_state: dict[str, Any], spec: ModelSpec) -> dict[str, Any]:
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
