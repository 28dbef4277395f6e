# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""Paired statistics on fixed inputs with answers worked out by hand."""

from __future__ import annotations

import math

import pytest

from scripts.tools.paired_stats import paired_difference


def test_all_positive_differences_give_the_smallest_exact_wilcoxon_p():
    # differences 1..5, all positive: W- = 0, the one most extreme of 2^5 sign patterns each side -> p = 2/32
    result = paired_difference([1, 2, 3, 4, 5], [0, 0, 0, 0, 0])
    assert result.n == 5 and result.mean == 3.0 and result.sd == pytest.approx(math.sqrt(2.5))
    assert result.p_value == pytest.approx(2 / 32)
    # Student t: 3 +- t(0.975, 4) * sqrt(2.5 / 5), t(0.975, 4) = 2.776445
    assert result.t_ci_low == pytest.approx(3 - 2.776445 * math.sqrt(0.5), abs=1e-5)
    assert result.t_ci_high == pytest.approx(3 + 2.776445 * math.sqrt(0.5), abs=1e-5)
    assert result.ci_low < result.mean < result.ci_high and 1 <= result.ci_low and result.ci_high <= 5


def test_one_negative_difference():
    # differences 1, 2, -3, 4, 5: W- = 3; sign patterns with a negative rank sum <= 3: {}, {1}, {2}, {3}, {1,2}
    result = paired_difference([1, 2, 0, 4, 5], [0, 0, 3, 0, 0])
    assert result.mean == pytest.approx(1.8)
    assert result.p_value == pytest.approx(2 * 5 / 32)
    assert result.ci_low < result.mean < result.ci_high


def test_bootstrap_interval_is_reproducible_and_paired():
    treated = [0.81, 0.84, 0.86, 0.80, 0.83]
    reference = [0.79, 0.85, 0.82, 0.78, 0.80]
    first, second = paired_difference(treated, reference), paired_difference(treated, reference)
    assert first == second
    assert first.ci_low <= first.mean <= first.ci_high
    # pairing matters: shifting both settings of a pair by the same amount changes nothing
    shifted = paired_difference([t + s for t, s in zip(treated, (0.1, -0.2, 0.3, 0, 0.05))],
                                [r + s for r, s in zip(reference, (0.1, -0.2, 0.3, 0, 0.05))])  # fmt: skip
    assert shifted.mean == pytest.approx(first.mean)
    assert shifted.ci_low == pytest.approx(first.ci_low) and shifted.ci_high == pytest.approx(first.ci_high)


def test_zero_and_constant_differences():
    zero = paired_difference([0.7, 0.8, 0.9], [0.7, 0.8, 0.9])
    assert (zero.mean, zero.sd, zero.ci_low, zero.ci_high, zero.p_value, zero.t_p_value) == (0, 0, 0, 0, 1, 1)
    constant = paired_difference([2, 3, 4, 5, 6], [1, 2, 3, 4, 5])
    assert constant.ci_low == constant.ci_high == constant.mean == 1.0
    assert constant.p_value == pytest.approx(2 / 32)


def test_missing_values_and_small_samples():
    result = paired_difference([1.0, None, 3.0, float("nan")], [0.0, 1.0, 1.0, 0.0])
    assert result.n == 2 and result.mean == pytest.approx(1.5)
    one = paired_difference([1.0], [0.5])
    assert one.n == 1 and one.mean == 0.5 and math.isnan(one.ci_low) and math.isnan(one.p_value)
    none = paired_difference([None], [0.5])
    assert none.n == 0 and math.isnan(none.mean)
    with pytest.raises(ValueError, match="equal lengths"):
        paired_difference([1, 2], [1])
