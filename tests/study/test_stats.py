"""Intervals of unift.study.stats against hand-computed values and against their own promises."""

import numpy as np
import pytest

from unift.study.stats import bootstrap_interval, paired, summary, t_interval, t_quantile


def test_t_interval_by_hand():
    low, high = t_interval([0.2, 0.3, 0.4])
    half = 4.303 * 0.1 / np.sqrt(3)  # sd of (0.2, 0.3, 0.4) is 0.1
    assert low == pytest.approx(0.3 - half) and high == pytest.approx(0.3 + half)
    assert t_interval([0.5]) is None
    assert t_quantile(2) == 4.303 and t_quantile(100) == 1.96


def test_bootstrap_covers_the_mean_and_shrinks_with_problems():
    rng = np.random.default_rng(1)
    small = (rng.random((3, 50)) < 0.3).astype(float)
    large = (rng.random((3, 2000)) < 0.3).astype(float)
    lo_s, hi_s = bootstrap_interval(small, resamples=2000)
    lo_l, hi_l = bootstrap_interval(large, resamples=2000)
    assert lo_s <= small.mean() <= hi_s and lo_l <= large.mean() <= hi_l
    assert hi_l - lo_l < (hi_s - lo_s) / 3
    # seeds that solve the same problems add nothing: the binomial interval of 2000 problems
    same = np.repeat(large[:1], 3, axis=0)
    lo, hi = bootstrap_interval(same, resamples=2000)
    p = same.mean()
    assert (hi - lo) / 2 == pytest.approx(1.96 * np.sqrt(p * (1 - p) / 2000), rel=0.15)


def test_bootstrap_of_a_constant_is_a_point():
    assert bootstrap_interval(np.ones((2, 10)), resamples=100) == (1.0, 1.0)


def test_paired_difference_is_signed_and_judged():
    base = np.zeros((3, 100))
    better = np.zeros((3, 100))
    better[:, :30] = 1.0
    p = paired(better, base)
    assert p["mean"] == pytest.approx(0.3) and p["verdict"] == "higher"
    assert paired(base, better)["verdict"] == "lower"
    same = paired(base, base)
    assert same["verdict"] == "not distinguishable" and same["ci_bootstrap"] == [0.0, 0.0]
    with pytest.raises(ValueError):
        paired(np.zeros((2, 3)), np.zeros((3, 3)))


def test_summary_lists_seeds():
    s = summary(np.array([[1, 0, 0, 0], [1, 1, 0, 0]]))
    assert s["per_seed"] == [0.25, 0.5] and s["mean"] == 0.375 and s["seeds"] == 2 and s["problems"] == 4
