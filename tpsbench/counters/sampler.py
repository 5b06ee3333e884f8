"""NVML/GPM sampling in a background thread, started and stopped around a measured window.

:class:`NvmlSource` reads one device through nvidia-ml-py. Every field that cannot be read (library
missing, no device, a metric the GPU does not support) is recorded as unavailable with the reason; the
benchmark never fails because of counters. GPM (Hopper and newer, ``nvmlGpmQueryDeviceSupport``) metrics
are computed by NVML from pairs of GPM samples (``nvmlGpmMetricsGet`` over sample1, sample2), one pair per
sampling interval.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, Protocol

from tpsbench.counters.summary import BasicSample, GpmSample, WindowSummary, summarize_window

DEFAULT_INTERVAL_S = 0.1  # NVML's utilisation counters update at about this period
GPM_METRIC_IDS = {  # nvml.h NVML_GPM_METRIC_*
    "dram_bw_util_pct": 10,
    "sm_util_pct": 2,
    "sm_occupancy_pct": 3,
    "tensor_util_pct": 5,
}


class CounterSource(Protocol):
    unavailable: dict[str, str]

    def read_basic(self) -> BasicSample: ...

    def gpm_sample(self) -> Any: ...

    def gpm_metrics(self, first: Any, second: Any, t: float, t_start: float | None = None) -> GpmSample: ...

    def close(self) -> None: ...


class NullSource:
    """No counters at all; every field unavailable for one reason."""

    def __init__(self, reason: str) -> None:
        from tpsbench.counters.summary import BASIC_FIELDS, GPM_FIELDS

        self.unavailable = dict.fromkeys((*BASIC_FIELDS, *GPM_FIELDS), reason)
        self.reason = reason

    def read_basic(self) -> BasicSample:
        return BasicSample(t=time.perf_counter())

    def gpm_sample(self) -> None:
        return None

    def gpm_metrics(self, first: Any, second: Any, t: float, t_start: float | None = None) -> GpmSample:
        return GpmSample(t=t, t_start=t_start)

    def close(self) -> None:
        pass


class NvmlSource:
    """One GPU through NVML. Construct with :func:`open_source`, which falls back to :class:`NullSource`."""

    def __init__(self, nvml: Any, index: int) -> None:
        self.nvml = nvml
        self.handle = nvml.nvmlDeviceGetHandleByIndex(index)
        self.unavailable: dict[str, str] = {}
        self._errors: dict[str, str] = {}
        self._gpm = False
        try:
            support = nvml.nvmlGpmQueryDeviceSupport(self.handle)
            self._gpm = bool(support.isSupportedDevice)
            if not self._gpm:
                reason = "GPM not supported on this GPU (nvmlGpmQueryDeviceSupport)"
        except (nvml.NVMLError, AttributeError) as exc:
            reason = f"GPM unavailable: {exc}"
        if not self._gpm:
            self.unavailable.update(dict.fromkeys(GPM_METRIC_IDS, reason))
        self._probe()

    def _probe(self) -> None:
        """Find the basic fields this driver refuses, once, so each sample does not retry them."""
        sample = self.read_basic()
        for name in ("gpu_busy_pct", "mem_busy_pct", "sm_clock_mhz", "mem_clock_mhz", "power_w", "energy_mj",
                     "temperature_c", "clock_event_reasons"):
            if getattr(sample, name) is None and name not in self.unavailable:
                self.unavailable[name] = self._errors.get(name, "not reported by NVML")

    def _try(self, name: str, function: str, *args: Any) -> Any:
        if name in self.unavailable:
            return None
        fn = getattr(self.nvml, function, None)
        if fn is None:
            self._errors[name] = f"this nvidia-ml-py has no {function}"
            return None
        try:
            return fn(*args)
        except self.nvml.NVMLError as exc:
            self._errors[name] = f"NVML: {exc}"
            return None
        except (AttributeError, TypeError) as exc:  # an nvidia-ml-py too old for this call
            self._errors[name] = f"nvidia-ml-py: {exc}"
            return None

    def read_basic(self) -> BasicSample:
        nvml, h = self.nvml, self.handle
        t = time.perf_counter()
        util = self._try("gpu_busy_pct", "nvmlDeviceGetUtilizationRates", h)
        power = self._try("power_w", "nvmlDeviceGetPowerUsage", h)
        return BasicSample(
            t=t,
            gpu_busy_pct=None if util is None else float(util.gpu),
            mem_busy_pct=None if util is None else float(util.memory),
            sm_clock_mhz=self._try("sm_clock_mhz", "nvmlDeviceGetClockInfo", h, nvml.NVML_CLOCK_SM),
            mem_clock_mhz=self._try("mem_clock_mhz", "nvmlDeviceGetClockInfo", h, nvml.NVML_CLOCK_MEM),
            power_w=None if power is None else power / 1000.0,
            energy_mj=self._try("energy_mj", "nvmlDeviceGetTotalEnergyConsumption", h),
            temperature_c=self._try("temperature_c", "nvmlDeviceGetTemperature", h, nvml.NVML_TEMPERATURE_GPU),
            clock_event_reasons=self._try("clock_event_reasons", "nvmlDeviceGetCurrentClocksEventReasons", h),
        )

    def gpm_sample(self) -> Any:
        if not self._gpm:
            return None
        sample = self.nvml.nvmlGpmSampleAlloc()
        self.nvml.nvmlGpmSampleGet(self.handle, sample)
        return sample

    def gpm_metrics(self, first: Any, second: Any, t: float, t_start: float | None = None) -> GpmSample:
        out = GpmSample(t=t, t_start=t_start)
        if first is None or second is None:
            return out
        nvml = self.nvml
        req = nvml.c_nvmlGpmMetricsGet_t()
        req.version = nvml.NVML_GPM_METRICS_GET_VERSION
        req.numMetrics = len(GPM_METRIC_IDS)
        req.sample1, req.sample2 = first, second
        for i, metric_id in enumerate(GPM_METRIC_IDS.values()):
            req.metrics[i].metricId = metric_id
        try:
            nvml.nvmlGpmMetricsGet(req)
        except nvml.NVMLError as exc:
            for name in GPM_METRIC_IDS:
                self.unavailable.setdefault(name, f"nvmlGpmMetricsGet: {exc}")
            return out
        for i, name in enumerate(GPM_METRIC_IDS):
            metric = req.metrics[i]
            if metric.nvmlReturn == nvml.NVML_SUCCESS:
                setattr(out, name, float(metric.value))
            else:
                self.unavailable.setdefault(name, f"GPM metric {GPM_METRIC_IDS[name]} returned {metric.nvmlReturn}")
        return out

    def free(self, sample: Any) -> None:
        if sample is not None:
            with contextlib.suppress(self.nvml.NVMLError):
                self.nvml.nvmlGpmSampleFree(sample)

    def close(self) -> None:
        with contextlib.suppress(self.nvml.NVMLError):
            self.nvml.nvmlShutdown()


def open_source(index: int = 0) -> CounterSource:
    """NVML for GPU ``index``, or a :class:`NullSource` that says why not."""
    try:
        import pynvml  # nvidia-ml-py
    except ImportError:
        return NullSource("nvidia-ml-py not installed (pip install nvidia-ml-py)")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return NullSource(f"NVML unavailable: {exc}")
    try:
        count = pynvml.nvmlDeviceGetCount()
        if index >= count:
            pynvml.nvmlShutdown()
            return NullSource(f"no NVML device {index} (NVML sees {count})")
        return NvmlSource(pynvml, index)
    except pynvml.NVMLError as exc:
        return NullSource(f"NVML device {index}: {exc}")


class Sampler:
    """Samples ``source`` every ``interval_s`` between :meth:`start` and :meth:`stop`.

    Used as the timer's window hook: started after the warm-up, stopped after the last timed repetition
    has been synchronised, so the window covers the measured repetitions only."""

    def __init__(self, source: CounterSource, *, interval_s: float = DEFAULT_INTERVAL_S,
                 bandwidth_gbs: float | None = None) -> None:
        if interval_s <= 0:
            raise ValueError(f"sampling interval must be positive, got {interval_s}")
        self.source, self.interval_s, self.bandwidth_gbs = source, interval_s, bandwidth_gbs
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.basic: list[BasicSample] = []
        self.gpm: list[GpmSample] = []
        self.last: WindowSummary | None = None
        self._start_s = 0.0
        # no counters to read (CPU run, NVML missing): the timer then skips the window's repetitions
        self.measures = not isinstance(source, NullSource)

    def start(self) -> None:
        self.basic, self.gpm = [], []
        self._stop.clear()
        self._start_s = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="tpsbench-counters", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        previous, previous_t = self.source.gpm_sample(), time.perf_counter()
        self.basic.append(self.source.read_basic())
        stopping = False
        while not stopping:
            # the last pass runs after stop(): a window shorter than one interval still gets two readings
            stopping = self._stop.wait(self.interval_s)
            self.basic.append(self.source.read_basic())
            current, now = self.source.gpm_sample(), time.perf_counter()
            self.gpm.append(self.source.gpm_metrics(previous, current, now, previous_t))
            self._free(previous)
            previous, previous_t = current, now
        self._free(previous)

    def _free(self, sample: Any) -> None:
        free = getattr(self.source, "free", None)
        if free is not None and sample is not None:
            free(sample)

    def stop(self) -> WindowSummary:
        stop_s = time.perf_counter()
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.last = summarize_window(self.basic, self.gpm, start_s=self._start_s, stop_s=stop_s,
                                     bandwidth_gbs=self.bandwidth_gbs, unavailable=self.source.unavailable)
        return self.last
