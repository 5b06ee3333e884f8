"""GPU profiles: cited hardware numbers loaded from ``profiles/*.toml``.

A profile file holds, per key, ``{ value = <positive number>, source = "<citation>" }``. Required:
dense bf16 tensor TFLOP/s (FP32 accumulate), tf32 and fp32 TFLOP/s, memory GB/s, L2 MB, SM count and
memory GB. Optional: ``measured_matmul_tflops`` and ``measured_copy_gbs`` (achievable ceilings
measured by someone, with the source); when absent they are ``None``, never a guess.

A malformed file is rejected with :class:`ProfileError`, whose message names the file, the key and
what was expected.
"""

from __future__ import annotations

import os
import re
import sys
import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from tpsbench.errors import InputError, UnknownNameError, closest_choices_message, parse_toml, read_text
from tpsbench.results.typed import JsonObject

PROFILES_ENV = "TPSBENCH_PROFILES"  # extra folder of user profiles, searched before the built-in ones

REQUIRED_NUMBERS: dict[str, str] = {
    "bf16_tflops": "dense BF16 tensor TFLOP/s with FP32 accumulate",
    "tf32_tflops": "dense TF32 tensor TFLOP/s",
    "fp32_tflops": "FP32 CUDA-core TFLOP/s",
    "mem_bandwidth_gbs": "DRAM bandwidth in GB/s",
    "l2_mb": "L2 cache size in MB",
    "sm_count": "number of SMs",
    "memory_gb": "device memory in GB",
}
OPTIONAL_NUMBERS: dict[str, str] = {
    "measured_matmul_tflops": "measured achievable bf16 matmul TFLOP/s",
    "measured_copy_gbs": "measured achievable device copy GB/s (bytes read + written)",
    "measured_tensor_peak_tflops": "measured bf16 tensor-core issue rate with FP32 accumulate (an mma microbenchmark)",
    "nvlink_gbs": "NVLink bandwidth per GPU, one direction, GB/s (absent: no NVLink)",
    "pcie_gbs": "PCIe x16 bandwidth, one direction, GB/s",
    "network_gbs": "scale-out network bandwidth per GPU in its reference server (e.g. a DGX), one direction, GB/s",
}
REQUIRED_STRINGS = ("name", "display_name")
PROFILE_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")


class ProfileError(InputError):
    """A profile file that does not follow the schema."""


@dataclass(frozen=True, slots=True)
class Cited:
    value: float
    source: str


@dataclass(frozen=True, slots=True, kw_only=True)
class GPUProfile:
    name: str
    display_name: str
    match: tuple[str, ...]
    aliases: tuple[str, ...]
    architecture: str
    compute_capability: str
    bf16_tflops: Cited
    tf32_tflops: Cited
    fp32_tflops: Cited
    mem_bandwidth_gbs: Cited
    l2_mb: Cited
    sm_count: Cited
    memory_gb: Cited
    measured_matmul_tflops: Cited | None
    measured_copy_gbs: Cited | None
    path: str
    nvlink_gbs: Cited | None = None
    pcie_gbs: Cited | None = None
    network_gbs: Cited | None = None
    measured_tensor_peak_tflops: Cited | None = None

    def matmul_ceiling(self, matmul_math: str) -> Cited:
        """The roofline's matmul ceiling: the highest credible figure, the datasheet's or a cited measurement's
        (a floor that a real run can beat would make every share of it wrong), with the choice in its source."""
        datasheet = self.matmul_peak(matmul_math)
        if matmul_math != "bf16":
            return datasheet
        measured = [c for c in (self.measured_tensor_peak_tflops, self.measured_matmul_tflops) if c is not None]
        best = max(measured, key=lambda c: c.value, default=None)
        if best is None or best.value <= datasheet.value:
            return datasheet
        return Cited(best.value, f"measured, above the datasheet's {datasheet.value:g}: {best.source}")

    def bandwidth_ceiling(self) -> Cited:
        """The roofline's DRAM ceiling: the datasheet's, or a cited copy measurement above it."""
        copy = self.measured_copy_gbs
        if copy is None or copy.value <= self.mem_bandwidth_gbs.value:
            return self.mem_bandwidth_gbs
        return Cited(copy.value, f"measured, above the datasheet's {self.mem_bandwidth_gbs.value:g}: {copy.source}")

    def matmul_peak(self, matmul_math: str) -> Cited:
        """The datasheet tensor-core peak a dtype policy's matmuls run at ("bf16"), or the FP32 CUDA-core
        peak ("fp32": no TF32)."""
        return self.bf16_tflops if matmul_math == "bf16" else self.fp32_tflops

    @property
    def ridge_flop_per_byte(self) -> float:
        """bf16 tensor peak over DRAM bandwidth: ops below this intensity are memory-bound."""
        return self.bf16_tflops.value * 1e12 / (self.mem_bandwidth_gbs.value * 1e9)

    @property
    def measured_ridge_flop_per_byte(self) -> float | None:
        if self.measured_matmul_tflops is None or self.measured_copy_gbs is None:
            return None
        return self.measured_matmul_tflops.value * 1e12 / (self.measured_copy_gbs.value * 1e9)

    def describe(self) -> JsonObject:
        out: JsonObject = {
            "name": self.name,
            "display_name": self.display_name,
            "architecture": self.architecture,
            "compute_capability": self.compute_capability,
            "file": self.path,
        }
        for key in (*REQUIRED_NUMBERS, *OPTIONAL_NUMBERS):
            cited: Cited | None = getattr(self, key)
            out[key] = None if cited is None else {"value": cited.value, "source": cited.source}
        out["ridge_flop_per_byte"] = self.ridge_flop_per_byte
        ceiling = self.matmul_ceiling("bf16")
        out["bf16_ceiling_tflops"] = {"value": ceiling.value, "source": ceiling.source}
        out["measured_ridge_flop_per_byte"] = self.measured_ridge_flop_per_byte
        return out


def gpu_label(device: str, profile_name: str | None) -> str:
    """What a run's device is called in tables and file names: its GPU profile on a GPU, else the device."""
    return profile_name if device == "cuda" and profile_name else device


def _cited(path: Path, key: str, raw: object, what: str) -> Cited:
    expected = f'expected {{ value = <positive number: {what}>, source = "<where it comes from>" }}'
    if not isinstance(raw, dict):
        raise ProfileError(f"{path}: key '{key}': {expected}, got {raw!r}")
    value, source = raw.get("value"), raw.get("source")
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ProfileError(f"{path}: key '{key}.value': {expected}, got {value!r}")
    if not isinstance(source, str) or not source.strip():
        raise ProfileError(f"{path}: key '{key}.source': {expected}, got {source!r}")
    extra = set(raw) - {"value", "source"}
    if extra:
        raise ProfileError(f"{path}: key '{key}': unexpected field(s) {sorted(extra)}; {expected}")
    return Cited(float(value), source.strip())


def parse_profile(path: Path) -> GPUProfile:
    """Load and validate one profile file."""
    what = "a GPU profile (see profiles/h100_sxm.toml for the format)"
    data = parse_toml(read_text(path, ProfileError, what), str(path), ProfileError, what)
    for key in REQUIRED_STRINGS:
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise ProfileError(f"{path}: key '{key}': expected a non-empty string, got {data.get(key)!r}")
    if not PROFILE_NAME.fullmatch(data["name"].strip()):
        # the name becomes part of results file names: a path separator would send them outside results/
        raise ProfileError(f"{path}: key 'name': expected lowercase letters, digits and _ . - (the file's name, "
                           f"e.g. 'h100_sxm'), got {data['name']!r}")
    match = data.get("match", [])
    if not isinstance(match, list) or not all(isinstance(m, str) and m for m in match):
        raise ProfileError(f"{path}: key 'match': expected a list of device-name substrings, got {match!r}")
    aliases = data.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a for a in aliases):
        raise ProfileError(f"{path}: key 'aliases': expected a list of names, got {aliases!r}")
    known = {*REQUIRED_NUMBERS, *OPTIONAL_NUMBERS, *REQUIRED_STRINGS, "match", "aliases", "architecture",
             "compute_capability"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ProfileError(f"{path}: unknown key(s) {unknown}; allowed: {sorted(known)}")
    numbers: dict[str, Cited | None] = {}
    for key, what in REQUIRED_NUMBERS.items():
        if key not in data:
            raise ProfileError(f"{path}: missing key '{key}' ({what}); expected {{ value = ..., source = ... }}")
        numbers[key] = _cited(path, key, data[key], what)
    for key, what in OPTIONAL_NUMBERS.items():
        numbers[key] = _cited(path, key, data[key], what) if key in data else None
    return GPUProfile(
        name=data["name"].strip(),
        display_name=data["display_name"].strip(),
        match=tuple(match),
        aliases=tuple(a.lower() for a in aliases),
        architecture=str(data.get("architecture", "")),
        compute_capability=str(data.get("compute_capability", "")),
        path=str(path),
        **numbers,  # type: ignore[arg-type]
    )


@cache
def _warn_bad_profiles_dir(value: str) -> None:
    """Said once per process: the user asked for a folder of profiles that is not one."""
    print(f"tpsbench: warning: {PROFILES_ENV}={value} is not a folder, so no profiles are read from it; point it "
          "at a folder of GPU profile .toml files, or unset it", file=sys.stderr)


def _profile_dirs() -> list[Path]:
    dirs = []
    extra = os.environ.get(PROFILES_ENV)
    if extra:
        if Path(extra).is_dir():
            dirs.append(Path(extra))
        else:
            _warn_bad_profiles_dir(extra)
    try:
        dirs.append(Path(str(resources.files("tpsbench.gpu_profiles"))))
    except ModuleNotFoundError:  # a source checkout on PYTHONPATH, not installed: read profiles/ directly
        dirs.append(Path(__file__).resolve().parent.parent / "profiles")
    return dirs


def profile_paths() -> dict[str, Path]:
    """Profile name (file stem) -> file; a user folder in $TPSBENCH_PROFILES shadows built-ins."""
    found: dict[str, Path] = {}
    for folder in reversed(_profile_dirs()):
        for path in sorted(folder.glob("*.toml")):
            found[path.stem] = path
    return dict(sorted(found.items()))


def gpu_aliases() -> dict[str, str]:
    """Alias -> profile name, read from each profile's ``aliases`` list (e.g. h100 -> h100_sxm)."""
    out: dict[str, str] = {}
    for name, path in profile_paths().items():
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8")).get("aliases", [])
        except (OSError, tomllib.TOMLDecodeError, RecursionError):
            continue  # the file's own error surfaces when it is loaded by name
        for alias in raw if isinstance(raw, list) else []:
            if isinstance(alias, str):
                out.setdefault(alias.lower(), name)
    return out


def gpu_names() -> list[str]:
    return list(profile_paths())


def profile_matching(device_name: str) -> GPUProfile | None:
    """The profile whose ``match`` substrings occur in a device name as NVML, CUDA or ``nvidia-smi`` print it
    (longest match wins), or None."""
    best: tuple[int, GPUProfile] | None = None
    for p in load_all_profiles():
        for pattern in p.match:
            if pattern.lower() in device_name.lower() and (best is None or len(pattern) > best[0]):
                best = (len(pattern), p)
    return None if best is None else best[1]


def load_profile(name_or_path: str) -> GPUProfile:
    """A profile by name (``h100_sxm``), alias, device name (``NVIDIA H100 80GB HBM3``, as nvidia-smi prints it)
    or path to a ``.toml`` file."""
    if name_or_path.endswith(".toml"):
        return parse_profile(Path(name_or_path))
    paths = profile_paths()
    key = name_or_path.strip().lower()
    if key not in paths:
        key = gpu_aliases().get(key, key)
    if key not in paths and (device := profile_matching(name_or_path)) is not None:
        return device
    if key not in paths:
        raise UnknownNameError(
            closest_choices_message("GPU", name_or_path, [*paths, *gpu_aliases()])
        )
    profile = parse_profile(paths[key])
    if profile.name != key:
        raise ProfileError(f"{paths[key]}: key 'name': expected '{key}' (the file name), got '{profile.name}'")
    return profile


def load_all_profiles() -> list[GPUProfile]:
    return [load_profile(name) for name in profile_paths()]
