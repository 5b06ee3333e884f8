"""Window summaries of counter samples: pure arithmetic on recorded sequences, unit-tested exactly.

NVML's "utilization" fields are busy-time fractions (the share of the sample period in which one or more
kernels ran, or memory was read or written), not bandwidth; they are reported under names that say so.
The GPM DRAM bandwidth utilisation is a fraction of the DRAM peak; GB/s = utilisation x the profile's
bandwidth (NVML defines the metric against the device's own peak, which the profile cites).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tpsbench.results.schema import Counters, CounterWindow

# nvmlClocksEventReason* bits (nvml.h); "idle" and "applications clocks setting" are not throttling.
CLOCK_EVENT_REASONS: dict[int, str] = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
THROTTLE_REASONS = frozenset({"sw_power_cap", "hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown",
                              "hw_power_brake_slowdown"})

BASIC_FIELDS = ("gpu_busy_pct", "mem_busy_pct", "sm_clock_mhz", "mem_clock_mhz", "power_w", "energy_mj",
                "temperature_c", "clock_event_reasons")
GPM_FIELDS = ("dram_bw_util_pct", "sm_util_pct", "sm_occupancy_pct", "tensor_util_pct")
# A GPM interval shorter than this is left out of the means when longer ones exist: short intervals read 0% SM use
# while kernels ran; non-finite values are dropped and counted, never averaged (docs/measuring.md).
MIN_GPM_INTERVAL_S = 0.02


@dataclass(slots=True)
class BasicSample:
    """One NVML reading; a field is None when NVML could not give it."""

    t: float
    gpu_busy_pct: float | None = None
    mem_busy_pct: float | None = None
    sm_clock_mhz: float | None = None
    mem_clock_mhz: float | None = None
    power_w: float | None = None
    energy_mj: float | None = None  # cumulative since driver load
    temperature_c: float | None = None
    clock_event_reasons: int | None = None


@dataclass(slots=True)
class GpmSample:
    """GPM metrics over the interval between two GPM samples, from ``t_start`` to ``t``."""

    t: float
    t_start: float | None = None  # None: interval length unknown (each sample then weighs the same)
    dram_bw_util_pct: float | None = None
    sm_util_pct: float | None = None
    sm_occupancy_pct: float | None = None
    tensor_util_pct: float | None = None


@dataclass(slots=True)
class WindowSummary:
    duration_s: float
    n_basic: int
    n_gpm: int  # GPM intervals used in the means
    n_gpm_skipped: int = 0  # intervals shorter than MIN_GPM_INTERVAL_S, left out
    n_gpm_invalid: dict[str, int] = field(default_factory=dict)  # per metric: values NaN/inf/out of range, dropped
    gpm_intervals: list[dict[str, float | str | None]] = field(default_factory=list)  # raw: start/length (s), values
    values: dict[str, float | None] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)  # why a value is None
    clock_events: list[str] = field(default_factory=list)
    throttled: bool = False

    def record(self, window: CounterWindow | None) -> Counters:
        """The results file's record of this window (an undefined mean is unknown: null)."""
        def known(x: float | None) -> float | None:
            return x if x is None or math.isfinite(x) else None

        return Counters(duration_s=self.duration_s, n_basic=self.n_basic, n_gpm=self.n_gpm,
                        n_gpm_skipped=self.n_gpm_skipped, n_gpm_invalid=dict(self.n_gpm_invalid),
                        gpm_intervals=[dict(g) for g in self.gpm_intervals],
                        values={k: known(v) for k, v in self.values.items()}, reasons=dict(self.reasons),
                        clock_events=list(self.clock_events), throttled=self.throttled, window=window)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def decode_reasons(mask: int) -> list[str]:
    names = [name for bit, name in CLOCK_EVENT_REASONS.items() if mask & bit]
    unknown = mask & ~sum(CLOCK_EVENT_REASONS)
    if unknown:
        names.append(f"unknown_0x{unknown:x}")
    return names


def _json_number(value: float | None) -> float | str | None:
    """A raw value kept as evidence: NaN and infinities as strings (JSON has no such numbers)."""
    return value if value is None or math.isfinite(value) else str(value)


def _usable_intervals(gpm: Sequence[GpmSample]) -> list[tuple[GpmSample, float]]:
    """GPM samples with their weight (interval length; 1 when unknown). Intervals shorter than
    MIN_GPM_INTERVAL_S are dropped unless nothing longer exists."""
    weighted = [(s, (s.t - s.t_start) if s.t_start is not None else None) for s in gpm]
    long_enough = [(s, w) for s, w in weighted if w is None or w >= MIN_GPM_INTERVAL_S]
    chosen = long_enough or weighted
    return [(s, 1.0 if w is None else max(w, 0.0)) for s, w in chosen]


def summarize_window(
    basic: Sequence[BasicSample], gpm: Sequence[GpmSample], *, start_s: float, stop_s: float,
    bandwidth_gbs: float | None, unavailable: dict[str, str] | None = None,
) -> WindowSummary:
    """Means (and maxima where they matter) over one measured window.

    ``unavailable`` maps a field to the reason it could not be read at all (library missing, no device,
    metric unsupported); such fields are None with that reason. A field that was readable but has no sample
    in the window is None with reason "no sample in window"."""
    out = WindowSummary(duration_s=stop_s - start_s, n_basic=len(basic), n_gpm=0)
    missing = dict(unavailable or {})

    def put(name: str, value: float | None, source: str) -> None:
        out.values[name] = value
        if value is None:
            out.reasons[name] = missing.get(source, "no sample in window")

    _basic_means(basic, put)
    _gpm_means(out, gpm, start_s, put)
    dram = out.values.get("dram_bw_util_pct_mean")
    if dram is not None and bandwidth_gbs is not None:
        out.values["dram_gbs"] = dram / 100.0 * bandwidth_gbs
    else:
        out.values["dram_gbs"] = None
        out.reasons["dram_gbs"] = ("no GPU profile bandwidth" if dram is not None
                                   else out.reasons.get("dram_bw_util_pct_mean", "no sample in window"))
    mask = 0
    for s in basic:
        if s.clock_event_reasons is not None:
            mask |= s.clock_event_reasons
    out.clock_events = decode_reasons(mask)
    out.throttled = bool(THROTTLE_REASONS & set(out.clock_events))
    if not any(s.clock_event_reasons is not None for s in basic):
        out.reasons["clock_event_reasons"] = missing.get("clock_event_reasons", "no sample in window")
    return out


def _basic_means(basic: Sequence[BasicSample], put: Callable[[str, float | None, str], None]) -> None:
    """NVML's readings: means, the lowest SM clock, the hottest temperature, energy and power from energy."""
    for name in ("gpu_busy_pct", "mem_busy_pct", "sm_clock_mhz", "mem_clock_mhz", "power_w"):
        vals = [getattr(s, name) for s in basic if getattr(s, name) is not None]
        put(f"{name}_mean", _mean(vals), name)
    sm = [s.sm_clock_mhz for s in basic if s.sm_clock_mhz is not None]
    put("sm_clock_mhz_min", min(sm) if sm else None, "sm_clock_mhz")
    temps = [s.temperature_c for s in basic if s.temperature_c is not None]
    put("temperature_c_max", max(temps) if temps else None, "temperature_c")
    energy = [(s.t, s.energy_mj) for s in basic if s.energy_mj is not None]
    if len(energy) >= 2 and energy[-1][0] > energy[0][0]:
        joules = (energy[-1][1] - energy[0][1]) / 1e3
        put("energy_j", joules, "energy_mj")
        put("power_w_from_energy", joules / (energy[-1][0] - energy[0][0]), "energy_mj")
    else:
        put("energy_j", None, "energy_mj")
        put("power_w_from_energy", None, "energy_mj")


def _gpm_means(out: WindowSummary, gpm: Sequence[GpmSample], start_s: float,
               put: Callable[[str, float | None, str], None]) -> None:
    """GPM's metrics: the raw intervals kept, means weighted by interval length over the valid values."""
    out.gpm_intervals = [{"start_s": None if g.t_start is None else g.t_start - start_s,
                          "length_s": None if g.t_start is None else g.t - g.t_start,
                          **{name: _json_number(getattr(g, name)) for name in GPM_FIELDS}} for g in gpm]
    intervals = _usable_intervals(gpm)
    out.n_gpm, out.n_gpm_skipped = len(intervals), len(gpm) - len(intervals)
    for name in GPM_FIELDS:
        pairs = [(getattr(s, name), w) for s, w in intervals if getattr(s, name) is not None]
        valid = [(v, w) for v, w in pairs if math.isfinite(v) and 0.0 <= v <= 100.0]
        if len(valid) < len(pairs):
            out.n_gpm_invalid[name] = len(pairs) - len(valid)
        weight = sum(w for _, w in valid)
        mean = sum(v * w for v, w in valid) / weight if valid and weight > 0 else None
        put(f"{name}_mean", mean, name)
        if mean is None and pairs:
            out.reasons[f"{name}_mean"] = f"all {len(pairs)} GPM values NaN, infinite or outside 0-100%"
