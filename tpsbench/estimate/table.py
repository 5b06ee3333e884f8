"""Efficiency and host-cost data of one GPU (and the host that drove it): what turns a roofline floor into an
expected time. Every number is data with its source (fitted from named committed runs, measured by
`tpsbench calibrate`, published, or transferred from another GPU), stored in ``profiles/efficiency/<gpu>.toml``
and read here; a number without a source is refused.

The parameters are keyed by kind of op and size only (never by a model, a point or an implementation):

* GEMMs: a fraction of the datasheet tensor-core peak that large GEMMs reach, a wave-quantisation term over
  ``TILE x TILE`` output tiles per SM, a reduction-length term ``K^p / (K^p + gemm_k_half^p)`` (p =
  ``gemm_k_exponent``: with p = 1 the fit had to choose between the K = 128 expert GEMMs of moe_1b and the
  K = 576-1152 ones of moe_1b_a390m, whose held-out layers it then missed by up to 36%; fitted, p = 1.47 brings
  them to 23%), and for a launch
  over several groups (grouped or batched expert GEMMs, the fused expert kernels) a further fraction;
* memory-bound kernels: a fraction of the datasheet DRAM bandwidth, plus a floor per kernel (small kernels do
  not reach DRAM peak: launch ramp, tail), and a rate for elements added with atomics into shared rows;
* the flash attention core, forward and backward, as fractions of the tensor-core peak;
* the host: seconds of host time per kernel launch (eager, the extra of autograd, compiled), per GPU->CPU
  synchronisation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path

from tpsbench.errors import InputError, parse_toml, read_text

# Output tile of the GEMM kernels the wave-quantisation term counts: cuBLAS/CUTLASS sm90 kernels in the
# committed H100 traces tile 128x128 to 256x128 (results/h100-kernels/rows/moe_1b-host-trace.log kernel
# names: nvjet_sm90_tst_256x128..., cutlass ... 128x128); one fixed size is the model's simplification.
GEMM_TILE = 128


class EfficiencyError(InputError):
    """An efficiency file that cannot be used (missing key, a number without its source)."""


@dataclass(frozen=True, slots=True)
class Sourced:
    """One number and where it comes from; ``uncertainty`` is its relative 1-sigma spread (0.1 = 10%)."""

    value: float
    source: str
    uncertainty: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class EfficiencyTable:
    gpu: str  # the GPU profile these numbers describe
    host: str  # the host (CPU, software) the host costs were measured with
    basis: str  # how the table was made: "fitted", "transferred from h100_sxm (same architecture)", ...
    # GEMMs
    gemm_peak_fraction: Sourced
    gemm_k_half: Sourced  # reduction length at which a GEMM runs at half its large-K efficiency
    gemm_k_exponent: Sourced  # how sharply: K^p / (K^p + k_half^p) (p = 1: the plain K / (K + k_half))
    grouped_gemm_fraction: Sourced  # a launch computing several groups (experts) against one dense GEMM
    # memory-bound kernels
    dram_fraction: Sourced
    kernel_floor_s: Sourced  # GPU time a kernel takes however little it does
    atomic_add_per_s: Sourced  # elements/s of a scatter-add into shared rows (index_add, index_put accumulate)
    # flash attention core
    attention_fwd_fraction: Sourced
    attention_bwd_fraction: Sourced
    # the host
    host_launch_eager_s: Sourced  # an eager aten op's dispatch and launch, autograd off
    host_autograd_s: Sourced  # extra per kernel when autograd records the op (forward) or runs it (backward)
    host_gemm_s: Sourced  # extra per matmul launch (cuBLAS's heuristics and handle, autocast's dispatch)
    host_launch_compiled_s: Sourced  # a kernel of a compiled graph (Inductor's wrapper, autograd included)
    host_sync_s: Sourced
    # peak memory: bytes the caching allocator holds beyond the tensors counted (fragmentation, workspaces)
    memory_overhead_fraction: Sourced
    # the stated relative uncertainty of an expected training step: the fit's RMS relative error on the training
    # steps it was fitted to (widened when the table is transferred to another GPU)
    step_uncertainty: Sourced

    @classmethod
    def parameter_names(cls) -> list[str]:
        return [f.name for f in fields(cls) if f.type in ("Sourced", Sourced)]

    def value(self, name: str) -> float:
        return getattr(self, name).value

    def fitted_to(self, results_file: str) -> bool:
        """Whether a results file is among those the table's numbers were fitted to (their sources name each
        file), so that the table's errors on its points are in-sample."""
        path = Path(results_file)
        names = {path.as_posix(), Path(os.path.relpath(path.resolve())).as_posix()}
        return any(name in getattr(self, p).source for p in self.parameter_names() for name in names)

    def with_values(self, values: dict[str, float], source: str) -> EfficiencyTable:
        return replace(self, **{k: Sourced(v, source, getattr(self, k).uncertainty) for k, v in values.items()})

    def to_toml(self) -> str:
        lines = [
            f"# Efficiency and host-cost data of {self.gpu}: read by tpsbench.estimate (expected times).",
            "# Each number: value, source, relative uncertainty. Regenerate with `tpsbench fit` (see README).",
            f'gpu = "{self.gpu}"', f'host = "{_esc(self.host)}"', f'basis = "{_esc(self.basis)}"', "",
        ]
        for name in self.parameter_names():
            s: Sourced = getattr(self, name)
            lines.append(f'{name} = {{ value = {s.value!r}, uncertainty = {s.uncertainty!r}, '
                         f'source = "{_esc(s.source)}" }}')
        return "\n".join(lines) + "\n"


def _esc(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def parse_table(path: Path) -> EfficiencyTable:
    what = "an efficiency table (profiles/efficiency/*.toml)"
    data = parse_toml(read_text(path, EfficiencyError, what), str(path), EfficiencyError, what)
    names: dict[str, str] = {}
    for key in ("gpu", "host", "basis"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise EfficiencyError(f"{path}: key '{key}': expected a non-empty string")
        names[key] = data[key]
    values: dict[str, Sourced] = {}
    for name in EfficiencyTable.parameter_names():
        raw = data.get(name)
        if not isinstance(raw, dict):
            raise EfficiencyError(f"{path}: missing '{name} = {{ value = ..., source = \"...\" }}'")
        value, source, unc = raw.get("value"), raw.get("source"), raw.get("uncertainty", 0.0)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise EfficiencyError(f"{path}: '{name}.value' must be a number >= 0, got {value!r}")
        if not isinstance(source, str) or not source.strip():
            raise EfficiencyError(f"{path}: '{name}' has no source: every number needs one (where it comes from)")
        if isinstance(unc, bool) or not isinstance(unc, int | float) or unc < 0:
            raise EfficiencyError(f"{path}: '{name}.uncertainty' must be a number >= 0, got {unc!r}")
        values[name] = Sourced(float(value), source.strip(), float(unc))
    extra = sorted(set(data) - {"gpu", "host", "basis", *EfficiencyTable.parameter_names()})
    if extra:
        raise EfficiencyError(f"{path}: unknown key(s) {extra}")
    return EfficiencyTable(gpu=names["gpu"], host=names["host"], basis=names["basis"], **values)


def tables_dir() -> Path:
    from tpsbench.profiles import _profile_dirs

    return _profile_dirs()[-1] / "efficiency"


def table_paths() -> dict[str, Path]:
    folder = tables_dir()
    return {p.stem: p for p in sorted(folder.glob("*.toml"))} if folder.is_dir() else {}
