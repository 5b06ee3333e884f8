"""Expected time (what a GPU will measure, not only its floor): per-op efficiency by kind and size, the host and
launch timeline, peak memory. Pure: cost-model ops, GPU profiles and efficiency tables in, estimates out."""

from tpsbench.estimate.expected import Expected, OpEstimate, expected_layer, expected_step, grouped_mm_fast_path
from tpsbench.estimate.table import EfficiencyError, EfficiencyTable, Sourced
from tpsbench.estimate.timeline import KernelRun, Sync, Timeline, simulate

__all__ = ["EfficiencyError", "EfficiencyTable", "Expected", "KernelRun", "OpEstimate", "Sourced", "Sync",
           "Timeline", "expected_layer", "expected_step", "grouped_mm_fast_path", "simulate"]
