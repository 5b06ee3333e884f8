"""Calibration arithmetic, documents and their use as roofline ceilings; the GPU-only command refuses on the CPU."""

import json
from dataclasses import replace

import pytest
import torch
from calibration_factory import calibration_doc

from tpsbench.bench.calibrate import calibrate_bandwidth, calibrate_matmul, matmul_tflops, stream_gbs
from tpsbench.bench.timing import TimingConfig
from tpsbench.cli import main
from tpsbench.profiles import load_profile
from tpsbench.report.calibration import calibration_table
from tpsbench.results.calibration import CalibrationError, best_ceilings, parse_calibration

QUICK = TimingConfig(warmup=1, min_reps=3, min_time_s=0.0)


def test_rates():
    # hand-computed: a 4096^3 matmul is 137,438,953,472 FLOPs; in 1 ms that is 137.44 TFLOP/s
    assert matmul_tflops(4096, 4096, 4096, 1e-3) == pytest.approx(137.438953472)
    # a copy of two 1 GiB arrays (1,073,741,824 B read and as many written) in 1 ms: 2,147.48 GB/s; a triad
    # touches three arrays: 3,221.23 GB/s
    assert stream_gbs(1 << 28, 4, 2, 1e-3) == pytest.approx(2147.483648)
    assert stream_gbs(1 << 28, 4, 3, 1e-3) == pytest.approx(3221.225472)


def _doc(**kw: float | None) -> dict:
    return calibration_doc(**kw)  # type: ignore[arg-type]


def test_best_ceilings_take_the_best_large_copy():
    doc = parse_calibration(_doc(), "cal")
    best = best_ceilings(doc.matmul, doc.bandwidth)
    assert (best.bf16_tflops, best.fp32_tflops, best.copy_gbs) == (780.0, 51.0, 3010.0)
    no_cupy = parse_calibration(_doc(cupy_copy=None), "cal")
    assert best_ceilings(no_cupy.matmul, no_cupy.bandwidth).copy_gbs == 2950.0  # CuPy missing: torch's, no guess


def test_wrong_schema():
    with pytest.raises(CalibrationError, match="schema"):
        parse_calibration({"schema": "x"}, "cal.json")


def test_a_version_1_file_is_read_through_its_upgrade():
    doc = parse_calibration({**{k: v for k, v in _doc().items() if k != "provenance"},
                             "schema": "tpsbench.calibration/1", "git_commit": "abc123"}, "old.json")
    assert doc.provenance.v1_git_commit == "abc123" and doc.gemm_sweep is None


def test_predict_with_calibrated_ceilings(tmp_path, capsys):
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(_doc()))
    assert main(["predict", "--gpu", "h100_sxm", "--model", "moe_1b", "--ceilings", "calibrated",
                 "--calibration", str(path), "--json"]) == 0
    ceil = json.loads(capsys.readouterr().out)["predictions"][0]["ceilings"]
    assert ceil["source"] == "calibrated"
    assert ceil["matmul_tflops"] == pytest.approx(780.0) and ceil["bandwidth_gbs"] == pytest.approx(3010.0)


def test_another_gpus_calibration_is_refused(tmp_path, capsys):
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(_doc()))  # an H100's ceilings
    assert main(["predict", "--gpu", "rtx5090", "--model", "moe_1b", "--ceilings", "calibrated",
                 "--calibration", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "calibrates 'h100_sxm', not rtx5090" in err and len(err.splitlines()) == 1


def test_calibrated_without_a_file_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["predict", "--gpu", "h100_sxm", "--model", "moe_1b", "--ceilings", "calibrated"]) == 2
    err = capsys.readouterr().err.strip()
    assert "run `tpsbench calibrate`" in err and len(err.splitlines()) == 1


def test_calibrate_refuses_without_gpu(capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main(["calibrate"]) == 2
    assert "none is present" in capsys.readouterr().err


def test_matmul_and_bandwidth_sweeps_run_on_the_cpu():
    mm = calibrate_matmul(torch.device("cpu"), QUICK, [(64, 64, 64), (128, 64, 32)], ["fp32"])
    assert mm["fp32"].best_shape in ([64, 64, 64], [128, 64, 32])
    assert mm["fp32"].best_tflops == max(p.tflops for p in mm["fp32"].points) > 0
    bw = calibrate_bandwidth(torch.device("cpu"), QUICK, large_bytes=1 << 22, l2_bytes=1 << 16)
    large = bw["large"]
    assert large.torch.copy is not None and large.torch.copy.gbs > 0
    assert large.torch.triad is not None and large.torch.triad.gbs > 0
    assert large.cupy.copy is None and large.cupy.reason  # no GPU: why, not a number


def test_calibration_table_renders():
    table = calibration_table(parse_calibration(_doc(), "cal"), load_profile("h100_sxm"))
    assert len(table.rows) == 4 + 2 * 2 * 2 + 1


def test_sampler_overhead_is_the_median_paired_ratio():
    from tpsbench.bench.calibrate import overhead_from_pairs

    # windows drift from 1.0 to 1.3 ms (clocks), the sampler adds 1% to each: the pairing removes the drift
    without = [1.0e-3, 1.1e-3, 1.2e-3, 1.3e-3]
    with_ = [t * 1.01 for t in without]
    out = overhead_from_pairs(without, with_)
    assert out.overhead_fraction == pytest.approx(0.01)
    assert out.min_fraction == pytest.approx(0.01) and out.max_fraction == pytest.approx(0.01)
    with pytest.raises(ValueError, match="same number"):
        overhead_from_pairs([1.0], [])


def test_shape_churn_times_new_and_repeated_matmul_shapes_on_the_cpu():
    from tpsbench.bench.shape_churn import SAME_ROWS, shape_churn

    seen = []
    real_matmul = torch.matmul
    with pytest.MonkeyPatch.context() as mp:  # the shapes the matmuls really got, not only the planned rows
        mp.setattr(torch, "matmul", lambda a, b: seen.append((tuple(a.shape), tuple(b.shape))) or real_matmul(a, b))
        churn = shape_churn(torch.device("cpu"), calls=4, reps=2)
    fprop_rows = [a[0] for a, b in seen if b == (1152, 576)]
    assert sorted(fprop_rows[1:]).count(SAME_ROWS) == 8 and len(set(fprop_rows)) == 1 + 8  # 8 new, all distinct
    assert {a[1] for a, b in seen if b[0] != 1152} == set(churn.new_rows[4:8] + churn.new_rows[12:16]) | {SAME_ROWS}
    assert len(churn.new_rows) == 4 * 2 * 2  # calls x reps x two layouts, every one a row count not used before
    assert len(set(churn.new_rows)) == len(churn.new_rows) and SAME_ROWS not in churn.new_rows
    assert all(m % 2 and m & (m - 1) for m in churn.new_rows)  # odd, so never a power of two
    record = churn.record()
    assert set(record.host_new_shape_extra_s) == {"fprop", "wgrad"}
    assert all(len(v) == 2 and min(v) > 0 for v in record.new_samples_s.values())
    assert record.host_new_shape_extra_s["fprop"] == pytest.approx(
        sorted(record.new_samples_s["fprop"])[0] / 2 + sorted(record.new_samples_s["fprop"])[1] / 2
        - record.host_same_shape_s["fprop"])
    doc = replace(parse_calibration(_doc(), "cal"), shape_churn=record)
    assert len(calibration_table(doc, load_profile("h100_sxm")).rows) == 4 + 2 * 2 * 2 + 1 + 2
