"""OLMo-core configs for the reader's tests, written by OLMo-core itself (``TransformerConfig.as_config_dict()``,
what its ConfigSaverCallback saves as the ``model`` of an experiment's config.json).

    python tests/olmo_configs.py   # rewrites the committed files below (needs the olmo extra)
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# (file, factory keyword arguments): one per field the reader must follow; small enough to build in a second
GENERATED: dict[str, dict[str, Any]] = {
    "dense": {"d_model": 256, "n_layers": 2, "n_heads": 4},
    "dense_gqa_head_dim": {"d_model": 256, "n_layers": 2, "n_heads": 8, "n_kv_heads": 2, "head_dim": 48},
    "dense_qk_norm": {"d_model": 256, "n_layers": 2, "n_heads": 4, "qk_norm": True},
    "dense_head_qk_norm_tied": {"d_model": 256, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "qk_norm": True,
                                "use_head_qk_norm": True, "tie_word_embeddings": True},
    "dense_reordered": {"d_model": 256, "n_layers": 3, "n_heads": 4, "block_name": "reordered_norm",
                        "qk_norm": True, "layer_norm_eps": 1e-6},
    "moe_capacity_shared": {"d_model": 256, "n_layers": 2, "n_heads": 4, "num_experts": 8, "top_k": 2,
                            "expert_hidden_size": 128, "shared_expert_hidden_size": 256, "capacity_factor": 1.25},
    "moe_dropless_reordered": {"d_model": 256, "n_layers": 2, "n_heads": 4, "num_experts": 16, "top_k": 4,
                               "expert_hidden_size": 64, "dropless": True, "reordered_norm": True},
    "moe_dropless_gqa_no_qk_norm": {"d_model": 256, "n_layers": 2, "n_heads": 8, "n_kv_heads": 4, "num_experts": 4,
                                    "top_k": 1, "expert_hidden_size": 96, "dropless": True, "qk_norm": False,
                                    "z_loss_weight": None},
}
FIXTURE = ROOT / "tests" / "configs" / "olmo_core" / "moe-run" / "config.json"  # an experiment config
EXAMPLE = ROOT / "docs" / "examples" / "moe-64e-run" / "config.json"  # docs/models.md's worked example


def olmo_core_config(case: dict[str, Any], vocab_size: int = 4096) -> Any:
    from olmo_core.nn.transformer import TransformerBlockType, TransformerConfig

    kwargs = dict(case)
    if "block_name" in kwargs:
        kwargs["block_name"] = TransformerBlockType(kwargs["block_name"])
    factory = TransformerConfig.llama_like_moe if "num_experts" in kwargs else TransformerConfig.llama_like
    return factory(vocab_size=vocab_size, **kwargs)


def experiment(run_name: str, model: Any, sequence_length: int) -> dict[str, Any]:
    """The parts of an experiment config the reader looks at, as OLMo-core writes them."""
    return {"run_name": run_name, "model": model.as_config_dict(), "dataset": {"sequence_length": sequence_length}}


def write(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")


def committed() -> dict[Path, dict[str, Any]]:
    fixture = olmo_core_config({"d_model": 512, "n_layers": 4, "n_heads": 8, "num_experts": 16, "top_k": 2,
                                "expert_hidden_size": 256, "shared_expert_hidden_size": 512, "dropless": True,
                                "reordered_norm": True}, vocab_size=50304)
    example = olmo_core_config({"d_model": 1024, "n_layers": 16, "n_heads": 16, "num_experts": 64, "top_k": 8,
                                "expert_hidden_size": 512, "dropless": True, "reordered_norm": True,
                                "rope_theta": 500_000, "layer_norm_eps": 1e-6}, vocab_size=100352)
    return {FIXTURE: experiment("moe-run", fixture, 2048), EXAMPLE: experiment("moe-64e-run", example, 4096)}


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    for target, document in committed().items():
        write(target, document)
        print(target.relative_to(ROOT), file=sys.stderr)
