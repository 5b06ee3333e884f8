"""`tpsbench calibrate`'s sweeps for the expected-time model (tpsbench.estimate), about a minute on a GPU:

* a GEMM shape sweep: bf16 ``torch.matmul`` of the shapes transformer training runs (rows 128 to 32,768 against
  widths 128 to 8,192) and batched expert GEMMs (``torch.bmm`` over 8 to 256 experts of 128 to 4,096 rows),
  each timed with the L2 flushed: what the GEMM efficiency terms (waves, reduction length, grouped launches)
  are fitted to;
* a launch sweep: the host time per kernel of a stream of tiny eager ops (autograd off), of the same ops
  recorded by autograd and run backward, and of tiny matmuls; and the GPU time per kernel of tiny kernels
  replayed from a CUDA graph (no host cost): the per-kernel floor.

Every point keeps its raw samples. The fit (`tpsbench fit --calibration FILE`) reads them."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import replace

import torch

from tpsbench.bench.timing import TimingConfig, time_fn
from tpsbench.results.calibration import GemmPoint, LaunchSweep

GEMM_ROWS = (128, 512, 2048, 8192, 32768)
GEMM_WIDTHS = ((768, 768), (768, 2048), (2048, 768), (128, 768), (768, 128), (2048, 8192), (8192, 2048))
GROUPED = ((256, 128, 768, 128), (256, 128, 128, 768), (64, 4096, 2048, 1024), (64, 4096, 1024, 2048),
           (32, 4096, 1152, 576), (32, 4096, 576, 1152), (8, 4096, 4096, 4096))  # (experts, rows, k, n)
LAUNCHES = 2000  # tiny kernels per host-time sample


def gemm_sweep(device: torch.device, timing: TimingConfig) -> list[GemmPoint]:
    """Median time and TFLOP/s of each shape, bf16, L2 flushed (the timer's default)."""
    out: list[GemmPoint] = []

    def record(m: int, n: int, k: int, groups: int, fn: Callable[[], object]) -> None:
        timed = time_fn(fn, device=device, config=timing)
        med = statistics.median(timed.samples_s)
        out.append(GemmPoint(m=m, n=n, k=k, groups=groups, median_s=med,
                             tflops=2.0 * m * n * k * groups / med / 1e12, samples_s=timed.samples_s))

    for m in GEMM_ROWS:
        for k, n in GEMM_WIDTHS:
            a = torch.randn(m, k, device=device, dtype=torch.bfloat16)
            b = torch.randn(k, n, device=device, dtype=torch.bfloat16)
            record(m, n, k, 1, lambda a=a, b=b: torch.matmul(a, b))
    for e, m, k, n in GROUPED:
        a = torch.randn(e, m, k, device=device, dtype=torch.bfloat16)
        b = torch.randn(e, k, n, device=device, dtype=torch.bfloat16)
        record(m, n, k, e, lambda a=a, b=b: torch.bmm(a, b))
    return out


def _host_per_launch(fn: Callable[[], object], launches: int, device: torch.device, reps: int = 5) -> list[float]:
    """Wall time per launch of ``launches`` back-to-back launches from Python (host-bound: tiny tensors)."""
    samples = []
    for _ in range(reps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        samples.append((time.perf_counter() - t0) / launches)
    return samples[1:]  # the first is a warm-up


def launch_sweep(device: torch.device, launches: int = LAUNCHES) -> LaunchSweep:
    """Host time per eager kernel (autograd off, autograd forward + backward, matmul) and GPU time per kernel."""
    x = torch.randn(256, device=device)
    w = torch.randn(64, 64, device=device)
    xm = torch.randn(64, 64, device=device)

    def adds() -> None:
        with torch.no_grad():
            for _ in range(launches):
                x.add_(1e-3)

    def matmuls() -> None:
        with torch.no_grad():
            for _ in range(launches):
                torch.mm(xm, w)

    leaf = torch.randn(256, device=device, requires_grad=True)
    chain = 50

    def autograd_chain() -> None:  # ``chain`` muls recorded, then their backward: 2 * chain kernels per pass
        for _ in range(launches // (2 * chain)):
            y = leaf
            for _ in range(chain):
                y = y * 1.0001
            y.sum().backward()
        leaf.grad = None

    eager = _host_per_launch(adds, launches, device)
    gemm = _host_per_launch(matmuls, launches, device)
    grad = _host_per_launch(autograd_chain, (launches // (2 * chain)) * (2 * chain + 2), device)
    out = LaunchSweep(launches=launches, eager_samples_s=eager, matmul_samples_s=gemm, autograd_samples_s=grad,
                      host_per_launch_s=statistics.median(eager),
                      host_gemm_extra_s=max(0.0, statistics.median(gemm) - statistics.median(eager)),
                      host_autograd_extra_s=max(0.0, statistics.median(grad) - statistics.median(eager)),
                      kernel_floor_s=None)
    if device.type == "cuda":
        try:
            graph = torch.cuda.CUDAGraph()
            s = torch.cuda.Stream(device)
            s.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(s):
                x.add_(1e-3)  # warm-up on the side stream before capture
            torch.cuda.current_stream(device).wait_stream(s)
            with torch.cuda.graph(graph):
                for _ in range(100):
                    x.add_(1e-3)
            timed = time_fn(graph.replay, device=device, config=TimingConfig(warmup=2, min_reps=10, min_time_s=0.1,
                                                                              flush_l2=False))
            out = replace(out, kernel_floor_s=statistics.median(timed.samples_s) / 100)
        except Exception as exc:  # graph capture unsupported: said so, the host numbers stand
            out = replace(out, kernel_floor_reason=f"CUDA graph capture failed: {type(exc).__name__}: {exc}"[:300])
    return out
