"""Counters: window summaries on recorded sample sequences, and every way NVML can be missing."""

import builtins
import sys
import types

import pytest
import torch

from tpsbench.bench.timing import TimingConfig, time_fn
from tpsbench.counters import sampler as sampler_mod
from tpsbench.counters.sampler import NullSource, NvmlSource, Sampler, open_source
from tpsbench.counters.summary import MIN_GPM_INTERVAL_S, BasicSample, GpmSample, decode_reasons, summarize_window


def test_window_summary_exact():
    basic = [
        BasicSample(t=0.0, gpu_busy_pct=100, mem_busy_pct=40, sm_clock_mhz=1980, mem_clock_mhz=2619, power_w=600,
                    energy_mj=1_000_000, temperature_c=50, clock_event_reasons=0),
        BasicSample(t=0.5, gpu_busy_pct=90, mem_busy_pct=60, sm_clock_mhz=1755, mem_clock_mhz=2619, power_w=700,
                    energy_mj=1_325_000, temperature_c=55, clock_event_reasons=0x4),
    ]
    gpm = [GpmSample(t=0.25, dram_bw_util_pct=50.0, sm_util_pct=80.0, sm_occupancy_pct=30.0, tensor_util_pct=10.0),
           GpmSample(t=0.5, dram_bw_util_pct=70.0, sm_util_pct=90.0, sm_occupancy_pct=40.0, tensor_util_pct=20.0)]
    s = summarize_window(basic, gpm, start_s=0.0, stop_s=0.5, bandwidth_gbs=3350.0)
    v = s.values
    assert v["gpu_busy_pct_mean"] == 95.0 and v["mem_busy_pct_mean"] == 50.0
    assert v["sm_clock_mhz_mean"] == 1867.5 and v["sm_clock_mhz_min"] == 1755
    assert v["power_w_mean"] == 650.0 and v["temperature_c_max"] == 55
    assert v["energy_j"] == 325.0 and v["power_w_from_energy"] == 650.0  # 325 J over 0.5 s
    assert v["dram_bw_util_pct_mean"] == 60.0
    assert v["dram_gbs"] == pytest.approx(0.60 * 3350.0)  # utilisation x the profile's bandwidth
    assert v["tensor_util_pct_mean"] == 15.0
    assert s.clock_events == ["sw_power_cap"] and s.throttled
    assert s.n_basic == 2 and s.n_gpm == 2 and s.reasons == {}


def test_gpm_means_weigh_intervals_by_length():
    # 0.3 s at 90% and 0.1 s at 10%: the window's DRAM use is (0.3*90 + 0.1*10) / 0.4 = 70%, not 50%
    gpm = [GpmSample(t=0.3, t_start=0.0, dram_bw_util_pct=90.0), GpmSample(t=0.4, t_start=0.3, dram_bw_util_pct=10.0)]
    s = summarize_window([], gpm, start_s=0.0, stop_s=0.4, bandwidth_gbs=1000.0)
    assert s.values["dram_bw_util_pct_mean"] == pytest.approx(70.0)
    assert s.values["dram_gbs"] == pytest.approx(700.0)
    assert [i["length_s"] for i in s.gpm_intervals] == pytest.approx([0.3, 0.1])


def test_gpm_nan_values_are_dropped_and_counted():
    nan = float("nan")
    gpm = [GpmSample(t=0.1, t_start=0.0, dram_bw_util_pct=nan, sm_util_pct=50.0),
           GpmSample(t=0.2, t_start=0.1, dram_bw_util_pct=40.0, sm_util_pct=70.0),
           GpmSample(t=0.3, t_start=0.2, dram_bw_util_pct=float("inf"), sm_util_pct=130.0)]
    s = summarize_window([], gpm, start_s=0.0, stop_s=0.3, bandwidth_gbs=3350.0)
    assert s.values["dram_bw_util_pct_mean"] == pytest.approx(40.0)
    assert s.values["sm_util_pct_mean"] == pytest.approx(60.0)  # 130% is not a utilisation: dropped
    assert s.n_gpm_invalid == {"dram_bw_util_pct": 2, "sm_util_pct": 1}
    assert s.gpm_intervals[0]["dram_bw_util_pct"] == "nan"  # raw evidence kept, JSON-safe
    only_nan = summarize_window([], gpm[:1], start_s=0.0, stop_s=0.1, bandwidth_gbs=3350.0)
    assert only_nan.values["dram_bw_util_pct_mean"] is None and only_nan.values["dram_gbs"] is None
    assert "NaN" in only_nan.reasons["dram_bw_util_pct_mean"] and "NaN" in only_nan.reasons["dram_gbs"]


def test_short_gpm_interval_left_out_unless_alone():
    gpm = [GpmSample(t=0.1, t_start=0.0, sm_util_pct=80.0), GpmSample(t=0.103, t_start=0.1, sm_util_pct=0.0)]
    s = summarize_window([], gpm, start_s=0.0, stop_s=0.103, bandwidth_gbs=None)
    assert s.values["sm_util_pct_mean"] == pytest.approx(80.0) and s.n_gpm == 1 and s.n_gpm_skipped == 1
    alone = summarize_window([], gpm[1:], start_s=0.1, stop_s=0.103, bandwidth_gbs=None)
    assert alone.values["sm_util_pct_mean"] == 0.0 and alone.n_gpm == 1


def test_not_throttled_when_only_idle():
    s = summarize_window([BasicSample(t=0, clock_event_reasons=0x1)], [], start_s=0, stop_s=1, bandwidth_gbs=None)
    assert s.clock_events == ["gpu_idle"] and not s.throttled


def test_decode_unknown_bits():
    assert decode_reasons(0x4 | 0x10000) == ["sw_power_cap", "unknown_0x10000"]


def test_unavailable_fields_are_null_with_reason():
    s = summarize_window([BasicSample(t=0.0), BasicSample(t=1.0)], [GpmSample(t=1.0)], start_s=0, stop_s=1,
                         bandwidth_gbs=3350.0, unavailable={"dram_bw_util_pct": "GPM not supported on this GPU"})
    assert s.values["dram_bw_util_pct_mean"] is None and s.values["dram_gbs"] is None
    assert s.reasons["dram_bw_util_pct_mean"] == "GPM not supported on this GPU"
    assert s.reasons["dram_gbs"] == "GPM not supported on this GPU"
    assert s.values["energy_j"] is None


def test_dram_gbs_needs_a_profile():
    s = summarize_window([], [GpmSample(t=1, dram_bw_util_pct=50.0)], start_s=0, stop_s=1, bandwidth_gbs=None)
    assert s.values["dram_bw_util_pct_mean"] == 50.0 and s.values["dram_gbs"] is None
    assert s.reasons["dram_gbs"] == "no GPU profile bandwidth"


def test_library_missing(monkeypatch):
    real_import = builtins.__import__

    def no_pynvml(name, *args, **kwargs):
        if name == "pynvml":
            raise ImportError("no pynvml")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "pynvml", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_pynvml)
    src = open_source()
    assert isinstance(src, NullSource) and "nvidia-ml-py not installed" in src.reason


class _FakeNVMLError(Exception):
    pass


def _fake_nvml(*, init_error=None, count=1, gpm=True, power_error=False):
    m = types.SimpleNamespace()
    m.NVMLError = _FakeNVMLError
    m.NVML_SUCCESS = 0
    m.NVML_CLOCK_SM, m.NVML_CLOCK_MEM, m.NVML_TEMPERATURE_GPU = 1, 2, 0
    m.NVML_GPM_METRICS_GET_VERSION = 1
    state = {"energy": 0}

    def init():
        if init_error:
            raise _FakeNVMLError(init_error)

    def power(h):
        if power_error:
            raise _FakeNVMLError("Not Supported")
        return 650_000

    def energy(h):
        state["energy"] += 100_000
        return state["energy"]

    def metrics_get(req):
        for i in range(req.numMetrics):
            req.metrics[i].nvmlReturn = 0
            req.metrics[i].value = {10: 55.0, 2: 80.0, 3: 30.0, 5: 12.0}[req.metrics[i].metricId]
        return req

    class _Metric:
        metricId = 0
        nvmlReturn = 0
        value = 0.0

    class _Req:
        def __init__(self):
            self.metrics = [_Metric() for _ in range(8)]

    m.nvmlInit = init
    m.nvmlShutdown = lambda: None
    m.nvmlDeviceGetCount = lambda: count
    m.nvmlDeviceGetHandleByIndex = lambda i: "h"
    m.nvmlGpmQueryDeviceSupport = lambda h: types.SimpleNamespace(isSupportedDevice=int(gpm))
    m.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=99, memory=45)
    m.nvmlDeviceGetPowerUsage = power
    m.nvmlDeviceGetClockInfo = lambda h, c: 1980 if c == 1 else 2619
    m.nvmlDeviceGetTotalEnergyConsumption = energy
    m.nvmlDeviceGetTemperature = lambda h, s: 60
    m.nvmlDeviceGetCurrentClocksEventReasons = lambda h: 0
    m.nvmlGpmSampleAlloc = lambda: object()
    m.nvmlGpmSampleGet = lambda h, s: s
    m.nvmlGpmSampleFree = lambda s: None
    m.c_nvmlGpmMetricsGet_t = _Req
    m.nvmlGpmMetricsGet = metrics_get
    return m


def test_driver_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml(init_error="Driver Not Loaded"))
    src = open_source()
    assert isinstance(src, NullSource) and "Driver Not Loaded" in src.reason


def test_device_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml(count=0))
    src = open_source(0)
    assert isinstance(src, NullSource) and "no NVML device 0" in src.reason


def test_gpm_unsupported_and_metric_refused(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml(gpm=False, power_error=True))
    src = open_source()
    assert isinstance(src, NvmlSource)
    assert "GPM not supported" in src.unavailable["dram_bw_util_pct"]
    assert "Not Supported" in src.unavailable["power_w"]
    sampler = Sampler(src, interval_s=0.01, bandwidth_gbs=3350.0)
    sampler.start()
    torch.ones(8).sum()
    s = sampler.stop()
    assert s.values["gpu_busy_pct_mean"] == 99.0 and s.values["sm_clock_mhz_mean"] == 1980
    assert s.values["power_w_mean"] is None and "Not Supported" in s.reasons["power_w_mean"]
    assert s.values["dram_gbs"] is None and "GPM not supported" in s.reasons["dram_gbs"]


def test_sampler_with_gpm(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml())
    src = open_source()
    # intervals at least MIN_GPM_INTERVAL_S long (shorter ones are dropped when a longer one exists: with 10 ms
    # intervals a loaded CI machine stretched one to 20 ms and left one usable interval), and waited for by
    # count, not by a fixed sleep
    sampler = Sampler(src, interval_s=MIN_GPM_INTERVAL_S * 1.5, bandwidth_gbs=4800.0)
    sampler.start()
    import time

    while len(sampler.gpm) < 3:  # waited for by count: the fake source answers at once, the thread gets there
        time.sleep(0.01)
    s = sampler.stop()
    assert s.n_basic >= 3 and s.n_gpm >= 2
    assert s.values["dram_bw_util_pct_mean"] == 55.0 and s.values["dram_gbs"] == pytest.approx(0.55 * 4800.0)
    assert s.values["energy_j"] > 0


def test_timer_window_follows_the_timed_reps():
    events = []

    class Hook:
        def start(self):
            events.append(("start", len(calls)))

        def stop(self):
            events.append(("stop", len(calls)))
            return "summary"

    calls = []
    t = time_fn(lambda: calls.append(1), device=torch.device("cpu"),
                config=TimingConfig(warmup=3, min_reps=4, min_time_s=0.0, counter_window_s=0.0), window=Hook())
    # after the 3 warm-ups and the 4 timed calls; the window holds its own repetitions (one: 0 s asked)
    assert events == [("start", 7), ("stop", 8)]
    assert t.window == "summary" and t.window_info is not None and t.window_info.reps == 1


def test_bad_interval():
    with pytest.raises(ValueError):
        Sampler(NullSource("x"), interval_s=0)


def test_the_default_interval_reaches_the_sampler_and_the_results_file(tmp_path):
    from tpsbench.bench.config import RunConfig
    from tpsbench.bench.runner import make_sampler

    cfg = RunConfig.from_options(model="dense_tiny", device="cpu", cuda_available=False)
    assert cfg.counter_interval_s == sampler_mod.DEFAULT_INTERVAL_S == 0.1  # NVML's update period, about
    sampler = make_sampler(cfg)
    assert sampler is not None and sampler.interval_s == 0.1 and not sampler.measures  # CPU: nothing to read
    assert cfg.describe().counter_interval_s == 0.1


def test_old_nvml_without_a_call(monkeypatch):
    fake = _fake_nvml()
    del fake.nvmlDeviceGetCurrentClocksEventReasons
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    src = open_source()
    assert "has no nvmlDeviceGetCurrentClocksEventReasons" in src.unavailable["clock_event_reasons"]
    assert src.read_basic().gpu_busy_pct == 99.0
