"""Timers: CUDA events on a GPU, a synchronised high-resolution clock on the CPU.

Protocol (the usual one for GPU timings, as in ``triton.testing.do_bench``): warm up first so compilation,
allocation and handle creation stay out of the numbers; then at least ``min_reps`` repetitions and at least
``min_time_s`` of measured time; on a GPU the L2 cache is flushed before every repetition by overwriting a
buffer twice its size, so each repetition reads its inputs from DRAM as a training step would. Every raw
sample is kept.

Hardware counters are read in a window of their own, after the timed repetitions: the benchmark repeated
back to back (its setup included, no L2 flush, one synchronisation at the end) for at least
``counter_window_s``, so that they see the benchmark and not the flushes between repetitions, over enough of
GPM's 0.1 s intervals (docs/measuring.md).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from tpsbench.bench.protocol import TimingConfig
from tpsbench.results.schema import CounterWindow

DEFAULT_L2_BYTES = 128 * 1024 * 1024  # flush size when the device does not report its L2 (largest known L2)


DEFAULT_TIMING = TimingConfig()
MAX_WINDOW_REPS = 20_000
# The CPU timer's clock: a module attribute so that tests can drive the repetition rules with a fake clock
CLOCK = time.perf_counter  # bounds the counter window of a microsecond-scale benchmark


@dataclass(frozen=True, slots=True)
class Timed:
    samples_s: list[float]
    warmup: int
    l2_flushed: bool
    timer: str  # "cuda_event", "perf_counter" or INTERLEAVED_TIMER
    window: object | None = None  # what the window hook's stop() returned (counter summary)
    window_info: CounterWindow | None = None  # how the counter window ran (see counter_window)


class WindowHook(Protocol):
    """Started and stopped around the counter window. ``measures`` False (a sampler with no counters, e.g.
    on the CPU) skips the repetitions of the window: start() and stop() still run, back to back."""

    measures: bool

    def start(self) -> None: ...

    def stop(self) -> object: ...


class L2Flusher:
    """Overwrites a buffer of twice the L2 size (sized from the device's properties)."""

    def __init__(self, device: torch.device) -> None:
        l2 = DEFAULT_L2_BYTES
        props = torch.cuda.get_device_properties(device)
        l2 = getattr(props, "L2_cache_size", 0) or l2
        self.bytes = 2 * l2
        self.buffer = torch.empty(self.bytes // 4, dtype=torch.int32, device=device)

    def __call__(self) -> None:
        self.buffer.fill_(0x5A5A5A5A)


def time_fn(
    fn: Callable[[], object],
    *,
    device: torch.device,
    config: TimingConfig = DEFAULT_TIMING,
    setup: Callable[[], object] | None = None,
    window: WindowHook | None = None,
) -> Timed:
    """Time ``fn`` repeatedly; ``setup`` (untimed) runs before each call, e.g. a forward before a
    backward-only measurement, or clearing gradients."""
    cuda = device.type == "cuda"
    flusher = L2Flusher(device) if cuda and config.flush_l2 else None
    for _ in range(config.warmup):
        if setup is not None:
            setup()
        fn()
    if cuda:
        torch.cuda.synchronize(device)
    samples: list[float] = []
    while len(samples) < config.max_reps:
        batch = config.min_reps if not samples else _more_reps(samples, config)
        if batch <= 0:
            break
        samples += _time_batch(fn, setup, batch, cuda, device, flusher)
    summary, info = (None, None) if window is None else counter_window(
        fn, setup, window, median_s=sorted(samples)[len(samples) // 2], config=config, device=device)
    return Timed(samples, config.warmup, flusher is not None, "cuda_event" if cuda else "perf_counter", summary,
                 info)


INTERLEAVED_TIMER = "perf_counter_interleaved"


def time_interleaved(calls: Sequence[tuple[Callable[[], object], Callable[[], object] | None]], *,
                     config: TimingConfig = DEFAULT_TIMING) -> list[Timed]:
    """CPU: time several ``(fn, setup)`` pairs in rounds, one repetition of each per round, until every one has had
    its minimum time. A shared machine that gets busier or quieter during the measurement then slows all of them
    alike, so the ratios between a point's modes (fwd, bwd, fwd_bwd) hold where sequential timing let a busy
    spell land on one mode only (fwd_bwd measured below its own bwd)."""
    for fn, setup in calls:
        for _ in range(config.warmup):
            if setup is not None:
                setup()
            fn()
    samples: list[list[float]] = [[] for _ in calls]
    while len(samples[0]) < config.max_reps:
        rounds = config.min_reps if not samples[0] else max(_more_reps(s, config) for s in samples)
        if rounds <= 0:
            break
        for _ in range(min(rounds, config.max_reps - len(samples[0]))):
            for (fn, setup), out in zip(calls, samples, strict=True):
                if setup is not None:
                    setup()
                start = CLOCK()
                fn()
                out.append(CLOCK() - start)
    return [Timed(s, config.warmup, False, INTERLEAVED_TIMER) for s in samples]


def counter_window(
    fn: Callable[[], object], setup: Callable[[], object] | None, window: WindowHook, *, median_s: float,
    config: TimingConfig, device: torch.device,
) -> tuple[object, CounterWindow]:
    """Run ``setup``+``fn`` back to back for at least ``config.counter_window_s`` (estimated from the timed
    median) inside ``window``; return the window's summary and how it ran (repetitions, elapsed time)."""
    cuda = device.type == "cuda"
    measures = getattr(window, "measures", True)
    reps = 0
    if measures:
        reps = max(1, min(MAX_WINDOW_REPS, math.ceil(config.counter_window_s / max(median_s, 1e-7))))
    if cuda:
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    window.start()
    t0 = CLOCK()
    try:
        if cuda:
            start.record()
        for _ in range(reps):
            if setup is not None:
                setup()
            fn()
        if cuda:
            end.record()
            torch.cuda.synchronize(device)
    finally:
        summary = window.stop()
    elapsed = start.elapsed_time(end) / 1e3 if cuda else CLOCK() - t0
    info = CounterWindow(kind="back_to_back" if reps else "none", reps=reps, elapsed_s=elapsed if reps else None,
                         per_rep_s=elapsed / reps if reps else None, includes_setup=setup is not None and reps > 0,
                         l2_flushed=False)
    return summary, info


def _more_reps(samples: list[float], config: TimingConfig) -> int:
    spent = sum(samples)
    if spent >= config.min_time_s:
        return 0
    per = max(spent / len(samples), 1e-9)
    return min(config.max_reps - len(samples), max(1, int((config.min_time_s - spent) / per) + 1))


def _time_batch(
    fn: Callable[[], object], setup: Callable[[], object] | None, reps: int, cuda: bool,
    device: torch.device, flusher: L2Flusher | None,
) -> list[float]:
    if not cuda:
        out = []
        for _ in range(reps):
            if setup is not None:
                setup()
            start = CLOCK()
            fn()
            out.append(CLOCK() - start)
        return out
    events = []
    for _ in range(reps):
        if setup is not None:
            setup()
        if flusher is not None:
            flusher()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        events.append((start, end))
    torch.cuda.synchronize(device)
    return [s.elapsed_time(e) / 1e3 for s, e in events]
