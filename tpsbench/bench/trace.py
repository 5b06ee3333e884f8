"""`run --trace DIR`: the PyTorch profiler's Chrome trace of one repetition of a point (host and GPU timelines,
open in https://ui.perfetto.dev or chrome://tracing), taken after the timed repetitions so the timing is not
affected, and next to it a small text summary: the profiler's per-op table, sorted by the host's own time and (on
a GPU) by device time, so that where a step's host and GPU time go can be read without the trace, which on a
many-kernel step runs to tens of megabytes. The point's results record names both (``raw.trace``: path,
summary, reason)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import torch

from tpsbench.results.schema import TraceFile


def trace_path(folder: Path, label: str) -> Path:
    """A file name from a point's label: letters, digits, dot, dash and underscore only."""
    return folder / (re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_") + ".trace.json")


SUMMARY_ROWS = 30


def summary_path(trace: Path) -> Path:
    return trace.with_name(trace.name.removesuffix(".trace.json") + ".ops.txt")


def op_summary(prof, *, cuda: bool) -> str:
    """The profiler's per-op table (calls, host self and total time, device time), its top rows by host self
    time and, with a GPU, by device time."""
    averages = prof.key_averages()
    parts = ["ops by host self time", averages.table(sort_by="self_cpu_time_total", row_limit=SUMMARY_ROWS)]
    if cuda:  # the sort key's name since torch 2.4 ("cuda_time_total" before)
        parts += ["ops by device time", averages.table(sort_by="device_time_total", row_limit=SUMMARY_ROWS)]
    return "\n".join(parts) + "\n"


def export_trace(fn: Callable[[], object], path: Path, *, device: torch.device,
                 setup: Callable[[], object] | None = None) -> TraceFile:
    """Profile one call of ``fn`` (``setup`` before it, outside the trace) with the host's and, on a GPU, the
    device's activity, and write its Chrome trace to ``path``. Never raises: a failure is the reason."""
    try:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(ProfilerActivity.CUDA)
            torch.cuda.synchronize(device)
        if setup is not None:
            setup()
        with profile(activities=activities) as prof:
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        path.parent.mkdir(parents=True, exist_ok=True)
        prof.export_chrome_trace(str(path))
    except Exception as exc:  # the measurement already taken must survive a profiler problem
        return TraceFile(path=None, reason=f"trace failed: {type(exc).__name__}: {exc}"[:300])
    try:
        summary = summary_path(path)
        summary.write_text(op_summary(prof, cuda=device.type == "cuda"), encoding="utf-8")
        return TraceFile(path=str(path), summary=str(summary), reason=None)
    except Exception as exc:  # the trace is written: keep it, and say why its summary is not
        return TraceFile(path=str(path), summary=None, reason=f"summary failed: {type(exc).__name__}: {exc}"[:300])
