"""What PyTorch's CUDA caching allocator did during the timed training steps.

Why: a training step whose tensors change size from step to step (the per-expert ``loop``, sized by that step's
routing) can make the allocator miss its cache, call ``cudaMalloc``, and when the reserved memory reaches the
GPU's, free every cached block (``cudaFree`` synchronises the device) and retry; none of that is in the cost
model. The counters are differences of ``torch.cuda.memory_stats()`` over the timed steps.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from tpsbench.results.schema import AllocatorActivity

# torch.cuda.memory_stats() keys (documented in torch.cuda.memory_stats): cumulative counts since the process
# started, so the activity of the timed steps is after - before.
_COUNTS = {"alloc_retries": "num_alloc_retries", "device_allocs": "num_device_alloc",
           "device_frees": "num_device_free", "ooms": "num_ooms"}


def allocator_snapshot(device: torch.device) -> dict[str, int] | None:
    """Cumulative allocator counters now; None on a CPU."""
    if device.type != "cuda":
        return None
    return {k: int(v) for k, v in torch.cuda.memory_stats(device).items() if isinstance(v, int | float)}


def allocator_activity(before: Mapping[str, int] | None, after: Mapping[str, int] | None,
                       steps: int) -> AllocatorActivity | None:
    """Allocator activity between two snapshots of ``steps`` timed steps (None without both snapshots)."""
    if before is None or after is None:
        return None
    counts = {name: int(after.get(key, 0)) - int(before.get(key, 0)) for name, key in _COUNTS.items()}
    return AllocatorActivity(steps=steps, reserved_peak_bytes=after.get("reserved_bytes.all.peak"), **counts)
