"""Where the time of an expected step goes, by op group, and the gap between two models taken apart the same way:
how much of a dense/MoE gap is the MoE layer and how much is everything else that differs between the two models
(qk-norm, width, vocabulary, ...).

Each op belongs to one group by its name. The optimizer and the weight-gradient bookkeeping touch every
parameter, so their expected time is split over the groups in proportion to the parameters each group owns (a
model with more experts pays its extra optimizer time in the experts' group). The GPU's idle time (host-bound
gaps of the timeline) belongs to no op: it is a group of its own. The MoE layer's weight and gradient casts
(router, experts and shared expert together, one op each) are counted with the expert GEMMs. The groups of one
step sum to its expected time, so the differences of two steps' groups sum to the gap.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from tpsbench.costmodel import Phase
from tpsbench.estimate.expected import Expected
from tpsbench.models import ModelSpec


class OpGroup(StrEnum):
    EMBEDDING = "embedding"
    ATTENTION_PROJECTIONS = "attention projections"
    ATTENTION_CORE = "attention core"
    QK_NORM = "qk-norm"
    OTHER_NORMS = "other norms"
    ROTARY = "rotary"
    RESIDUALS = "residual adds"
    DENSE_MLP = "dense MLP"
    MOE_ROUTER = "MoE router"
    MOE_PERMUTE = "MoE permute, unpermute, mix"
    MOE_EXPERTS = "MoE expert GEMMs"
    MOE_SHARED = "MoE shared expert"
    HEAD_AND_LOSS = "LM head and loss"
    IDLE = "GPU idle (host-bound gaps)"

    @property
    def is_ffn_layer(self) -> bool:
        """The feed-forward layer: the dense MLP, or the MoE layer in its place."""
        return self is OpGroup.DENSE_MLP or self.name.startswith("MOE_")


# (name prefix, group), the first match wins: more specific prefixes first
_PREFIXES: tuple[tuple[str, OpGroup], ...] = (
    ("embed.", OpGroup.EMBEDDING),
    ("attn.core", OpGroup.ATTENTION_CORE), ("attn.qk_norm", OpGroup.QK_NORM), ("attn.rope", OpGroup.ROTARY),
    ("attn.norm", OpGroup.OTHER_NORMS), ("moe.norm", OpGroup.OTHER_NORMS), ("mlp.norm", OpGroup.OTHER_NORMS),
    ("head.norm", OpGroup.OTHER_NORMS),
    ("attn.residual", OpGroup.RESIDUALS), ("moe.residual", OpGroup.RESIDUALS), ("mlp.residual", OpGroup.RESIDUALS),
    ("attn.", OpGroup.ATTENTION_PROJECTIONS), ("attention.", OpGroup.ATTENTION_PROJECTIONS),
    ("mlp.", OpGroup.DENSE_MLP),
    ("moe.router", OpGroup.MOE_ROUTER), ("moe.shared", OpGroup.MOE_SHARED),
    ("moe.permute", OpGroup.MOE_PERMUTE), ("moe.unpermute", OpGroup.MOE_PERMUTE), ("moe.mix", OpGroup.MOE_PERMUTE),
    ("moe.", OpGroup.MOE_EXPERTS),
    ("head.", OpGroup.HEAD_AND_LOSS),
)


def op_group(name: str) -> OpGroup | None:
    """The group of an op by its name; None for the optimizer's ops (split by parameters)."""
    for prefix, group in _PREFIXES:
        if name.startswith(prefix):
            return group
    return None


def parameters_by_group(m: ModelSpec) -> dict[OpGroup, int]:
    """Every parameter of the model in the group whose ops use it (they sum to ``total_params``)."""
    layers, d = m.n_layers, m.d_model
    out = {
        OpGroup.EMBEDDING: m.embedding_params,
        OpGroup.ATTENTION_PROJECTIONS: layers * (m.attention_matmul_params + m.qkv_bias_params),
        OpGroup.QK_NORM: layers * m.qk_norm_params,
        OpGroup.OTHER_NORMS: layers * 2 * d + d,
        OpGroup.HEAD_AND_LOSS: m.lm_head_weight_params - d,
    }
    if m.moe is None:
        out[OpGroup.DENSE_MLP] = layers * m.ffn_params()
    else:
        moe = m.moe
        shared = (3 * d * moe.shared_hidden if moe.shared_hidden else 0) + (d if moe.shared_gate else 0)
        out[OpGroup.MOE_ROUTER] = layers * d * moe.num_experts
        out[OpGroup.MOE_EXPERTS] = layers * moe.routed_expert_params(d)
        out[OpGroup.MOE_SHARED] = layers * shared
    assert sum(out.values()) == m.total_params, (m.name, sum(out.values()), m.total_params)
    return out


@dataclass(frozen=True, slots=True)
class StepByGroup:
    """An expected step's time per group (seconds); they sum to the step."""

    model: str
    seconds: dict[OpGroup, float]

    @property
    def total_s(self) -> float:
        return sum(self.seconds.values())


def step_by_group(m: ModelSpec, e: Expected) -> StepByGroup:
    seconds = dict.fromkeys(OpGroup, 0.0)
    optimizer = 0.0
    for row in e.rows:
        group = op_group(row.op.name)
        if group is None or row.op.phase is Phase.OPTIM:
            optimizer += row.expected_s
        else:
            seconds[group] += row.expected_s
    # With several microbatches the step also adds each later microbatch's gradients into .grad: kernels outside
    # the op rows that touch every parameter, split with the optimizer.
    accumulation = e.seconds - sum(row.expected_s for row in e.rows) - e.timeline.gpu_idle_s
    optimizer += max(0.0, accumulation)
    params = parameters_by_group(m)
    for group, count in params.items():
        seconds[group] += optimizer * count / m.total_params
    seconds[OpGroup.IDLE] = e.timeline.gpu_idle_s
    return StepByGroup(m.name, seconds)


@dataclass(frozen=True, slots=True)
class GapRow:
    group: OpGroup
    a_s: float
    b_s: float

    @property
    def gap_s(self) -> float:
        return self.b_s - self.a_s


@dataclass(frozen=True, slots=True)
class Gap:
    """Model B's expected step against model A's, group by group; the rows' gaps sum to the whole gap."""

    a: StepByGroup
    b: StepByGroup
    rows: tuple[GapRow, ...]

    @property
    def gap_s(self) -> float:
        return self.b.total_s - self.a.total_s

    def ffn_layer_s(self) -> float:
        """Seconds of the gap in the feed-forward layer (an MoE layer against a dense MLP, say)."""
        return sum(r.gap_s for r in self.rows if r.group.is_ffn_layer)

    def other_s(self) -> float:
        """Seconds of the gap everywhere else: what differs between the two models besides the FFN layer."""
        return self.gap_s - self.ffn_layer_s()


def gap(a: StepByGroup, b: StepByGroup) -> Gap:
    rows = tuple(GapRow(g, a.seconds[g], b.seconds[g]) for g in OpGroup if a.seconds[g] or b.seconds[g])
    return Gap(a, b, rows)
