"""Which efficiency table a GPU gets: its own (profiles/efficiency/<gpu>.toml), else one transferred from a GPU
of the same architecture (uncertainty doubled), else from another architecture (uncertainty tripled), always
said so in the table's ``basis``. A transfer keeps the GPU's own measured ceilings where its profile cites
them (``measured_matmul_tflops``, ``measured_copy_gbs``): the source GPU's fitted fraction is rescaled by the
ratio of the two GPUs' measured-over-datasheet fractions. Host costs carry over unchanged (same software),
with the widened uncertainty.

Also the fixed inputs of a fit from `tpsbench calibrate` files: the large-GEMM and DRAM fractions and the
per-kernel floor, each with the file it came from."""

from __future__ import annotations

import re
import statistics
from dataclasses import replace
from pathlib import Path

from tpsbench.estimate.table import EfficiencyError, EfficiencyTable, Sourced, parse_table, table_paths
from tpsbench.profiles import GPUProfile, load_all_profiles, load_profile

SAME_ARCHITECTURE_WIDENING = 2.0
OTHER_ARCHITECTURE_WIDENING = 3.0
MIN_TRANSFER_UNCERTAINTY = 0.1  # a transferred number is never stated tighter than 10%


def own_table(gpu: str) -> EfficiencyTable | None:
    path = table_paths().get(gpu)
    return None if path is None else parse_table(path)


def _measured_fraction(profile: GPUProfile, key: str) -> float | None:
    cited = getattr(profile, key)
    if cited is None:
        return None
    peak = profile.bf16_tflops.value if key == "measured_matmul_tflops" else profile.mem_bandwidth_gbs.value
    return cited.value / peak


def table_for(profile: GPUProfile) -> EfficiencyTable:
    """The efficiency table of ``profile``: its own, or a transfer that says where it came from."""
    own = own_table(profile.name)
    if own is not None:
        return own
    tables = {name: parse_table(path) for name, path in table_paths().items()}
    if not tables:
        raise EfficiencyError("no efficiency table found (profiles/efficiency/*.toml): run `tpsbench fit` on "
                              "measured results, or use --estimate floor")
    profiles = {p.name: p for p in load_all_profiles()}
    same = [n for n in tables if n in profiles and profiles[n].architecture == profile.architecture]
    source_name = same[0] if same else sorted(tables)[0]
    widening = SAME_ARCHITECTURE_WIDENING if same else OTHER_ARCHITECTURE_WIDENING
    src, src_prof = tables[source_name], profiles.get(source_name) or load_profile(source_name)
    how = "same architecture" if same else f"other architecture ({src_prof.architecture} to {profile.architecture})"
    note = f"transferred from {source_name} ({how}; uncertainty x{widening:g})"
    values: dict[str, Sourced] = {}
    for name in EfficiencyTable.parameter_names():
        s: Sourced = getattr(src, name)
        unc = max(MIN_TRANSFER_UNCERTAINTY, s.uncertainty * widening)
        values[name] = Sourced(s.value, f"{note}: {s.source}", round(unc, 3))
    su = src.step_uncertainty
    values["step_uncertainty"] = Sourced(round(su.value * widening, 3), f"{note}: {su.source}", 0.0)
    for name, key in (("gemm_peak_fraction", "measured_matmul_tflops"), ("dram_fraction", "measured_copy_gbs")):
        mine, theirs = _measured_fraction(profile, key), _measured_fraction(src_prof, key)
        if mine is not None and theirs is not None:
            s = getattr(src, name)
            value = min(1.0, s.value * mine / theirs)
            values[name] = Sourced(value, f"{s.source}, rescaled by {profile.name}'s cited {key} "
                                   f"({getattr(profile, key).source})", round(max(MIN_TRANSFER_UNCERTAINTY,
                                                                                  s.uncertainty), 3))
    return replace(src, gpu=profile.name, basis=note, **values)


def calibration_fixed(paths: list[Path], profile: GPUProfile) -> dict[str, Sourced]:
    """Fit inputs measured by `tpsbench calibrate` on this GPU: the best bf16 matmul and large copy as fractions
    of the datasheet, the GPU time of a small kernel (an L2-resident triad replayed from a CUDA graph), the host
    time per launch. Later files override earlier ones."""
    from tpsbench.results.calibration import load_calibration

    fixed: dict[str, Sourced] = {}
    for path in paths:
        doc = load_calibration(path)
        best = doc.best
        if best.bf16_tflops:
            v = best.bf16_tflops
            fixed["gemm_peak_fraction"] = Sourced(v / profile.bf16_tflops.value, f"{path}: best bf16 matmul "
                                                  f"{v:.1f} TFLOP/s over the datasheet {profile.bf16_tflops.value:g}")
        if best.copy_gbs:
            v = best.copy_gbs
            fixed["dram_fraction"] = Sourced(v / profile.mem_bandwidth_gbs.value, f"{path}: best large copy "
                                             f"{v:.0f} GB/s over the datasheet {profile.mem_bandwidth_gbs.value:g}")
        small = doc.bandwidth.get("l2_resident")
        triad = None if small is None else small.torch.triad
        if triad is not None and triad.launch == "cuda_graph" and triad.median_s:
            fixed["kernel_floor_s"] = Sourced(triad.median_s, f"{path}: 4 MiB L2-resident triad per kernel, "
                                              "replayed from a CUDA graph (no host cost)")
        for name, wl in doc.sampler_overhead.workloads.items():
            reps = re.search(r"tiny .* x(\d+)", name)
            if reps and wl.without_s:
                per = statistics.median(wl.without_s) / int(reps.group(1))
                fixed["host_launch_eager_s"] = Sourced(per, f"{path}: sampler_overhead '{name}' without sampling, "
                                                       "median / launches: host time of one eager aten op")
        sweep = doc.launch_sweep
        if sweep is None:
            continue
        for value, name, what in ((sweep.host_per_launch_s, "host_launch_eager_s", "host time per eager aten op"),
                                  (sweep.host_autograd_extra_s, "host_autograd_s",
                                   "autograd's extra host time per kernel"),
                                  (sweep.host_gemm_extra_s, "host_gemm_s", "a matmul's extra host time per launch"),
                                  (sweep.kernel_floor_s, "kernel_floor_s",
                                   "GPU time per tiny kernel from a CUDA graph")):
            if value:
                fixed[name] = Sourced(value, f"{path}: launch sweep, {what}")
    return fixed
