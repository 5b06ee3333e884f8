"""The expected estimate of a training step with its memory verdict: what `predict`, `run` and `explain` show
next to the floor."""

from __future__ import annotations

from dataclasses import dataclass

from tpsbench.costmodel import Workload
from tpsbench.estimate.expected import Expected, expected_step
from tpsbench.estimate.memory import MemoryEstimate, step_memory, usable_bytes
from tpsbench.estimate.select import table_for
from tpsbench.estimate.table import EfficiencyError
from tpsbench.profiles import GPUProfile
from tpsbench.results.typed import JsonObject


@dataclass(frozen=True, slots=True)
class StepEstimate:
    gpu: str
    tokens: int
    expected: Expected | None  # None when no efficiency table can be had (``reason`` says why)
    memory: MemoryEstimate
    usable_bytes: float
    reason: str | None = None

    @property
    def fits(self) -> bool:
        return self.memory.fits(self.usable_bytes)

    def to_dict(self) -> JsonObject:
        e = self.expected
        return {
            **({"expected_s": None, "reason": self.reason} if e is None else
               {**e.to_dict(), "expected_tokens_per_s": self.tokens / e.seconds}),
            "memory": {**self.memory.to_dict(), "usable_bytes": self.usable_bytes, "fits": self.fits},
        }


def expected_for(w: Workload, profile: GPUProfile, *, compiled: bool = False, accumulation: int = 1) -> StepEstimate:
    """The expected optimizer step of ``w`` (``accumulation`` microbatches) on ``profile`` (its own efficiency
    table, else a transferred one); ``tokens`` of the estimate are per optimizer step."""
    try:
        table = table_for(profile)
    except EfficiencyError as exc:
        table, reason = None, str(exc)
    else:
        reason = None
    memory = step_memory(w, compiled=compiled,
                         overhead_fraction=0.0 if table is None else table.memory_overhead_fraction.value)
    expected = None if table is None else expected_step(w, profile, table, compiled=compiled,
                                                        accumulation=accumulation)
    return StepEstimate(profile.name, w.tokens * accumulation, expected, memory, usable_bytes(profile.memory_gb.value),
                        reason)
