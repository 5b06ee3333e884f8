"""What a micro (layer) benchmark point times, in the cost model's ops: one layer of a model (attention, dense
MLP, MoE, a dense bracket) forward, backward or both, or one MoE stage forward. Pure, so the roofline, the
expected-time model and the benchmarks share one definition."""

from __future__ import annotations

from tpsbench.costmodel.attention import attention_layer_ops
from tpsbench.costmodel.ffn import dense_mlp_ops, moe_ops
from tpsbench.costmodel.ops import FWD_BWD, DTypePolicy, OpCost, Phase, Workload
from tpsbench.costmodel.optimizer import cast_ops, expert_params_without_grad_cast, matmul_tensors
from tpsbench.impls import bracket_hidden, is_bracket
from tpsbench.models import ModelSpec

MODES = ("fwd", "bwd", "fwd_bwd")
MODE_PHASES: dict[str, tuple[Phase, ...]] = {
    "fwd": (Phase.FWD,),
    "bwd": (Phase.BWD_DGRAD, Phase.BWD_WGRAD),
    "fwd_bwd": FWD_BWD,
}
STAGES = ("router", "permute", "up_gate", "act", "down", "unpermute")
STAGE_OPS: dict[str, tuple[str, ...]] = {
    "router": ("moe.router", "moe.router_topk"),
    "permute": ("moe.permute",),
    "up_gate": ("moe.expert_up_gate",),
    "act": ("moe.expert_act",),
    "down": ("moe.expert_down",),
    "unpermute": ("moe.unpermute",),
}


def _layer_params(spec: ModelSpec, layer: str) -> int:
    """The matmul weights of a layer (what autocast casts every forward)."""
    if layer == "attention":
        return spec.attention_matmul_params
    if is_bracket(layer):
        return 3 * spec.d_model * bracket_hidden(spec, layer)
    return spec.ffn_params()  # mlp or moe


def layer_case_ops(spec: ModelSpec, layer: str, impl: str | None, tokens: int, mode: str, policy: DTypePolicy,
                   attention_backend: str = "flash", capacity_factor: float | None = None) -> list[OpCost]:
    """The cost model's ops for exactly what a case times."""
    w = Workload(model=spec, tokens=tokens, seq_len=min(spec.seq_len, tokens),
                 impl=impl or "dropless", capacity_factor=capacity_factor, policy=policy,
                 attention_backend=attention_backend)
    if mode.startswith("stage:"):
        names = STAGE_OPS[mode.split(":", 1)[1]]
        return [op for op in moe_ops(w) if op.name in names and op.phase is Phase.FWD]
    if layer == "attention":
        ops = attention_layer_ops(w)
    elif layer == "mlp":
        assert spec.ffn_hidden is not None
        ops = dense_mlp_ops(w, spec.ffn_hidden)
    elif is_bracket(layer):
        ops = dense_mlp_ops(w, bracket_hidden(spec, layer), prefix=layer, group="mlp")
    else:
        ops = moe_ops(w)
    params = _layer_params(spec, layer)
    uncast = expert_params_without_grad_cast(spec, w.impl) if layer == "moe" else 0
    tensors = 3 if is_bracket(layer) else matmul_tensors(spec.with_layers(1))[layer]
    ops += cast_ops(layer, params, policy, grad_cast_params=params - uncast, tensors=tensors)
    phases = MODE_PHASES[mode]
    return [op for op in ops if op.phase in phases]


