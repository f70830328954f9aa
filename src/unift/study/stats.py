"""Intervals for a study's accuracies: the mean over seeds and problems with a 95% interval, and
paired differences between two methods.

`scores` is a (seeds, problems) array of 0/1 (a problem solved or not by the run of that seed);
two methods are paired by seed position and problem. Two intervals are given:

- **bootstrap** (the one the report leads with): 10,000 resamples, each drawing seeds and problems
  independently with replacement (a two-stage bootstrap), the 2.5 and 97.5 percentiles of the
  resampled mean. It counts both sources of chance: which problems were drawn for the test set
  and which seed the training ran with. With 3 seeds the seed stage sees only 3 values, so the
  interval is, if anything, narrow on the seed side.
- **t over seeds**: mean of the per-seed accuracies +- t(0.975, S - 1) x sd / sqrt(S); it sees the
  seed-to-seed spread only (problems fixed), and is wide with 3 seeds (t = 4.30).
"""

from __future__ import annotations

import math

import numpy as np

RESAMPLES = 10_000
# t(0.975, df) for df = 1..30 (two-sided 95%); beyond 30 the normal 1.96 is within 2%
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def t_quantile(df: int) -> float:
    return _T975[df - 1] if df <= len(_T975) else 1.96


def bootstrap_interval(scores: np.ndarray, seed: int = 0, resamples: int = RESAMPLES) -> tuple[float, float]:
    """95% interval of scores.mean(), resampling seeds (rows) and problems (columns)."""
    scores = np.asarray(scores, dtype=np.float64)  # (S, N)
    s, n = scores.shape
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, s, size=(resamples, s))  # (B, S)
    cols = rng.integers(0, n, size=(resamples, n))  # (B, N)
    # mean over the drawn rows and columns = mean over drawn rows of each row's mean over the drawn columns
    means = np.empty(resamples)
    for b in range(resamples):
        means[b] = scores[rows[b]][:, cols[b]].mean()
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def t_interval(per_seed: list[float]) -> tuple[float, float] | None:
    """Mean of the per-seed values +- t x standard error; None for a single seed."""
    k = len(per_seed)
    if k < 2:
        return None
    mean = sum(per_seed) / k
    sd = math.sqrt(sum((x - mean) ** 2 for x in per_seed) / (k - 1))
    half = t_quantile(k - 1) * sd / math.sqrt(k)
    return mean - half, mean + half


def summary(scores: np.ndarray) -> dict:
    """mean, per-seed means, both intervals of a (seeds, problems) 0/1 array."""
    scores = np.asarray(scores, dtype=np.float64)
    per_seed = [float(x) for x in scores.mean(axis=1)]
    return {"mean": float(scores.mean()), "per_seed": per_seed, "ci_bootstrap": list(bootstrap_interval(scores)),
            "ci_t": (list(t) if (t := t_interval(per_seed)) else None), "seeds": scores.shape[0],
            "problems": scores.shape[1]}


def paired(focus: np.ndarray, other: np.ndarray) -> dict:
    """focus minus other, paired by seed and problem: the mean difference with both intervals, and
    whether the bootstrap interval excludes 0."""
    focus, other = np.asarray(focus, dtype=np.float64), np.asarray(other, dtype=np.float64)
    if focus.shape != other.shape:
        raise ValueError(f"paired scores need equal shapes, got {focus.shape} and {other.shape}")
    out = summary(focus - other)
    low, high = out["ci_bootstrap"]
    out["verdict"] = "higher" if low > 0 else "lower" if high < 0 else "not distinguishable"
    return out
