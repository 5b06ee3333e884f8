"""Two timelines, the host's and the GPU's: the host issues kernels (each costs it host time), the GPU runs them
in order as soon as they are issued and the previous one has finished, and a GPU->CPU synchronisation makes
the host wait until the GPU has drained. What comes out: wall time, GPU busy time, GPU idle time (host-bound
stretches and the bubbles after each sync), and the host's own time.

A run of ``n`` identical kernels (duration ``d``, host cost ``c`` each) starting with the host at ``h`` and the
GPU free at ``g`` is advanced in closed form: kernel ``i`` (0-based) is issued at ``h + (i+1) c`` and ends at
``max(g, h + (i+1) c) + d`` or after its predecessor, so the last one ends at
``max(g + n d, h + c + n d, h + n c + d)`` (the maximum of a linear function of ``i`` is at an end).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class KernelRun:
    """``kernels`` launches of ``gpu_s`` total GPU time, ``host_s`` host time each; ``label`` names the op."""

    label: str
    kernels: int
    gpu_s: float
    host_s: float


@dataclass(frozen=True, slots=True)
class Sync:
    """The host waits for the GPU (``.tolist()``, ``.item()``, a copy to the host), then pays ``host_s``."""

    label: str
    host_s: float


@dataclass(frozen=True, slots=True)
class Timeline:
    wall_s: float
    gpu_busy_s: float
    host_s: float  # host time spent issuing and syncing
    syncs: int
    launches: int

    @property
    def gpu_idle_s(self) -> float:
        return max(0.0, self.wall_s - self.gpu_busy_s)

    @property
    def gpu_idle_fraction(self) -> float:
        return self.gpu_idle_s / self.wall_s if self.wall_s else 0.0


def simulate(events: Iterable[KernelRun | Sync], *, repeat: int = 1, gpu_head_s: float = 0.0) -> Timeline:
    """Wall time of ``events`` (run ``repeat`` times back to back: without a sync between repetitions the host
    runs ahead into the next one), ending with a synchronisation. ``gpu_head_s``: the GPU is still busy that
    long with earlier work (an L2 flush) when the host starts issuing; not counted in the wall time."""
    evs = list(events)
    host = busy = host_work = 0.0
    gpu = gpu_head_s
    syncs = launches = 0
    for _ in range(repeat):
        for ev in evs:
            if isinstance(ev, Sync):
                host = max(host, gpu) + ev.host_s
                host_work += ev.host_s
                syncs += 1
                continue
            n = ev.kernels
            if n <= 0:  # work folded into another kernel: GPU time without a launch of its own
                gpu += ev.gpu_s
                busy += ev.gpu_s
                continue
            d, c = ev.gpu_s / n, ev.host_s
            gpu = max(gpu + n * d, host + c + n * d, host + n * c + d)
            host += n * c
            busy += ev.gpu_s
            host_work += n * c
            launches += n
    wall = max(host, gpu) - gpu_head_s
    return Timeline(wall / repeat, busy / repeat, host_work / repeat, syncs // repeat, launches // repeat)
