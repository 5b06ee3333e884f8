"""Bounded shares of a cross-GPU speedup (tpsbench.analysis.shares): never outside [0, 100%], and the three
synthetic two-GPU cases of the expected-time issue."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tpsbench.analysis.shares import decompose
from tpsbench.analysis.verdict import speedup_verdict
from tpsbench.cli import main

ratio = st.floats(0.2, 10.0, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(ratio, ratio, ratio)
def test_every_share_is_within_0_and_100_percent(speedup, compute, bandwidth):
    d = decompose(speedup, compute, bandwidth)
    if not d.feasible:
        assert "no mix" in d.text
        return
    for r in (d.bandwidth, d.compute, d.not_scaling):
        assert 0.0 <= r.low <= r.high <= 1.0
    # some point of the ranges reproduces the speedup: b/B + c/C + n = 1/S with b + c + n = 1
    assert d.not_scaling.low <= 1 - d.bandwidth.low - d.compute.low + 1e-9
    assert "-" not in d.text.split("%")[0].split()[-1] or "0-" in d.text  # no negative share printed


def test_a_speedup_equal_to_the_bandwidth_ratio_reads_as_bandwidth():
    d = decompose(1.60, 3.0, 1.60)  # e.g. a GPU with 3x the compute and 1.6x the bandwidth
    assert d.single == "bandwidth" and "the simplest reading: bandwidth" in d.text


def test_a_speedup_below_both_ratios_states_a_minimum_non_scaling_share():
    d = decompose(1.2, 2.0, 1.6)
    # at best everything else scales with the larger ratio: 1/1.2 = (1 - n)/2.0 + n  ->  n = 2/3 ... with the
    # bandwidth ratio as the best the remaining time can do: 1/1.2 = (1 - n)/1.6 + n  ->  n = 5/9
    assert d.not_scaling.low == pytest.approx(5 / 9, rel=1e-6)
    assert "at least 56% of the step does not scale" in d.text


def test_h100_to_h200_cannot_tell_compute_from_host_time():
    # equal compute, 1.43x bandwidth; a speedup of 1x is what compute-bound and host-bound time both predict
    d = decompose(1.0, 1.0, 1.43)
    assert set(d.indistinguishable) == {"compute", "not scaling (host, launches, syncs)"}
    assert "cannot tell their shares apart" in d.text and "GPU idle time" in d.text
    assert d.bandwidth.high == pytest.approx(0.0, abs=1e-9)


def test_the_verdict_line_no_longer_prints_unbounded_shares():
    f = speedup_verdict(0.9, 2.0, 1.5)  # slower on the faster GPU: outside every mix
    assert "no mix" in f.evidence and f.values["shares"]["bandwidth_share"] is None


def test_explain_never_prints_a_share_outside_0_to_100(tmp_path, capsys):
    csv = tmp_path / "m.csv"
    csv.write_text("model,gpu,tokens_per_s,impl\nmoe_1b,h100,140462,grouped\nmoe_1b,h200,150000,grouped\n"
                   "moe_1b,rtx5090,30000,grouped\n")
    assert main(["explain", "--measured", str(csv), "--json"]) == 0
    import json

    doc = json.loads(capsys.readouterr().out)
    for s in doc["speedups"]:
        for key in ("bandwidth_share", "compute_share", "not_scaling_share"):
            r = s["values"]["shares"][key]
            assert r is None or 0.0 <= r[0] <= r[1] <= 1.0
        assert len(s["limits"]) == 2
