"""Verdicts, compare, explain and plot on synthetic results with known answers."""

from __future__ import annotations

import json
import math

import pytest
from results_factory import doc, entries, point, utilisation_point

from tpsbench.analysis.compare import compare
from tpsbench.analysis.explain import MeasuredCsvError, explain, read_measured_csv
from tpsbench.analysis.points import evidence
from tpsbench.analysis.verdict import (
    Evidence,
    Verdict,
    speedup_verdict,
    workload_verdict,
)
from tpsbench.bench.gpu_busy import idle_summary, measure_gpu_time, union_length
from tpsbench.cli import main
from tpsbench.report.plot import PlotError, plot_results
from tpsbench.results.schema import GpuTime

# --- one GPU: the four kinds of workload --------------------------------------------------------------
BANDWIDTH = dict(tensor=0.15, bw=0.50, idle=0.02, dram_pct=85.0)  # DRAM busy 87% by the counter
COMPUTE = dict(tensor=0.78, bw=0.20, idle=0.03, dram_pct=22.0)
OVERHEAD = dict(tensor=0.10, bw=0.08, idle=0.60, dram_pct=10.0)
MIXED = dict(tensor=0.35, bw=0.30, idle=0.15, dram_pct=40.0)  # nothing near a limit, nothing dominant


def _verdict_of(kind: dict) -> Verdict:
    found = entries(doc("dense_135m", [utilisation_point(**kind)]))
    return workload_verdict(evidence(found[0])).verdict


def test_clearly_bandwidth_bound_workload():
    assert _verdict_of(BANDWIDTH) is Verdict.BANDWIDTH


def test_clearly_compute_bound_workload():
    assert _verdict_of(COMPUTE) is Verdict.COMPUTE


def test_clearly_overhead_bound_workload():
    assert _verdict_of(OVERHEAD) is Verdict.OVERHEAD


def test_mixed_workload_is_inconclusive():
    assert _verdict_of(MIXED) is Verdict.INCONCLUSIVE


def test_utilisations_are_divided_by_the_busy_share():
    # 50% DRAM over the window with 40% idle is 83% while busy -> reaches the bandwidth limit,
    # but idle 40% also reaches the overhead limit: two limits, so inconclusive, and the line says both.
    f = workload_verdict(Evidence(idle_share=0.40, dram_util=0.50, tensor_util=0.05))
    assert f.verdict is Verdict.INCONCLUSIVE
    assert "overhead-bound, bandwidth-bound" in f.evidence
    assert f.values["bandwidth_util_busy"] == pytest.approx(0.50 / 0.60)


def test_counter_wins_over_the_cost_model_lower_bound():
    # the cost model's minimum bytes say 20%, the counter says 80%: the counter is the measurement
    f = workload_verdict(Evidence(idle_share=0.0, dram_util=0.80, model_bw_util=0.20, tensor_util=0.1))
    assert f.verdict is Verdict.BANDWIDTH
    g = workload_verdict(Evidence(idle_share=0.0, model_bw_util=0.70, tensor_util=0.1))
    assert g.verdict is Verdict.BANDWIDTH and "DRAM>=" in g.evidence


def test_no_evidence_is_inconclusive_not_a_guess():
    f = workload_verdict(Evidence())
    assert f.verdict is Verdict.INCONCLUSIVE and "no evidence" in f.evidence
    # utilisations without idle time: low utilisation cannot be pinned on overhead or on slow kernels
    g = workload_verdict(Evidence(model_bw_util=0.2, tensor_util=0.2))
    assert g.verdict is Verdict.INCONCLUSIVE and "idle not measured" in g.evidence


def test_cpu_points_get_no_verdict_but_are_compared():
    cpu = doc("moe_tiny", [utilisation_point(**BANDWIDTH)], gpu=None, device="cpu")
    c = compare(entries(cpu))
    assert c.verdicts == [] and len(c.throughput) == 1 and c.gpus[0].name == "cpu"


# --- two GPUs -----------------------------------------------------------------------------------------
def test_speedup_matching_the_bandwidth_ratio_is_bandwidth_bound():
    # H100 SXM -> H200: same compute (989.4), bandwidth 4800 / 3350 = 1.433
    f = speedup_verdict(1.40, 1.0, 4800 / 3350)
    assert f.verdict is Verdict.BANDWIDTH


def test_speedup_of_one_when_compute_is_equal_cannot_separate_compute_from_overhead():
    f = speedup_verdict(1.02, 1.0, 4800 / 3350)
    assert f.verdict is Verdict.INCONCLUSIVE
    assert "compute-bound and overhead-bound fit alike" in f.evidence


def test_speedup_matching_the_compute_ratio_or_one():
    c, b = 989.4 / 209.5, 3350 / 1792  # rtx5090 -> h100_sxm
    assert speedup_verdict(4.6, c, b).verdict is Verdict.COMPUTE
    assert speedup_verdict(1.05, c, b).verdict is Verdict.OVERHEAD
    assert speedup_verdict(3.0, c, b).verdict is Verdict.INCONCLUSIVE


def _two_gpu_docs():
    h100 = doc("dense_135m", [point(median=0.20, predicted_s=0.10), point(median=0.01, kind="micro", layer="mlp",
                                                                         impl=None, mode="fwd_bwd")])
    h200 = doc("dense_135m", [point(median=0.14, predicted_s=0.08)], gpu="h200")
    return entries(h100, "a.json") + entries(h200, "b.json")


def test_compare_speedups_between_gpus():
    c = compare(_two_gpu_docs())
    assert [g.name for g in c.gpus] == ["h100_sxm", "h200"]
    (s,) = c.speedups  # only the train step exists on both
    assert s.speedup == pytest.approx(0.20 / 0.14)
    assert s.compute_ratio == pytest.approx(1.0)
    assert s.bandwidth_ratio == pytest.approx(4800 / 3350)
    assert s.predicted == pytest.approx(0.10 / 0.08)
    assert s.finding.verdict is Verdict.BANDWIDTH
    row = next(r for r in c.throughput if r.label.startswith("dense_135m mlp"))
    assert set(row.per_gpu) == {"h100_sxm"}


def test_compare_moe_dense_ratios():
    dense = doc("dense_135m", [point(median=0.10, predicted_s=0.05, dram_pct=60, dram_gbs=2010.0)])
    moe = doc("moe_1b", [
        point(impl="capacity", median=0.30, predicted_s=0.06, dram_pct=62, dram_gbs=2077.0),
        point(impl="grouped", status="oom"),
        point(kind="micro", layer="moe", impl="capacity", mode="fwd_bwd", median=0.006, predicted_s=0.002,
              dram_pct=50, dram_gbs=1675.0),
        point(kind="micro", layer="dense_active", impl=None, mode="fwd_bwd", median=0.001, predicted_s=0.0005,
              dram_pct=20, dram_gbs=670.0),
    ])
    c = compare(entries(dense) + entries(moe))
    e2e = [r for r in c.ratios if r.dense == "dense_135m"]
    assert len(e2e) == 1  # the oom point has no ratio
    assert e2e[0].measured == pytest.approx(3.0) and e2e[0].predicted == pytest.approx(1.2)
    assert (e2e[0].moe_dram_gbs, e2e[0].dense_dram_gbs) == (2077.0, 2010.0)
    (layer,) = [r for r in c.ratios if r.dense.endswith("dense_active layer")]
    assert layer.measured == pytest.approx(6.0) and layer.predicted == pytest.approx(4.0)
    assert (layer.moe_dram_gbs, layer.dense_dram_gbs) == (1675.0, 670.0)


def test_old_e2e_points_get_their_costs_from_the_cost_model():
    p = point(median=0.1)
    p["derived"].pop("matmul_flops")
    p["derived"].pop("bytes")
    (e,) = entries(doc("dense_135m", [p]))
    from tpsbench.costmodel import FlopConvention, flops_per_token, get_policy, train_workload
    from tpsbench.models import get_model

    w = train_workload(get_model("dense_135m"), "dense", 32768, get_policy("amp_bf16"))
    assert e.matmul_flops == pytest.approx(flops_per_token(w, FlopConvention.EXACT) * 32768)
    assert e.bytes and e.bytes > 0


def test_compare_cli_markdown_and_json(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(doc("dense_135m", [utilisation_point(**BANDWIDTH)])))
    b.write_text(json.dumps(doc("dense_135m", [utilisation_point(**BANDWIDTH, median=0.007)], gpu="h200")))
    md = tmp_path / "report.md"
    assert main(["compare", str(a), str(b), "--markdown", str(md)]) == 0
    text = md.read_text()
    assert "| point | h100_sxm | h200 |" in text and "bandwidth-bound" in text
    assert "DRAM" not in text.split("| point |")[1].split("\n")[2]  # no dram_gbs in these points: not shown
    assert "idle 2%" in text
    capsys.readouterr()
    assert main(["compare", str(a), str(b), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["speedups"][0]["verdict"] == "bandwidth-bound"  # 0.01 / 0.007 = 1.43x = the bandwidth ratio


def test_compare_cli_bad_file_is_one_line(tmp_path, capsys):
    bad = tmp_path / "x.json"
    bad.write_text("{}")
    assert main(["compare", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "schema" in err


# --- explain ------------------------------------------------------------------------------------------
CSV = """model,gpu,tokens_per_s,impl
dense_135m,rtx5090,100000,
moe_1b,rtx5090,50000,capacity
dense_135m,h100,300000,
moe_1b,h100,100000,
"""


def test_explain_small_csv(tmp_path):
    f = tmp_path / "m.csv"
    f.write_text(CSV)
    rows = read_measured_csv(f)
    assert [r.impl for r in rows] == ["dense", "capacity", "dense", "capacity"]  # capacity is the MoE default
    e = explain(rows)
    assert len(e.rows) == 4 and all(0 < r.fraction_of_bound < 1 for r in e.rows)
    speed = {s.model: s for s in e.speedups}
    assert speed["dense_135m"].speedup == pytest.approx(3.0)
    assert speed["moe_1b"].speedup == pytest.approx(2.0)
    # 2.0x is within 15% of the bandwidth ratio 3350/1792 = 1.87x
    assert speed["moe_1b"].finding.verdict is Verdict.BANDWIDTH
    gaps = {g.gpu: g for g in e.gaps}
    assert gaps["rtx5090"].measured == pytest.approx(2.0) and gaps["h100_sxm"].measured == pytest.approx(3.0)
    (trend,) = e.trends
    assert trend.measured_change == pytest.approx(1.5)
    assert [f.rms_error for f in e.fits] == sorted(f.rms_error for f in e.fits)
    bw_fit = next(f for f in e.fits if f.explanation.startswith("bandwidth"))
    expected = math.exp(math.sqrt((math.log(3.0 / (3350 / 1792)) ** 2 + math.log(2.0 / (3350 / 1792)) ** 2) / 2)) - 1
    assert bw_fit.rms_error == pytest.approx(expected)
    assert "largest dense/MoE gap beyond the roofline: moe_1b/capacity on h100_sxm" in e.summary


@pytest.mark.parametrize("text, message", [
    ("model,gpu\ndense_135m,h100\n", "missing column(s) tokens_per_s"),
    ("model,gpu,tokens_per_s\ndense_13m,h100,5\n", ":2: unknown model"),
    ("model,gpu,tokens_per_s\ndense_135m,h1OO,5\n", ":2: unknown GPU"),
    ("model,gpu,tokens_per_s\ndense_135m,h100,fast\n", "is not a number"),
    ("model,gpu,tokens_per_s\ndense_135m,h100,-5\n", "must be a positive number"),
    ("model,gpu,tokens_per_s,tokens\ndense_135m,h100,5,3000\n", "multiple of dense_135m's sequence length"),
    ("model,gpu,tokens_per_s,impl\ndense_135m,h100,5,grouped\n", "is dense; leave impl empty"),
    ("model,gpu,tokens_per_s,impl\nmoe_1b,h100,5,fastest\n", "is not one of"),
    ("model,gpu,tokens_per_s\n", "no data rows"),
])
def test_explain_bad_csv_says_what_to_do(tmp_path, text, message):
    f = tmp_path / "m.csv"
    f.write_text(text)
    with pytest.raises(MeasuredCsvError) as exc:
        read_measured_csv(f)
    assert message.lower() in str(exc.value).lower()


def test_explain_cli(tmp_path, capsys):
    f = tmp_path / "m.csv"
    f.write_text(CSV)
    assert main(["explain", "--measured", str(f), "--markdown", str(tmp_path / "e.md")]) == 0
    assert "Which explanation fits" in (tmp_path / "e.md").read_text()
    assert main(["explain", "--measured", str(tmp_path / "missing.csv")]) == 2
    assert "cannot read" in capsys.readouterr().err


# --- plot ---------------------------------------------------------------------------------------------
def test_plot_writes_a_png(tmp_path):
    both = _two_gpu_docs()
    out = plot_results([*both, *entries(doc("moe_1b", [utilisation_point(**MIXED, impl="capacity")]))],
                       tmp_path / "roof.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_roofline_figure_draws_each_point_at_its_intensity_and_rate():
    import matplotlib.pyplot as plt

    from tpsbench.report.plot import roofline_figure

    # one training step on the H100: 2e13 matmul FLOPs, 1e11 bytes (200 FLOP/B), 0.1 s measured, floor 0.05 s;
    # and one at half the microbatch, 0.06 s
    e = entries(doc("dense_135m", [point(median=0.1, matmul_flops=2e13, nbytes=1e11, predicted_s=0.05),
                                   point(median=0.06, tokens=16384, matmul_flops=1e13, nbytes=1e11)]))
    fig = roofline_figure(e)
    roof, thr = fig.axes[0], fig.axes[1]
    assert (roof.get_xscale(), roof.get_yscale()) == ("log", "log")
    assert "arithmetic intensity" in roof.get_xlabel() and roof.get_ylabel() == "matmul TFLOP/s"
    measured, floor, small = (c.get_offsets()[0] for c in roof.collections)
    assert tuple(measured) == pytest.approx((200.0, 200.0))  # 2e13 FLOP / 0.1 s = 200 TFLOP/s
    assert tuple(floor) == pytest.approx((200.0, 400.0))  # at the 0.05 s floor
    assert tuple(small) == pytest.approx((100.0, 1e13 / 0.06 / 1e12))  # no prediction: no hollow marker
    ceiling = roof.get_lines()[0]
    xs, ys = ceiling.get_data()
    ridge = 989.4 / 3.35  # H100 SXM bf16 TFLOP/s over TB/s
    assert ridge in list(xs) and max(ys) == pytest.approx(989.4)
    assert "NVIDIA H100" in roof.get_legend().get_texts()[0].get_text()
    (tps,) = thr.get_lines()
    assert list(tps.get_xdata()) == [16384, 32768]
    assert list(tps.get_ydata()) == pytest.approx([16384 / 0.06, 32768 / 0.1])
    assert thr.get_ylabel() == "tokens/s (measured)"
    plt.close(fig)


def test_plot_of_cpu_results_and_of_one_batch_size_say_what_is_missing(recwarn):
    import matplotlib.pyplot as plt

    from tpsbench.report.plot import roofline_figure

    cpu = entries(doc("moe_tiny", [point(median=0.01, matmul_flops=1e9, nbytes=1e7),
                                   point(median=0.02, impl="capacity", matmul_flops=1e9, nbytes=1e7)],
                      gpu=None, device="cpu"))
    fig = roofline_figure(cpu)
    roof, thr = fig.axes[0], fig.axes[1]
    assert "no GPU profile" in roof.get_title() and "floor" not in roof.get_title().split(":")[0]
    assert roof.get_legend() is None and not roof.get_lines()  # no ceilings drawn, no empty legend
    assert not [w for w in recwarn if "legend" in str(w.message).lower()]
    assert not thr.get_lines() and "one microbatch (32,768 tokens)" in thr.texts[0].get_text()
    colors = [tuple(c.get_facecolor()[0]) for c in roof.collections]
    assert len(set(colors)) == 2  # two series, two colours
    plt.close(fig)


def test_plot_refuses_what_it_cannot_draw(tmp_path):
    with pytest.raises(PlotError, match="ending in"):
        plot_results(_two_gpu_docs(), tmp_path / "roof.txt")
    failed = entries(doc("moe_1b", [point(status="oom")]))
    with pytest.raises(PlotError, match="no measured points"):
        plot_results(failed, tmp_path / "roof.png")


# --- GPU idle time ------------------------------------------------------------------------------------
def test_union_length_counts_overlaps_once():
    assert union_length([]) == 0
    assert union_length([(0, 1), (2, 3)]) == 2
    assert union_length([(0, 2), (1, 3), (5, 6)]) == 4  # [0, 3] and [5, 6]
    assert union_length([(4, 5), (0, 10)]) == 10  # nested, unsorted
    with pytest.raises(ValueError):
        union_length([(2, 1)])


def test_idle_summary_arithmetic():
    s = idle_summary(0.75, 1.0, kernels_per_call=10, calls=3)
    assert s.idle_share == pytest.approx(0.25) and s.reason is None
    assert idle_summary(1.1, 1.0).idle_share == 0.0  # profiler cost can push busy past the median
    assert idle_summary(None, 1.0, reason="x") == GpuTime(busy_s=None, idle_share=None, kernels_per_call=None,
                                                          profiled_calls=0, reason="x")


def test_gpu_time_on_the_cpu_is_null_with_the_reason():
    import torch

    s = measure_gpu_time(lambda: None, device=torch.device("cpu"), median_s=0.1)
    assert s.idle_share is None and s.reason is not None and "CPU run" in s.reason


def test_gpu_time_from_a_kernel_timeline(monkeypatch):
    """The CUDA path on a recorded timeline: per call, the union of device intervals (overlaps once),
    CPU-side events ignored, averaged over the calls."""
    import torch
    from torch.autograd import DeviceType

    from tpsbench.bench import gpu_busy

    class Evt:
        def __init__(self, dev, start_us, end_us, annotation=False):
            self.device_type, self.is_user_annotation = dev, annotation
            self.time_range = type("R", (), {"start": start_us, "end": end_us})()

    timelines = iter([
        [Evt(DeviceType.CUDA, 0, 400), Evt(DeviceType.CUDA, 300, 600), Evt(DeviceType.CPU, 0, 900)],  # 600 us
        [Evt(DeviceType.CUDA, 100, 300), Evt(DeviceType.CUDA, 500, 700),
         Evt(DeviceType.CUDA, 100, 700, annotation=True)],  # 400 us: the annotation spans a gap, not work
    ])

    class FakeProfile:
        def __init__(self, activities):
            self._events = next(timelines)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def events(self):
            return self._events

    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)
    monkeypatch.setattr(torch.profiler, "profile", FakeProfile)
    calls = []
    s = gpu_busy.measure_gpu_time(lambda: calls.append(1), device=torch.device("cuda"), median_s=1e-3, calls=2)
    assert len(calls) == 2
    assert s.busy_s == pytest.approx(500e-6)  # (600 + 400) / 2 us
    assert s.idle_share == pytest.approx(0.5)
    assert s.kernels_per_call == pytest.approx(2.0)


def test_gpu_time_survives_a_profiler_failure(monkeypatch):
    import torch

    def broken(*a, **k):
        raise RuntimeError("CUPTI_ERROR_NOT_INITIALIZED")

    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)
    monkeypatch.setattr(torch.profiler, "profile", broken)
    s = measure_gpu_time(lambda: None, device=torch.device("cuda"), median_s=1e-3)
    assert s.idle_share is None and s.reason is not None and "CUPTI_ERROR_NOT_INITIALIZED" in s.reason


def test_unwritable_output_is_one_line(tmp_path, capsys):
    res = tmp_path / "a.json"
    res.write_text(json.dumps(doc("dense_135m", [utilisation_point(**BANDWIDTH)])))
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["compare", str(res), "--markdown", str(blocker / "x.md")]) == 2
    assert main(["plot", str(res), "-o", str(blocker / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "cannot write" in err
