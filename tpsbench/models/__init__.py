"""Models: the spec every count is made from (``spec``), the keys that describe one (``fields``), the file format
(``model_file``) and where models are found (``registry``: the zoo's files, the user's folders, a path)."""

from tpsbench.models.registry import MODELS_ENV, all_models, get_model, is_known_model, remember, zoo_models
from tpsbench.models.spec import (
    GPT2_PADDED_VOCAB,
    USERS_GLOBAL_BATCH_TOKENS,
    USERS_MICROBATCH_TOKENS,
    ModelError,
    ModelSpec,
    MoESpec,
    default_global_batch,
    llama_ffn_hidden,
)

__all__ = [
    "GPT2_PADDED_VOCAB",
    "MODELS_ENV",
    "USERS_GLOBAL_BATCH_TOKENS",
    "USERS_MICROBATCH_TOKENS",
    "MoESpec",
    "ModelError",
    "ModelSpec",
    "all_models",
    "default_global_batch",
    "get_model",
    "is_known_model",
    "llama_ffn_hidden",
    "remember",
    "zoo_models",
]
