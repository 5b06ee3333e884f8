"""`run --trace DIR`: the PyTorch profiler's Chrome trace of one repetition of a point (host and GPU timelines,
open in https://ui.perfetto.dev or chrome://tracing), taken after the timed repetitions so the timing is not
affected. The point's results record names the file (``raw.trace``)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import torch


def trace_path(folder: Path, label: str) -> Path:
    """A file name from a point's label: letters, digits, dot, dash and underscore only."""
    return folder / (re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_") + ".trace.json")


def export_trace(fn: Callable[[], object], path: Path, *, device: torch.device,
                 setup: Callable[[], object] | None = None) -> dict[str, str | None]:
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
        return {"path": str(path), "reason": None}
    except Exception as exc:  # the measurement already taken must survive a profiler problem
        return {"path": None, "reason": f"trace failed: {type(exc).__name__}: {exc}"[:300]}
