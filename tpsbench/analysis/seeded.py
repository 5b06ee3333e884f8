"""The seed of ``scipy.stats.bootstrap`` under the keyword the installed scipy takes (``rng`` since 1.15,
``random_state`` before; CI's and the GPU image's scipy differ), shared by `check` and the loss fits."""

from __future__ import annotations

import inspect

import numpy as np


def bootstrap_seed(seed: int) -> dict[str, np.random.Generator]:
    from scipy import stats

    key = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"
    return {key: np.random.default_rng(seed)}
