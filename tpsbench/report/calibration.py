"""`tpsbench calibrate`: the measured ceilings next to the GPU profile's datasheet numbers."""

from __future__ import annotations

from tpsbench.profiles import GPUProfile
from tpsbench.report.format import fmt
from tpsbench.report.tables import TableData
from tpsbench.results.calibration import CalibrationDoc, StreamResult


def calibration_table(doc: CalibrationDoc, profile: GPUProfile) -> TableData:
    """Measured ceilings next to the profile's datasheet numbers."""
    t = TableData(f"Calibration of {doc.machine.gpu_name} against profile {profile.name}",
                  ["ceiling", "measured", "where", "datasheet", "measured / datasheet"], left={"ceiling", "where"})
    spec = {"bf16": profile.bf16_tflops.value, "fp16": profile.bf16_tflops.value, "tf32": profile.tf32_tflops.value,
            "fp32": profile.fp32_tflops.value}
    for name, mm in doc.matmul.items():
        t.add(f"{name} matmul TFLOP/s", f"{mm.best_tflops:.1f}", "x".join(map(str, mm.best_shape)),
              f"{spec[name]:g}", f"{mm.best_tflops / spec[name]:.2f}")
    bw = profile.mem_bandwidth_gbs.value
    for size, entry in doc.bandwidth.items():
        for lib_name, lib in (("torch", entry.torch), ("cupy", entry.cupy)):
            results: tuple[tuple[str, StreamResult | None], ...] = (("copy", lib.copy), ("triad", lib.triad))
            for kind, val in results:
                gbs = None if val is None else val.gbs
                ratio = fmt(gbs / bw if gbs is not None and size == "large" else None, "{:.2f}")
                calls = entry.calls_per_sample
                how = (f", {calls} launches/{'graph' if val.launch == 'cuda_graph' else 'loop'}"
                       if val is not None and calls > 1 else "")
                reason = "" if val is not None else f": {lib.reason}"
                t.add(f"{kind} GB/s ({lib_name}, {size})", fmt(gbs, "{:.0f}"),
                      f"{entry.array_bytes >> 20} MiB/array{how}{reason}", f"{bw:g}" if size == "large" else "-",
                      ratio)
    for name, w in doc.sampler_overhead.workloads.items():
        t.add("counter sampler overhead", f"{100 * w.overhead_fraction:+.2f}%",
              f"{name} ({100 * w.min_fraction:+.2f}..{100 * w.max_fraction:+.2f}%)", "-", "-")
    churn = doc.shape_churn
    for layout, extra in ({} if churn is None else churn.host_new_shape_extra_s).items():
        assert churn is not None
        t.add(f"host us per new-shape matmul ({layout})", f"{1e6 * extra:+.1f}",
              f"{churn.k}x{churn.n}, {churn.calls} calls, vs {1e6 * churn.host_same_shape_s[layout]:.1f} us repeated",
              "-", "-")
    return t
