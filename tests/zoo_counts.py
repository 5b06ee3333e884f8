"""Every count the zoo gives, as one JSON document: the golden that proves moving the zoo (or any model source)
changes no number. Per model: its dimensions, total and active parameters, training FLOPs per token under each
convention, and the cost model's ops of a training step for every implementation (each op's FLOPs, bytes and
launches, hashed with their sums kept readable).

    python tests/zoo_counts.py > tests/golden/zoo-counts.json   # on purpose, in the commit that changes a count
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict

from tpsbench.costmodel.ops import FWD_BWD, FlopConvention, get_policy
from tpsbench.costmodel.step import flops_per_token, step_ops, train_workload
from tpsbench.impls import BRACKETS, moe_impl_names
from tpsbench.models import ModelSpec, zoo_models

# Dimensions the counts depend on; presentation fields (name, note, OLMo-core factory notes) are left out.
SHAPE_FIELDS = (
    "d_model", "n_layers", "n_heads", "ffn_hidden", "moe", "vocab_size", "qk_norm", "n_kv_heads", "head_width",
    "qk_norm_per_head", "reordered_norm", "rope_theta", "norm_eps", "seq_len", "tie_embeddings", "qkv_bias",
)


def _ops_summary(spec: ModelSpec, impl: str) -> dict[str, object]:
    w = train_workload(spec, impl, 2 * spec.seq_len, get_policy("amp_bf16"))
    ops = step_ops(w)
    rows = [[op.name, str(op.phase), op.flops, op.bytes, op.launches, op.count] for op in ops]
    digest = hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]
    return {
        "ops": len(ops),
        "fwd_bwd_flops": sum(op.flops for op in ops if op.phase in FWD_BWD),
        "bytes": sum(op.bytes for op in ops),
        "sha256_16": digest,
    }


def model_counts(spec: ModelSpec) -> dict[str, object]:
    fields = asdict(spec)
    impls = [*moe_impl_names(), *BRACKETS] if spec.moe is not None else ["dense"]
    w = train_workload(spec, impls[0], 2 * spec.seq_len, get_policy("amp_bf16"))
    return {
        "shape": {k: fields[k] for k in SHAPE_FIELDS},
        "total_params": spec.total_params,
        "active_params": spec.active_params,
        "flops_per_token": {str(c): flops_per_token(w, c) for c in FlopConvention},
        "step_ops": {impl: _ops_summary(spec, impl) for impl in impls},
    }


def zoo_counts() -> dict[str, object]:
    return {name: model_counts(spec) for name, spec in sorted(zoo_models().items())}


if __name__ == "__main__":
    json.dump(zoo_counts(), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
