"""CPU timer: repetition and minimum-time rules, setup outside the timing."""

import time

import pytest
import torch

from tpsbench.bench.timing import TimingConfig, time_fn

CPU = torch.device("cpu")


def test_min_reps_and_warmup():
    calls = []
    t = time_fn(lambda: calls.append(1), device=CPU, config=TimingConfig(warmup=2, min_reps=7, min_time_s=0.0))
    assert len(t.samples_s) == 7 and len(calls) == 9
    assert t.timer == "perf_counter" and not t.l2_flushed


def test_min_time_extends_repetitions():
    t = time_fn(lambda: time.sleep(0.002), device=CPU,
                config=TimingConfig(warmup=0, min_reps=2, min_time_s=0.03, max_reps=100))
    assert sum(t.samples_s) >= 0.03
    assert len(t.samples_s) > 2
    assert all(s >= 0.002 for s in t.samples_s)


def test_max_reps_caps():
    t = time_fn(lambda: None, device=CPU, config=TimingConfig(warmup=0, min_reps=3, min_time_s=10.0, max_reps=5))
    assert len(t.samples_s) == 5


def test_setup_is_not_timed():
    t = time_fn(lambda: None, setup=lambda: time.sleep(0.01), device=CPU,
                config=TimingConfig(warmup=0, min_reps=3, min_time_s=0.0))
    assert max(t.samples_s) < 0.005


def test_bad_config():
    with pytest.raises(ValueError):
        TimingConfig(min_reps=0)


class _RecordingWindow:
    def __init__(self, measures: bool) -> None:
        self.measures, self.events = measures, []

    def start(self) -> None:
        self.events.append("start")

    def stop(self) -> str:
        self.events.append("stop")
        return "summary"


def test_counter_window_runs_back_to_back_after_the_timed_reps():
    calls: list[str] = []
    window = _RecordingWindow(measures=True)
    cfg = TimingConfig(warmup=0, min_reps=3, min_time_s=0.0, max_reps=3, counter_window_s=0.02)

    def fn() -> None:
        calls.append("start" if window.events == ["start"] else "timed")
        time.sleep(0.002)

    timed = time_fn(fn, device=torch.device("cpu"), config=cfg, setup=lambda: None, window=window)
    assert len(timed.samples_s) == 3 and calls[:3] == ["timed"] * 3  # the timed reps ran outside the window
    info = timed.window_info
    assert timed.window == "summary" and window.events == ["start", "stop"]
    assert info["kind"] == "back_to_back" and info["includes_setup"] and not info["l2_flushed"]
    # about 0.02 s / 2 ms = 10 repetitions (the timed median sets the count), all inside the window
    assert 5 <= info["reps"] <= 12 and calls.count("start") == info["reps"]
    assert info["per_rep_s"] == pytest.approx(info["elapsed_s"] / info["reps"])


def test_counter_window_without_counters_costs_no_repetitions():
    window = _RecordingWindow(measures=False)
    timed = time_fn(lambda: None, device=torch.device("cpu"),
                    config=TimingConfig(warmup=0, min_reps=2, min_time_s=0.0, max_reps=2), window=window)
    assert window.events == ["start", "stop"] and timed.window_info["reps"] == 0
    assert timed.window_info["per_rep_s"] is None and len(timed.samples_s) == 2
