"""The forms a law can take, each with the parameter count it uses and its published fits.

``chinchilla``: ``L(N, D) = E + A / N^alpha + B / D^beta`` (Hoffmann et al. 2022, arXiv 2203.15556, eq. 2), N the
model's parameters including the embeddings (as Hoffmann counted them), D the training tokens. Published:
Hoffmann's approach 3 as printed (eq. 10) and as Besiroglu et al. 2024 (arXiv 2404.10102, "Chinchilla scaling: a
replication attempt") refitted it on the reconstructed data with the method used here (Huber loss on log L,
delta 1e-3, L-BFGS-B from a grid of starts). Absolute losses depend on the data and tokenizer; ratios between
models transfer better.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np


class ParameterCount(StrEnum):
    TOTAL = "total parameters, embeddings included"
    ACTIVE = "active parameters (per token), embeddings included"


@dataclass(frozen=True, slots=True)
class PublishedLaw:
    name: str
    values: dict[str, float]
    citation: str


@dataclass(frozen=True, slots=True)
class LawForm:
    name: str
    parameters: tuple[str, ...]
    counts: ParameterCount
    equation: str
    citation: str
    published: tuple[PublishedLaw, ...]

    def loss(self, values: dict[str, float], n: np.ndarray, d: np.ndarray) -> np.ndarray:
        e, a, b, alpha, beta = (values[k] for k in ("E", "A", "B", "alpha", "beta"))
        return e + a * np.power(n, -alpha) + b * np.power(d, -beta)

    def published_law(self, name: str) -> PublishedLaw:
        for law in self.published:
            if law.name == name:
                return law
        raise KeyError(name)


HOFFMANN_2022 = PublishedLaw(
    "hoffmann2022", {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28},
    "Hoffmann et al. 2022 (arXiv 2203.15556), approach 3, eq. 10 as printed")
BESIROGLU_2024 = PublishedLaw(
    "besiroglu2024", {"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658},
    "Besiroglu et al. 2024 (arXiv 2404.10102), the refit of Hoffmann's approach 3 (Huber delta 1e-3, 240 points)")

CHINCHILLA = LawForm(
    name="chinchilla", parameters=("E", "A", "B", "alpha", "beta"), counts=ParameterCount.TOTAL,
    equation="L(N, D) = E + A / N^alpha + B / D^beta",
    citation="Hoffmann et al. 2022 (arXiv 2203.15556), eq. 2",
    published=(BESIROGLU_2024, HOFFMANN_2022))

FORMS: dict[str, LawForm] = {CHINCHILLA.name: CHINCHILLA}
PUBLISHED_NOTE = "published law: absolute losses depend on data and tokenizer, ratios transfer better"
