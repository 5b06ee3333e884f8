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
