"""CPU timer: repetition and minimum-time rules, setup outside the timing. Timed work "takes" time on a fake
clock (tpsbench.bench.timing.CLOCK), so the rules are checked exactly, however busy the machine is."""

import pytest
import torch

from tpsbench.bench import timing
from tpsbench.bench.timing import TimingConfig, time_fn

CPU = torch.device("cpu")


class FakeClock:
    """A clock that moves only when the code under test sleeps on it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(timing, "CLOCK", fake)
    return fake


def test_min_reps_and_warmup():
    calls = []
    t = time_fn(lambda: calls.append(1), device=CPU, config=TimingConfig(warmup=2, min_reps=7, min_time_s=0.0))
    assert len(t.samples_s) == 7 and len(calls) == 9
    assert t.timer == "perf_counter" and not t.l2_flushed


def test_min_time_extends_repetitions(clock):
    t = time_fn(lambda: clock.sleep(0.002), device=CPU,
                config=TimingConfig(warmup=0, min_reps=2, min_time_s=0.03, max_reps=100))
    # 2 reps, then as many more as reach 0.03 s (one more than the estimate, against rounding): no more
    assert 0.03 <= sum(t.samples_s) <= 0.03 + 2 * 0.002 and len(t.samples_s) > 2
    assert t.samples_s == pytest.approx([0.002] * len(t.samples_s))


def test_max_reps_caps():
    t = time_fn(lambda: None, device=CPU, config=TimingConfig(warmup=0, min_reps=3, min_time_s=10.0, max_reps=5))
    assert len(t.samples_s) == 5


def test_setup_is_not_timed(clock):
    t = time_fn(lambda: clock.sleep(0.001), setup=lambda: clock.sleep(0.01), device=CPU,
                config=TimingConfig(warmup=0, min_reps=3, min_time_s=0.0))
    assert t.samples_s == pytest.approx([0.001] * 3)


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


def test_counter_window_runs_back_to_back_after_the_timed_reps(clock):
    calls: list[str] = []
    window = _RecordingWindow(measures=True)
    cfg = TimingConfig(warmup=0, min_reps=3, min_time_s=0.0, max_reps=3, counter_window_s=0.02)

    def fn() -> None:
        calls.append("start" if window.events == ["start"] else "timed")
        clock.sleep(0.002)

    timed = time_fn(fn, device=torch.device("cpu"), config=cfg, setup=lambda: None, window=window)
    assert len(timed.samples_s) == 3 and calls[:3] == ["timed"] * 3  # the timed reps ran outside the window
    info = timed.window_info
    assert timed.window == "summary" and window.events == ["start", "stop"] and info is not None
    assert info.kind == "back_to_back" and info.includes_setup and not info.l2_flushed
    # 0.02 s / 2 ms = 10 repetitions (the timed median sets the count), all inside the window
    assert info.reps == 10 and calls.count("start") == info.reps
    assert info.elapsed_s is not None and info.per_rep_s == pytest.approx(info.elapsed_s / info.reps)


def test_counter_window_without_counters_costs_no_repetitions():
    window = _RecordingWindow(measures=False)
    timed = time_fn(lambda: None, device=torch.device("cpu"),
                    config=TimingConfig(warmup=0, min_reps=2, min_time_s=0.0, max_reps=2), window=window)
    assert window.events == ["start", "stop"] and timed.window_info is not None and timed.window_info.reps == 0
    assert timed.window_info.per_rep_s is None and len(timed.samples_s) == 2


def test_interleaved_modes_see_the_same_load_where_sequential_timing_does_not(clock):
    """A machine that turns busy halfway through (every op then takes 5x): timed one after the other, the last
    mode's median is all busy time and fwd_bwd comes out below bwd; timed in rounds, each mode gets the same
    share of busy rounds and fwd + bwd = fwd_bwd holds."""
    base = {"fwd": 0.001, "bwd": 0.002, "fwd_bwd": 0.003}
    config = TimingConfig(warmup=0, min_reps=20, min_time_s=0.0, max_reps=20)

    def op(mode: str):
        return lambda: clock.sleep(base[mode] * (5.0 if clock.now > 0.06 else 1.0))

    def median(t: timing.Timed) -> float:
        return sorted(t.samples_s)[len(t.samples_s) // 2]

    sequential = {m: median(time_fn(op(m), device=CPU, config=config)) for m in ("bwd", "fwd", "fwd_bwd")}
    assert sequential["fwd_bwd"] > 0.9 * sequential["bwd"]  # bwd ran first, in the quiet half
    clock.now = 0.0
    sequential = {m: median(time_fn(op(m), device=CPU, config=config)) for m in ("fwd_bwd", "fwd", "bwd")}
    assert sequential["fwd_bwd"] < 0.9 * sequential["bwd"]  # fwd_bwd first: quiet; bwd last: busy

    clock.now = 0.0
    timed = timing.time_interleaved([(op(m), None) for m in ("fwd_bwd", "fwd", "bwd")], config=config)
    fwd_bwd, fwd, bwd = (median(t) for t in timed)
    assert fwd_bwd == pytest.approx(fwd + bwd) and all(t.timer == timing.INTERLEAVED_TIMER for t in timed)
    assert [len(t.samples_s) for t in timed] == [20, 20, 20]


def test_interleaving_runs_until_every_mode_has_its_minimum_time(clock):
    config = TimingConfig(warmup=1, min_reps=2, min_time_s=0.02, max_reps=1000)
    timed = timing.time_interleaved([(lambda: clock.sleep(0.001), None), (lambda: clock.sleep(0.004), None)],
                                    config=config)
    assert sum(timed[0].samples_s) >= 0.02 and len(timed[0].samples_s) == len(timed[1].samples_s)
