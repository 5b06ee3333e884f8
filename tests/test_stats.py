"""Timing statistics on hand-fed samples, exact."""

import pytest

from tpsbench.bench.stats import quantile, summarize


def test_quantiles_type7():
    s = [1.0, 2.0, 3.0, 4.0]
    assert quantile(s, 0.0) == 1.0
    assert quantile(s, 0.25) == 1.75  # pos 0.75 between 1 and 2
    assert quantile(s, 0.5) == 2.5
    assert quantile(s, 0.75) == 3.25
    assert quantile(s, 1.0) == 4.0


def test_summary_exact_values():
    s = summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (s.n, s.median, s.q1, s.q3, s.min, s.max, s.mean) == (5, 3.0, 2.0, 4.0, 1.0, 5.0, 3.0)
    assert s.stdev == pytest.approx(2.5 ** 0.5)  # sample variance 10/4
    assert s.mad == 1.0  # |x-3| = 2,2,0,1,1 -> median 1
    assert s.outliers == []
    assert s.iqr == 2.0


def test_outlier_flagged_not_dropped():
    samples = [10.0, 10.2, 9.9, 10.1, 10.0, 10.3, 9.8, 30.0]
    s = summarize(samples)
    assert s.n == 8 and s.max == 30.0  # kept
    assert s.outliers == [7]  # M = 0.6745 * (30 - 10.05) / 0.15 = 89.7 > 3.5
    assert s.median == pytest.approx(10.05)
    assert s.mad == pytest.approx(0.15)


def test_mad_zero_flags_nothing():
    s = summarize([1.0, 1.0, 1.0, 5.0])
    assert s.mad == 0.0 and s.outliers == []


def test_single_sample():
    s = summarize([2.0])
    assert (s.median, s.q1, s.q3, s.stdev) == (2.0, 2.0, 2.0, None)


def test_empty_rejected():
    with pytest.raises(ValueError):
        summarize([])
