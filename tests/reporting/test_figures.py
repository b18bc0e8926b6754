"""The study figures' computed parts against independent computations."""

import numpy as np
import pytest
from scipy import stats as scipy_stats

from gptlab.reporting.figures import _difference


def test_the_difference_band_carries_both_arms_spread():
    """At each step: the variant's mean minus the baseline's, and the 95% interval of that difference from both
    arms' spread (Welch), not the variant's spread around the baseline's mean."""
    rng = np.random.default_rng(1)
    steps = np.array([0, 5, 10])
    variant, baseline = rng.normal(3.0, 0.02, (4, 3)), rng.normal(3.1, 0.05, (3, 3))
    got_steps, delta, half = _difference((steps, variant), (steps, baseline))
    assert list(got_steps) == [0, 5, 10]
    for j in range(3):
        a, b = variant[:, j], baseline[:, j]
        assert delta[j] == pytest.approx(a.mean() - b.mean(), abs=1e-12)
        result = scipy_stats.ttest_ind(a, b, equal_var=False)
        low, high = result.confidence_interval(0.95)
        assert half[j] == pytest.approx((high - low) / 2, rel=1e-9)


def test_a_single_seed_on_a_side_has_no_band():
    steps = np.array([0, 5])
    _, delta, half = _difference((steps, np.array([[3.0, 2.9]])), (steps, np.array([[3.1, 3.0], [3.2, 3.0]])))
    assert half is None and delta == pytest.approx([-0.15, -0.1])
