"""The machine a measurement ran on, and which GPU profile matches it."""

from __future__ import annotations

import os
import platform
from dataclasses import replace

from tpsbench import __version__
from tpsbench.errors import InputError
from tpsbench.profiles import GPUProfile, profile_matching
from tpsbench.results.schema import Machine


class DeviceError(InputError):
    """The requested device or GPU is not the one present."""


NO_GPU = ("no CUDA GPU found: measure on the CPU with --device cpu (small models, e.g. --model moe_tiny), "
          "or predict without hardware with `tpsbench predict --gpu GPU --model MODEL`")


def cuda_device_name() -> str | None:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def detect_profile(device_name: str) -> GPUProfile | None:
    """The profile whose ``match`` substrings occur in the device name (longest match wins)."""
    return profile_matching(device_name)


def resolve_gpu(requested: str | None, device: str) -> GPUProfile | None:
    """Check ``--gpu`` against the hardware. On the CPU a named profile is only used for predictions."""
    from tpsbench.profiles import load_profile

    if device == "cpu":
        if requested not in (None, "auto"):
            load_profile(requested)  # an unknown name still gets its closest-choices error
            raise DeviceError(f"--device cpu measures this CPU, so --gpu {requested} does not apply; for that GPU's "
                              f"roofline use `tpsbench predict --gpu {requested} --model MODEL`")
        return None
    name = cuda_device_name()
    if name is None:
        raise DeviceError(NO_GPU)
    present = detect_profile(name)
    if requested in (None, "auto"):
        if present is None:
            raise DeviceError(f"no profile matches the present GPU '{name}': add one to profiles/ "
                              "(see profiles/h100_sxm.toml) or pass --gpu PROFILE to use a similar one")
        return present
    wanted = load_profile(requested)
    if present is None or present.name != wanted.name:
        hint = f"--gpu {present.name}" if present else "--gpu auto"
        raise DeviceError(f"--gpu {requested} asked for {wanted.display_name}, but the present GPU is '{name}'; "
                          f"use {hint}")
    return wanted


NvmlFacts = dict[str, str | float | None]  # Machine's driver, clock and power fields, by name


def _nvml_info() -> NvmlFacts:
    try:
        import pynvml  # nvidia-ml-py
    except ImportError:
        return {"nvml": None, "nvml_reason": "nvidia-ml-py not installed"}
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return {"nvml": None, "nvml_reason": f"NVML unavailable: {exc}"}
    try:
        h = pynvml.nvmlDeviceGetHandleByIndex(int(os.environ.get("TPSBENCH_NVML_INDEX", "0")))
        info: NvmlFacts = {"driver": pynvml.nvmlSystemGetDriverVersion()}
        for key, clock in (("sm_clock_mhz", pynvml.NVML_CLOCK_SM), ("mem_clock_mhz", pynvml.NVML_CLOCK_MEM)):
            try:
                info[key] = pynvml.nvmlDeviceGetClockInfo(h, clock)
                info[f"max_{key}"] = pynvml.nvmlDeviceGetMaxClockInfo(h, clock)
            except pynvml.NVMLError as exc:
                info[key] = None
                info[f"{key}_reason"] = str(exc)
        try:
            info["power_limit_w"] = pynvml.nvmlDeviceGetEnforcedPowerLimit(h) / 1000
        except pynvml.NVMLError as exc:
            info["power_limit_w"] = None
            info["power_limit_reason"] = str(exc)
        return info
    finally:
        pynvml.nvmlShutdown()


def machine_info(device: str, profile: GPUProfile | None) -> Machine:
    import torch

    try:
        import triton

        triton_version: str | None = triton.__version__
    except ImportError:
        triton_version = None
    machine = Machine(device=device, hostname=platform.node(), python=platform.python_version(),
                      platform=platform.platform(), cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(),
                      load_average=os.getloadavg()[0] if hasattr(os, "getloadavg") else None, torch=torch.__version__,
                      triton=triton_version, tpsbench=__version__, profile=None if profile is None else profile.name,
                      gpu_name=None, cuda=torch.version.cuda)
    if device != "cuda" or not torch.cuda.is_available():
        return machine
    props = torch.cuda.get_device_properties(0)
    return replace(machine, gpu_name=props.name, compute_capability=f"{props.major}.{props.minor}",
                   sm_count=props.multi_processor_count, gpu_memory_gb=props.total_memory / 1e9,
                   l2_bytes=getattr(props, "L2_cache_size", None), **_nvml_info())  # type: ignore[arg-type]
