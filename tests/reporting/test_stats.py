"""The significance rule on numbers whose answers are printed in statistics tables."""

import math

import pytest

from gptlab.reporting.stats import mean_std, t_quantile, t_sf, welch


@pytest.mark.parametrize("df, critical", [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (5, 2.571),
                                          (10, 2.228), (30, 2.042), (120, 1.980)])
def test_two_sided_5_percent_critical_values_of_the_t_table(df, critical):
    assert 2 * t_sf(critical, df) == pytest.approx(0.05, abs=2e-4)
    assert t_quantile(0.975, df) == pytest.approx(critical, abs=1e-3)


def test_closed_forms_of_one_and_two_degrees_of_freedom():
    for t in (0.3, 1.0, 2.5, 10.0):
        assert t_sf(t, 1) == pytest.approx(0.5 - math.atan(t) / math.pi, abs=1e-12)  # Cauchy
        assert t_sf(t, 2) == pytest.approx(0.5 * (1 - t / math.sqrt(2 + t * t)), abs=1e-12)


def test_welch_reproduces_the_textbook_example():
    """Welch's t-test, Wikipedia's example 1: t = -2.46, df = 25.0, p = 0.021."""
    a1 = [27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4]
    a2 = [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4]
    result = welch(a1, a2)
    assert result.t == pytest.approx(-2.46, abs=0.005)
    assert result.df == pytest.approx(25.0, abs=0.05)
    assert result.p == pytest.approx(0.021, abs=0.0005)
    assert result.significant and result.mark() == "*"


def test_a_difference_within_the_noise_is_not_significant():
    result = welch([3.30, 3.34, 3.28], [3.31, 3.29, 3.33])
    assert not result.significant and result.mark() == "not significant"
    assert welch([3.30], [3.31, 3.29]) is None  # one seed: no spread, no test
    assert mean_std([3.0]) == (3.0, None)


def test_a_clear_difference_is_significant_at_one_percent():
    result = welch([3.10, 3.11, 3.09], [3.30, 3.31, 3.29])
    assert result.delta == pytest.approx(-0.2) and result.mark() == "**"
    # equal spreads and sizes: Welch's df is 2(n-1) = 4, and the 95% interval uses t = 2.776
    assert result.df == pytest.approx(4) and result.ci95() == pytest.approx(2.776 * result.se, rel=1e-3)
