"""GPU busy and idle time of a benchmarked call, from the PyTorch profiler's kernel timeline.

The overhead explanation of the dense/MoE gap says the GPU waits for the host (per-expert Python loops,
launch latency, GPU->CPU syncs). That is measurable: run the call a few times under the profiler, take
the union of the intervals in which any kernel, memcpy or memset ran on the GPU (overlapping streams count
once), and compare it with the call's measured time from the timer (taken without the profiler, whose
host-side overhead would inflate the wall time):

    idle share = 1 - busy time per call / measured median time per call

Busy time is the mean over the profiled calls of each call's union. The timer's events enclose one call,
so a gap inside it is time the GPU waited for the host.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from tpsbench.results.schema import GpuTime

PROFILED_CALLS = 3  # after the timed repetitions; enough to average over without a long trace


def union_length(intervals: Iterable[tuple[float, float]]) -> float:
    """Total length covered by the intervals (each (start, end), any order, overlaps counted once)."""
    total = 0.0
    cur_start: float | None = None
    cur_end = 0.0
    for start, end in sorted(intervals):
        if end < start:
            raise ValueError(f"interval ends before it starts: ({start}, {end})")
        if cur_start is None or start > cur_end:
            if cur_start is not None:
                total += cur_end - cur_start
            cur_start, cur_end = start, end
        else:
            cur_end = max(cur_end, end)
    if cur_start is not None:
        total += cur_end - cur_start
    return total


def idle_summary(busy_s_per_call: float | None, median_s: float | None, *, kernels_per_call: float | None = None,
                 calls: int = 0, reason: str | None = None) -> GpuTime:
    """The record stored under a point's ``raw.gpu_time``. ``idle_share`` is clamped at 0: kernel
    durations under the profiler can exceed the unprofiled time by the profiler's per-kernel cost."""
    if busy_s_per_call is None or not median_s:
        return GpuTime(busy_s=None, idle_share=None, kernels_per_call=kernels_per_call, profiled_calls=calls,
                       reason=reason or "not measured")
    return GpuTime(busy_s=busy_s_per_call, idle_share=max(0.0, 1.0 - busy_s_per_call / median_s),
                   kernels_per_call=kernels_per_call, profiled_calls=calls, reason=None)


def _device_intervals(prof: torch.profiler.profile) -> list[tuple[float, float]]:
    """(start, end) in seconds of every GPU-side activity in the trace."""
    from torch.autograd import DeviceType

    out = []
    for evt in prof.events():
        if getattr(evt, "device_type", None) != DeviceType.CUDA:
            continue
        # record_function ranges (torch.compile wraps its regions in them) are projected onto the GPU
        # timeline from their first to their last kernel, gaps included: not GPU work
        if getattr(evt, "is_user_annotation", False):
            continue
        tr = evt.time_range  # microseconds
        out.append((tr.start / 1e6, tr.end / 1e6))
    return out


def measure_gpu_time(fn: Callable[[], object], *, device: torch.device, median_s: float | None,
                     setup: Callable[[], object] | None = None, calls: int = PROFILED_CALLS) -> GpuTime:
    """Profile ``calls`` back-to-back calls of ``fn`` (``setup`` before each, as when timing) and
    summarise busy and idle time. Never raises: a profiler failure is recorded as the reason."""
    if device.type != "cuda":
        return idle_summary(None, median_s, reason="CPU run: no GPU kernel timeline")
    try:
        from torch.profiler import ProfilerActivity, profile

        torch.cuda.synchronize(device)
        busy = 0.0
        n_kernels = 0
        for _ in range(calls):
            # setup (a forward before a backward-only call) stays outside the profiled region
            if setup is not None:
                setup()
            torch.cuda.synchronize(device)
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                fn()
                torch.cuda.synchronize(device)
            found = _device_intervals(prof)  # times relative to this trace's start: one union per call
            n_kernels += len(found)
            busy += union_length(found)
        if not n_kernels:
            return idle_summary(None, median_s, calls=calls,
                                reason="the profiler recorded no GPU activity (CUPTI unavailable?)")
        return idle_summary(busy / calls, median_s, kernels_per_call=n_kernels / calls,
                            calls=calls)
    except Exception as exc:  # the measurement already taken must survive a profiler problem
        return idle_summary(None, median_s, calls=0, reason=f"profiler failed: {type(exc).__name__}: {exc}"[:300])
