"""The timing protocol's settings (tpsbench/bench/timing.py runs it): warm-up, the least repetitions and the least
measured time, a cap, the L2 flush, and the counter window's length. Plain data, no torch: the command line and
the results file's config block read it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TimingConfig:
    warmup: int = 3
    min_reps: int = 10
    min_time_s: float = 0.5
    max_reps: int = 200
    flush_l2: bool = True
    counter_window_s: float = 1.0  # the counter window's minimum length (about 10 GPM intervals of 0.1 s)

    def __post_init__(self) -> None:
        if (self.warmup < 0 or self.min_reps < 1 or self.max_reps < self.min_reps or self.min_time_s < 0
                or self.counter_window_s < 0):
            raise ValueError(f"invalid timing config {self}")
