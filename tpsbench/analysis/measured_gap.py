"""A measured dense/MoE gap taken apart: the two measured steps, the expected-time model's gap between them split
by op group (tpsbench/estimate/attribution.py), and what the model does not account for.

Times are per microbatch: a step measured at a global batch of several microbatches is taken at its share of one
(tokens / tokens per second, and the expected global step scaled the same way), so two rows measured at different
global batches still compare.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from tpsbench.estimate.attribution import Gap, StepByGroup, gap, step_by_group
from tpsbench.estimate.expected import Expected
from tpsbench.models import ModelSpec
from tpsbench.options import PointKind
from tpsbench.points import MeasuredPoint
from tpsbench.results.typed import JsonObject


@dataclass(frozen=True, slots=True)
class MeasuredStep:
    model: ModelSpec
    tokens_per_s: float  # measured
    expected: Expected  # the expected-time model's estimate of the same step
    step_tokens: int  # tokens of the step ``expected`` estimates (a global batch: several microbatches)


@dataclass(frozen=True, slots=True)
class MeasuredGap:
    gpu: str
    impl: str  # model B's MoE implementation (or "dense")
    tokens: int  # per microbatch: every time is one microbatch's share of its step
    a_measured_s: float
    b_measured_s: float
    expected: Gap

    @property
    def measured_gap_s(self) -> float:
        return self.b_measured_s - self.a_measured_s

    @property
    def unaccounted_s(self) -> float:
        """The measured gap the expected model does not account for (negative: the model predicts a larger gap)."""
        return self.measured_gap_s - self.expected.gap_s

    def to_dict(self) -> JsonObject:
        g = self.expected
        return {"gpu": self.gpu, "a": g.a.model, "b": g.b.model, "impl": self.impl, "tokens": self.tokens,
                "a_measured_s": self.a_measured_s, "b_measured_s": self.b_measured_s,
                "measured_gap_s": self.measured_gap_s, "expected_gap_s": g.gap_s,
                "expected_ffn_layer_s": g.ffn_layer_s(), "expected_other_s": g.other_s(),
                "unaccounted_s": self.unaccounted_s,
                "groups": [{"group": str(r.group), "a_s": r.a_s, "b_s": r.b_s, "gap_s": r.gap_s} for r in g.rows]}


def _per_microbatch(step: MeasuredStep, tokens: int) -> StepByGroup:
    whole = step_by_group(step.model, step.expected)
    share = tokens / step.step_tokens
    return StepByGroup(whole.model, {k: v * share for k, v in whole.seconds.items()})


def measured_gap(gpu: str, impl: str, tokens: int, a: MeasuredStep, b: MeasuredStep) -> MeasuredGap:
    """Model B's measured step (with implementation ``impl``) against model A's at microbatches of ``tokens`` on
    ``gpu``."""
    return MeasuredGap(gpu, impl, tokens, tokens / a.tokens_per_s, tokens / b.tokens_per_s,
                       gap(_per_microbatch(a, tokens), _per_microbatch(b, tokens)))


def measured_pairs(steps: Iterable[MeasuredPoint], estimate: Callable[[MeasuredPoint], Expected | None]
                   ) -> list[MeasuredGap]:
    """Every dense model's measured training step against every MoE model's on the same GPU, microbatch, global
    batch and compile setting, where the expected-time model estimates both (``estimate``: None where it cannot)."""
    from tpsbench.impls import BRACKETS
    from tpsbench.models import get_model

    ok = [e for e in steps if e.ok and e.key.kind is PointKind.E2E and e.tokens_per_s]
    out = []
    for d in (e for e in ok if e.key.impl == "dense"):
        for m in (e for e in ok if e.key.impl not in ("dense", *BRACKETS)):
            same = (d.gpu, d.key.tokens, d.key.global_tokens, d.key.compiled, d.key.stack)
            if same != (m.gpu, m.key.tokens, m.key.global_tokens, m.key.compiled, m.key.stack):
                continue
            ed, em = estimate(d), estimate(m)
            if ed is None or em is None:
                continue
            assert d.tokens_per_s is not None and m.tokens_per_s is not None
            out.append(measured_gap(d.gpu, m.key.impl, d.key.tokens,
                                    MeasuredStep(get_model(d.key.model), d.tokens_per_s, ed, d.step_tokens),
                                    MeasuredStep(get_model(m.key.model), m.tokens_per_s, em, m.step_tokens)))
    return out
