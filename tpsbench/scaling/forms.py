"""The forms a law can take, each with the parameter count it uses and its published fits.

``chinchilla``: ``L(N, D) = E + A / N^alpha + B / D^beta`` (Hoffmann et al. 2022, arXiv 2203.15556, eq. 2), N the
model's parameters including the embeddings (as Hoffmann counted them), D the training tokens. Published:
Hoffmann's approach 3 as printed (eq. 10) and as Besiroglu et al. 2024 (arXiv 2404.10102, "Chinchilla scaling: a
replication attempt") refitted it on the reconstructed data with the method used here (Huber loss on log L,
delta 1e-3, L-BFGS-B from a grid of starts).

``joint_moe``: Ludziejewski et al. 2025's joint law of dense and MoE models (eq. 6), N the active parameters with
the embeddings, E the number of experts through Clark et al. 2022's saturating transform Ê; published: its Table 3.
Its exponents are negative as written there.

``granularity``: Krajewski et al. 2024's law of fine-grained MoE (eq. 9), ``L = c + (g / G^gamma + a) / N^alpha +
b / D^beta``, N the total non-embedding parameters (the blocks'), G the granularity: how many experts a token is
routed to when each is 1/G of the FFN it replaces (here: top-k); fitted at expansion rate E = 64 (experts / G),
G 1-16; published: its Table 1.

Absolute losses depend on the data and tokenizer; ratios between models transfer better.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np


class ParameterCount(StrEnum):
    TOTAL = "total parameters, embeddings included"
    ACTIVE = "active parameters (per token), embeddings included"
    NON_EMBEDDING = "total parameters of the blocks (no embedding, no LM head)"


@dataclass(frozen=True, slots=True)
class PublishedLaw:
    name: str
    values: dict[str, float]
    citation: str
    experts: tuple[float, float] | None = None  # the expert counts (joint law) or granularities its runs covered


@dataclass(frozen=True, slots=True)
class LawForm:
    name: str
    parameters: tuple[str, ...]
    counts: ParameterCount
    equation: str
    citation: str
    published: tuple[PublishedLaw, ...]
    log_scaled: frozenset[str]  # fitted in log space (positive scale factors)
    bounds: dict[str, tuple[float | None, float | None]]  # in the fitted coordinates
    grid: dict[str, tuple[float, ...]]  # starting values, natural units
    floor: str  # the irreducible loss: bounded above by the lowest observed loss
    variable: str = ""  # the law's architecture variable beside N and D ("E" experts, "G" granularity)

    def loss(self, values: dict[str, float], n: np.ndarray, d: np.ndarray, experts: np.ndarray | float = 1.0
             ) -> np.ndarray:
        if self.name == "chinchilla":
            e, a, b, alpha, beta = (values[k] for k in ("E", "A", "B", "alpha", "beta"))
            return e + a * np.power(n, -alpha) + b * np.power(d, -beta)
        if self.name == "granularity":
            v = values
            scale = v["g"] * np.power(np.asarray(experts, float), -v["gamma"]) + v["a"]
            return v["c"] + scale * np.power(n, -v["alpha"]) + v["b"] * np.power(d, -v["beta"])
        ln_e = np.log(transformed_experts(np.asarray(experts, float), values["E_start"], values["E_max"]))
        v = values
        return (v["a"] * np.exp(v["delta"] * ln_e + (v["alpha"] + v["gamma"] * ln_e) * np.log(n))
                + v["b"] * np.exp(v["omega"] * ln_e + (v["beta"] + v["zeta"] * ln_e) * np.log(d)) + v["c"])

    def infinite_data_loss(self, values: dict[str, float], n: float, experts: float = 1.0) -> float:
        """The loss with unlimited tokens: the floor no number of tokens gets below."""
        return float(self.loss(values, np.asarray(n, float), np.asarray(np.inf), experts))

    def tokens_to_loss(self, values: dict[str, float], n: float, target: float, experts: float = 1.0
                       ) -> float | None:
        """Tokens at which the law reaches ``target``; None when it never does (at or below the infinite-data
        loss)."""
        floor = self.infinite_data_loss(values, n, experts)
        if target <= floor:
            return None
        if self.name == "chinchilla":
            return float((values["B"] / (target - floor)) ** (1.0 / values["beta"]))
        if self.name == "granularity":
            return float((values["b"] / (target - floor)) ** (1.0 / values["beta"]))
        ln_e = float(np.log(transformed_experts(np.asarray(float(experts)), values["E_start"], values["E_max"])))
        scale = values["b"] * np.exp(values["omega"] * ln_e)
        exponent = values["beta"] + values["zeta"] * ln_e  # negative: the D term falls with tokens
        return float(((target - floor) / scale) ** (1.0 / exponent))

    def published_law(self, name: str) -> PublishedLaw:
        for law in self.published:
            if law.name == name:
                return law
        raise KeyError(name)


def transformed_experts(experts: np.ndarray, e_start: float, e_max: float) -> np.ndarray:
    """Clark et al. 2022's saturating transform of the expert count (Ludziejewski et al. 2025, eq. 4):
    1/Ê = 1 / (E - 1 + (1/E_start - 1/E_max)^-1) + 1/E_max; a dense model (E = 1) has Ê = E_start."""
    return 1.0 / (1.0 / (experts - 1.0 + 1.0 / (1.0 / e_start - 1.0 / e_max)) + 1.0 / e_max)


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
    published=(BESIROGLU_2024, HOFFMANN_2022), log_scaled=frozenset({"A", "B"}),
    bounds={"E": (0.0, None), "A": (0.0, 30.0), "B": (0.0, 30.0), "alpha": (0.01, 2.0), "beta": (0.01, 2.0)},
    grid={"A": (7.4, 403.0, 22026.0), "B": (7.4, 403.0, 22026.0), "alpha": (0.1, 0.3, 0.5), "beta": (0.1, 0.3, 0.5)},
    floor="E")

LUDZIEJEWSKI_2025 = PublishedLaw(
    "ludziejewski2025", {"a": 35.91, "alpha": -0.1889, "delta": -0.2285, "gamma": 0.0098, "b": 35.98,
                         "beta": -0.1775, "omega": 0.5529, "zeta": -0.0259, "E_start": 2.0732, "E_max": 290.4521,
                         "c": 1.3637},
    "Ludziejewski et al. 2025 (arXiv 2502.05172, ICML), Table 3: fitted on 280+ Switch (top-1) MoE and dense runs up "
    "to 2.7B active parameters, GPT-2 tokenizer (vocabulary 50,257), N = active parameters with embeddings",
    experts=(1.0, 32.0))  # "a relatively small number (<= 32) of experts" (its appendix A.2)

JOINT_MOE = LawForm(
    name="joint_moe", parameters=("a", "alpha", "delta", "gamma", "b", "beta", "omega", "zeta", "E_start", "E_max",
                                  "c"),
    counts=ParameterCount.ACTIVE,
    equation="L(N, D, E) = a Ê^delta N^(alpha + gamma ln Ê) + b Ê^omega D^(beta + zeta ln Ê) + c",
    citation="Ludziejewski et al. 2025 (arXiv 2502.05172), eq. 6, Ê of Clark et al. 2022 (eq. 4)",
    # E_start and E_max in log space: in natural units their gradients are too small for L-BFGS-B's tolerance
    published=(LUDZIEJEWSKI_2025,), log_scaled=frozenset({"a", "b", "E_start", "E_max"}),
    bounds={"a": (-5.0, 15.0), "alpha": (-1.0, -0.01), "delta": (-2.0, 2.0), "gamma": (-0.5, 0.5),
            "b": (-5.0, 15.0), "beta": (-1.0, -0.01), "omega": (-2.0, 2.0), "zeta": (-0.5, 0.5),
            "E_start": (0.01, 4.2), "E_max": (2.8, 9.2), "c": (0.0, None)},
    grid={"a": (10.0, 100.0), "alpha": (-0.3, -0.15), "b": (10.0, 100.0), "beta": (-0.3, -0.15)},
    floor="c", variable="E")

KRAJEWSKI_2024 = PublishedLaw(
    "krajewski2024", {"a": 18.1, "alpha": 0.115, "b": 30.8, "beta": 0.147, "g": 2.1, "gamma": 0.58, "c": 0.47},
    "Krajewski et al. 2024 (arXiv 2402.07871, ICML), Table 1 (MoE): 100+ runs of 129M-3.7B total parameters, "
    "16B-130B tokens, expansion rate E = 64, granularity 1-16; N = total non-embedding parameters",
    experts=(1.0, 16.0))  # the granularities its runs covered (section 5)

GRANULARITY = LawForm(
    name="granularity", parameters=("a", "alpha", "b", "beta", "g", "gamma", "c"), counts=ParameterCount.NON_EMBEDDING,
    equation="L(N, D, G) = c + (g / G^gamma + a) / N^alpha + b / D^beta",
    citation="Krajewski et al. 2024 (arXiv 2402.07871), eq. 9",
    published=(KRAJEWSKI_2024,), log_scaled=frozenset({"a", "b", "g"}),
    bounds={"a": (-5.0, 15.0), "alpha": (0.01, 2.0), "b": (-5.0, 15.0), "beta": (0.01, 2.0), "g": (-10.0, 10.0),
            "gamma": (0.0, 3.0), "c": (0.0, None)},
    grid={"a": (10.0, 100.0), "alpha": (0.1, 0.3), "b": (10.0, 100.0), "beta": (0.1, 0.3)},
    floor="c", variable="G")
EXPANSION_RATE = 64  # Krajewski et al.'s runs: experts / granularity (E = 16 only in an appendix)

FORMS: dict[str, LawForm] = {CHINCHILLA.name: CHINCHILLA, JOINT_MOE.name: JOINT_MOE, GRANULARITY.name: GRANULARITY}
PUBLISHED: dict[str, tuple[LawForm, PublishedLaw]] = {law.name: (form, law) for form in FORMS.values()
                                                      for law in form.published}
PUBLISHED_NOTE = "published law: absolute losses depend on data and tokenizer, ratios transfer better"
