"""Per-op cost model of one training step: FLOPs and bytes, per phase, split by kind of data. Pure functions of a
:class:`Workload`; the conventions are stated once, in :mod:`tpsbench.costmodel.ops`.

One module per concern: ``ops`` (conventions, data types, shared op builders), ``attention``, ``ffn`` (dense
SwiGLU and the MoE layer, with routing and capacity), ``head`` (embedding, LM head, cross-entropy),
``optimizer`` (autocast casts, AdamW, gradient accumulation) and ``step`` (a whole training step, FLOP
conventions, bytes per optimizer step). This package re-exports what the rest of tpsbench uses.
"""

from tpsbench.costmodel.attention import attention_core_ops, attention_layer_ops, attention_ops
from tpsbench.costmodel.ffn import (
    Routing,
    capacity_rows,
    dense_mlp_ops,
    fused_expert_ops,
    moe_ops,
    routing,
    unfused_expert_ops,
)
from tpsbench.costmodel.head import embedding_ops, head_ops
from tpsbench.costmodel.ops import (
    CAPACITY_MULTIPLE,
    DEFAULT_CAPACITY_FACTOR,
    DEFAULT_POLICY,
    FWD_BWD,
    POLICIES,
    DTypePolicy,
    FlopConvention,
    GemmShape,
    OpCost,
    OpKind,
    Phase,
    Traffic,
    Workload,
    WorkloadError,
    elementwise_ops,
    get_policy,
    linear_ops,
    residual_ops,
    rmsnorm_ops,
    swiglu_act_ops,
    total_flops,
)
from tpsbench.costmodel.optimizer import (
    ADAMW_FLOPS_PER_PARAM,
    adamw_op,
    autocast_ops,
    cast_ops,
    expert_params_without_grad_cast,
    grad_accumulation_bytes,
    matmul_params,
    optimizer_ops,
)
from tpsbench.costmodel.step import (
    ffn_ops,
    flops_per_token,
    global_step_bytes,
    olmo_flops_per_token,
    step_ops,
    train_workload,
)

__all__ = [
    "ADAMW_FLOPS_PER_PARAM", "CAPACITY_MULTIPLE", "DEFAULT_CAPACITY_FACTOR", "DEFAULT_POLICY", "FWD_BWD", "POLICIES",
    "DTypePolicy", "FlopConvention", "GemmShape", "OpCost", "OpKind", "Phase", "Routing", "Traffic", "Workload",
    "WorkloadError",
    "adamw_op",
    "attention_core_ops", "attention_layer_ops", "attention_ops", "autocast_ops", "capacity_rows", "cast_ops",
    "dense_mlp_ops", "elementwise_ops", "embedding_ops", "expert_params_without_grad_cast", "ffn_ops",
    "flops_per_token", "fused_expert_ops", "get_policy", "global_step_bytes", "grad_accumulation_bytes", "head_ops",
    "linear_ops", "matmul_params", "moe_ops",
    "olmo_flops_per_token", "optimizer_ops", "residual_ops", "rmsnorm_ops", "routing",
    "step_ops", "swiglu_act_ops", "total_flops", "train_workload", "unfused_expert_ops",
]
