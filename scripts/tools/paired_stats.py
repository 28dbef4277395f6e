# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
Paired statistics of a comparison: two settings run with the same seeds give one difference per seed; this module
summarises those differences (mean, standard deviation, confidence intervals, a paired test), all computed by SciPy:

- the paired bootstrap confidence interval of the mean difference (:func:`scipy.stats.bootstrap`, ``paired=True``,
  BCa, a fixed random generator so that a table is reproducible);
- the Student-t confidence interval and p-value of the paired t-test (:func:`scipy.stats.ttest_rel`), for reference;
- the Wilcoxon signed-rank test (:func:`scipy.stats.wilcoxon`, two-sided, SciPy's defaults: exact for small samples
  without ties, zero differences left out), the paired test the comparison reports.

Few seeds make every one of these weak: with 5 pairs the smallest two-sided exact Wilcoxon p-value is 2/32 = 0.0625
(it takes at least 6 pairs to go below 0.05), and a bootstrap interval from 5 values is narrower than it should be.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

__all__ = ["PairedDifference", "paired_difference"]


@dataclass(frozen=True)
class PairedDifference:
    """
    Summary of the differences ``treated - reference`` over pairs.

    Attributes:
        n: number of pairs used (pairs with a missing value are left out).
        mean: mean difference.
        sd: sample standard deviation of the differences (ddof 1; NaN below 2 pairs).
        ci_low, ci_high: paired bootstrap confidence interval of the mean difference (BCa).
        t_ci_low, t_ci_high: Student-t confidence interval of the mean difference (paired t-test).
        t_p_value: two-sided p-value of the paired t-test.
        p_value: two-sided p-value of the Wilcoxon signed-rank test.
        confidence_level: level of both intervals.
    """

    n: int
    mean: float
    sd: float
    ci_low: float
    ci_high: float
    t_ci_low: float
    t_ci_high: float
    t_p_value: float
    p_value: float
    confidence_level: float

    def as_dict(self) -> dict:
        return asdict(self)


def _pairs(treated: Sequence[float | None], reference: Sequence[float | None]) -> tuple[list[float], list[float]]:
    """The pairs where both values are known (not None, not NaN)."""
    if len(treated) != len(reference):
        raise ValueError(f"paired values need equal lengths, got {len(treated)} and {len(reference)}.")

    def known(v: float | None) -> bool:
        return v is not None and not math.isnan(float(v))

    kept = [(float(a), float(b)) for a, b in zip(treated, reference) if known(a) and known(b)]
    return [a for a, _ in kept], [b for _, b in kept]


def paired_difference(
    treated: Sequence[float | None],
    reference: Sequence[float | None],
    confidence_level: float = 0.95,
    n_resamples: int = 9999,
    seed: int = 0,
) -> PairedDifference:
    """
    Mean of ``treated[i] - reference[i]`` with its confidence intervals and paired tests (see the module's notes).

    Pairs where either value is None or NaN (e.g. an AUC undefined on a split) are left out. Special cases, where
    SciPy's routines are undefined or warn: no pair gives NaN everywhere; one pair gives its difference as the mean
    and NaN intervals and p-values; differences that are all equal give the interval ``[d, d]`` and, when they are
    all zero, p-values of 1.

    Args:
        treated: one value per pair (e.g. per seed) for the setting under test.
        reference: the matching values of the reference setting.
        confidence_level: level of the confidence intervals.
        n_resamples: bootstrap resamples.
        seed: seed of the bootstrap's random generator (the same inputs always give the same interval).
    """
    import numpy as np
    from scipy import stats

    a, b = _pairs(treated, reference)
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    d = x - y
    n, nan = len(d), math.nan
    if n == 0:
        return PairedDifference(0, nan, nan, nan, nan, nan, nan, nan, nan, confidence_level)
    mean = float(d.mean())
    if n == 1:
        return PairedDifference(1, mean, nan, nan, nan, nan, nan, nan, nan, confidence_level)
    sd = float(d.std(ddof=1))
    if np.all(d == d[0]):  # no spread: the intervals are the point itself; SciPy's routines would divide by zero
        p = 1.0 if d[0] == 0 else float(stats.wilcoxon(d).pvalue)
        t_p = 1.0 if d[0] == 0 else 0.0
        return PairedDifference(n, mean, sd, mean, mean, mean, mean, t_p, p, confidence_level)

    def mean_difference(u, v, axis=-1):
        return np.mean(u - v, axis=axis)

    interval = None
    for method in ("BCa", "percentile"):  # BCa can be undefined on very few pairs; fall back to the percentile one
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = stats.bootstrap(
                (x, y),
                mean_difference,
                paired=True,
                vectorized=True,
                confidence_level=confidence_level,
                n_resamples=n_resamples,
                method=method,
                rng=np.random.default_rng(seed),
            )
        interval = result.confidence_interval
        if not (math.isnan(interval.low) or math.isnan(interval.high)):
            break
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. SciPy's note that ties make it use the normal approximation
        p_value = float(stats.wilcoxon(x, y).pvalue)
    t_test = stats.ttest_rel(x, y)
    t_interval = t_test.confidence_interval(confidence_level)
    return PairedDifference(
        n=n,
        mean=mean,
        sd=sd,
        ci_low=float(interval.low),
        ci_high=float(interval.high),
        t_ci_low=float(t_interval.low),
        t_ci_high=float(t_interval.high),
        t_p_value=float(t_test.pvalue),
        p_value=p_value,
        confidence_level=confidence_level,
    )
