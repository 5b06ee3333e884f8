"""What the analyses derive from a measured point (tpsbench.points.MeasuredPoint) that the point itself does not
hold: its GPU's profile, and the utilisations that a verdict weighs."""

from __future__ import annotations

from functools import lru_cache

from tpsbench.analysis.verdict import Evidence
from tpsbench.costmodel import get_policy
from tpsbench.errors import UnknownNameError
from tpsbench.points import MeasuredPoint
from tpsbench.profiles import GPUProfile, load_profile
from tpsbench.results.typed import JsonObject


@lru_cache(maxsize=64)
def profile_named(name: str) -> GPUProfile | None:
    """The profile of a run's GPU label; None for the CPU or a profile no longer known. A malformed profile is
    an error (ProfileError), as in every other command: its numbers would be missing without a word."""
    if name == "cpu":
        return None
    try:
        return load_profile(name)
    except UnknownNameError:
        return None


def evidence(p: MeasuredPoint) -> Evidence:
    """Utilisations against the datasheet ceilings of the point's GPU profile (None on the CPU)."""
    profile = profile_named(p.gpu)
    model_bw = tensor = None
    if profile is not None and p.median_s:
        peak = profile.matmul_peak(get_policy(p.policy).matmul_math)
        if p.matmul_flops is not None:
            tensor = p.matmul_flops / p.median_s / (peak.value * 1e12)
        if p.bytes is not None:
            model_bw = p.bytes / p.median_s / (profile.mem_bandwidth_gbs.value * 1e9)
    return Evidence(idle_share=p.idle_share, dram_util=p.dram_util, model_bw_util=model_bw, tensor_util=tensor,
                    roofline_fraction=p.roofline_fraction, predicted_memory_share=p.predicted_memory_share)


def slots_dict(obj: object) -> JsonObject:
    """A slotted dataclass as a dict of its fields (``dataclasses.asdict`` would recurse into nested ones)."""
    return {k: getattr(obj, k) for k in obj.__slots__}  # type: ignore[attr-defined]
