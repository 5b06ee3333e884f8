"""What CI never runs on a GPU, run on the CPU: the GPU branches of the derived metrics (roofline prediction,
achieved fraction, MFU) with a real profile, GPU detection from device names, and the run table's layout."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from tpsbench.bench import env, micro
from tpsbench.bench.e2e import E2ECase, e2e_metrics
from tpsbench.costmodel import POLICIES, FlopConvention, Workload, flops_per_token
from tpsbench.models import get_model
from tpsbench.options import LayerMode
from tpsbench.profiles import load_profile
from tpsbench.report.run import run_notes, run_table
from tpsbench.report.tables import to_rich
from tpsbench.results import load_results
from tpsbench.roofline import ceilings_for, op_time, predict

ROOT = Path(__file__).resolve().parents[1]
H100 = load_profile("h100_sxm")
AMP = POLICIES["amp_bf16"]


def test_layer_metrics_on_a_gpu_profile():
    spec = get_model("moe_1b")
    case = micro.MicroCase("moe", "grouped", 32768, LayerMode.FWD_BWD)
    ops = micro.case_ops(spec, case, AMP, "flash", spec.moe.capacity_factor)
    median = 4.0e-3
    derived, pred = micro.derived_metrics(ops, case.tokens, median, H100, AMP)
    ceil = ceilings_for(H100, "bf16")
    floor = sum(op_time(op, ceil).seconds for op in ops)  # the roofline floor of exactly these ops
    assert pred is not None and pred.profile == "h100_sxm" and pred.ceilings == "spec"
    assert pred.predicted_s == pytest.approx(floor)
    assert pred.achieved_fraction == pytest.approx(floor / median)
    assert sum(o.predicted_s for o in pred.ops) == pytest.approx(floor)
    assert {o.bound for o in pred.ops} <= {"memory", "compute"}
    assert derived.tokens_per_s == 32768 / median
    assert derived.achieved_tflops == pytest.approx(derived.matmul_flops / median / 1e12)
    assert derived.achieved_gbs == pytest.approx(derived.bytes / median / 1e9)
    # the same point without a profile: measured rates, no prediction (never a guess)
    assert micro.derived_metrics(ops, case.tokens, median, None, AMP)[1] is None


def test_training_step_metrics_on_a_gpu_profile():
    spec = get_model("dense_135m")
    case = E2ECase("dense", 32768, 65536)  # two microbatches per optimizer step
    step, optimizer = 0.2, 0.01
    derived, pred = e2e_metrics(spec, case, step, optimizer, AMP, H100, None)
    w = Workload(model=spec, tokens=32768, seq_len=2048)
    tokens_per_s = 65536 / step
    assert derived.tokens_per_s == tokens_per_s and derived.optimizer_share == pytest.approx(0.05)
    assert derived.mfu is not None
    for c in FlopConvention:  # MFU against the datasheet bf16 peak, 989.4 TFLOP/s
        assert derived.mfu[c.value] == pytest.approx(flops_per_token(w, c) * tokens_per_s / 989.4e12)
    p = predict(w, H100, global_batch_tokens=65536)
    assert pred is not None and pred.predicted_s == pytest.approx(p.global_step_s)
    assert pred.predicted_tokens_per_s == pytest.approx(65536 / p.global_step_s)
    assert pred.achieved_fraction == pytest.approx(p.global_step_s / step)
    cpu, none = e2e_metrics(spec, case, step, optimizer, POLICIES["fp32"], None, None)
    assert none is None and cpu.mfu is None


@pytest.mark.parametrize(("device_name", "profile"), [
    ("NVIDIA H100 80GB HBM3", "h100_sxm"),
    ("NVIDIA H100 PCIe", "h100_pcie"),
    ("NVIDIA H100 NVL", "h100_nvl"),
    ("NVIDIA H200", "h200"),
    ("NVIDIA GeForce RTX 5090", "rtx5090"),
    ("NVIDIA A100-SXM4-80GB", "a100_sxm"),
    ("NVIDIA A100-PCIE-40GB", "a100_pcie_40gb"),
    ("Some Future GPU", None),
])
def test_detect_profile_from_device_names(device_name, profile):
    found = env.detect_profile(device_name)
    assert (found.name if found else None) == profile


def test_resolve_gpu_on_a_gpu_machine(monkeypatch):
    monkeypatch.setattr(env, "cuda_device_name", lambda: "NVIDIA H100 80GB HBM3")
    assert env.resolve_gpu("auto", "cuda").name == "h100_sxm"
    assert env.resolve_gpu("h100", "cuda").name == "h100_sxm"  # an alias of the present GPU
    with pytest.raises(env.DeviceError, match="present GPU is 'NVIDIA H100 80GB HBM3'; use --gpu h100_sxm"):
        env.resolve_gpu("rtx5090", "cuda")
    monkeypatch.setattr(env, "cuda_device_name", lambda: "Some Future GPU")
    with pytest.raises(env.DeviceError, match="no profile matches the present GPU 'Some Future GPU'"):
        env.resolve_gpu("auto", "cuda")
    monkeypatch.setattr(env, "cuda_device_name", lambda: None)
    with pytest.raises(env.DeviceError, match="no CUDA GPU found"):
        env.resolve_gpu("auto", "cuda")


def _render(table, width: int = 200) -> str:
    console = Console(width=width, record=True, file=open("/dev/null", "w"))  # noqa: SIM115 - closed with console
    console.print(to_rich(table))
    return console.export_text()


def test_run_table_and_notes_golden():
    doc = load_results(ROOT / "results/h100-counters/validated/counters-moe_1b.json")
    text = _render(run_table(doc)) + "\n".join(run_notes(doc)) + "\n"
    golden = ROOT / "tests/golden/run-table-counters-moe_1b.txt"
    assert text == golden.read_text(), "the run table changed: if on purpose, rewrite tests/golden/" + golden.name


def test_run_table_fits_100_columns_without_cutting_values(tmp_path, fixed_clock):
    """A CPU run's table at a 100-column terminal: the always-n/a columns are left out, nothing is cut. The
    timer returns fixed samples, so that a busy machine cannot flag points inconsistent (which adds the status
    column and changes the layout): the table's shape must not depend on the machine's load."""
    from tpsbench.cli import main

    out = tmp_path / "r.json"
    assert main(["run", "--device", "cpu", "--model", "moe_tiny", "--mode", "micro", "--layers", "moe",
                 "--impl", "capacity", "--reps", "2", "--min-time", "0.001", "--out", str(out)]) == 0
    doc = load_results(out)
    text = _render(run_table(doc), width=100)
    assert max(len(line) for line in text.splitlines()) <= 100 and "…" not in text
    assert "not shown: DRAM GB/s, idle, pred. ms, roofline" in " ".join(text.split()) and "unpermute" in text
    # the file keeps the fields the table leaves out, with why they are empty
    assert all(p.raw and p.raw.gpu_time and p.raw.gpu_time.reason.startswith("CPU run") for p in doc.points)
