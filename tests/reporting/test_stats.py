"""The significance rule, the family-wise correction and the resolution, on numbers whose answers
are printed in statistics tables or worked out by hand here."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from gptlab.reporting.stats import (Comparison, adjust, format_p, holm, mean_std, minimum_detectable_effect, pooled_std,
                                    power, seeds_needed, t_quantile, t_sf, welch)


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


def test_holm_on_the_worked_example():
    """Four hypotheses with p = 0.01, 0.04, 0.03, 0.005 at alpha 0.05 (Wikipedia's example of the
    Holm-Bonferroni method): sorted, 0.005 x 4 = 0.02 and 0.01 x 3 = 0.03 are below 0.05, 0.03 x 2 =
    0.06 is not, and the step-down stops there: H4 and H1 are rejected, H3 and H2 are not (0.04 x 1 is
    raised to 0.06 so that an adjusted p never falls below the one before it)."""
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    marks = [c.mark() for c in adjust([Comparison(0.1, 0.01, 4, 1.0, p) for p in (0.01, 0.04, 0.03, 0.005)])]
    assert marks == ["*", "not significant", "not significant", "*"]
    # an adjusted p is capped at 1; a single comparison is left as it is
    assert holm([0.4, 0.5, 0.9]) == pytest.approx([1.0, 1.0, 1.0]) and holm([0.03]) == [0.03]


def test_the_mark_follows_the_adjusted_p_and_an_untested_row_stays_out_of_the_family():
    comparisons = adjust([Comparison(-0.1, 0.01, 4, -5.0, 0.004), None, Comparison(0.1, 0.01, 4, 5.0, 0.03)])
    assert comparisons[1] is None
    assert [c.family for c in (comparisons[0], comparisons[2])] == [2, 2]
    assert comparisons[0].p_adjusted == pytest.approx(0.008) and comparisons[0].mark() == "**"
    assert comparisons[2].p == 0.03 and comparisons[2].p_adjusted == pytest.approx(0.03)
    # with five comparisons, a raw p of 0.023 (the README's old swiglu row) is not significant
    five = adjust([Comparison(-0.03, 0.01, 2, -3.0, p) for p in (0.023, 0.4, 0.5, 0.6, 0.7)])
    assert five[0].p_adjusted == pytest.approx(0.115) and five[0].mark() == "not significant"


@pytest.mark.parametrize("d, n", [(0.2, 394), (0.5, 64), (0.8, 26), (1.0, 17)])
def test_seeds_needed_matches_the_published_sample_sizes(d, n):
    """Two-sided two-sample t-test, alpha 0.05, power 0.8: G*Power's sample sizes per group for
    Cohen's effect sizes (Faul et al. 2007; Cohen 1988, table 2.4.1, within one)."""
    assert seeds_needed(d, 1.0, 0.05) == n
    assert seeds_needed(7 * d, 7.0, 0.05) == n  # only delta / sd matters


def test_the_minimum_detectable_effect_is_detected_four_times_in_five():
    """Simulated: at the minimum detectable effect, Welch's tests (scipy's, as the report runs them)
    of 3 seeds a side at alpha 0.01 reject in 80% of 40,000 trials (binomial standard error 0.002);
    at half of it, far fewer. Student's power formula would put the effect where Welch's test
    rejects in about two trials of three."""
    sd, n, alpha = 0.02, 3, 0.01
    mde = minimum_detectable_effect(sd, n, alpha)
    rng = np.random.default_rng(0)
    for delta, expected in ((mde, 0.80), (mde / 2, None)):
        a = rng.normal(0.0, sd, (40_000, n))
        b = rng.normal(delta, sd, (40_000, n))
        rejected = np.mean(scipy_stats.ttest_ind(b, a, axis=1, equal_var=False).pvalue < alpha)
        if expected:
            assert rejected == pytest.approx(expected, abs=0.01)
        else:
            assert rejected < 0.4
    assert power(mde, sd, n, alpha) == pytest.approx(0.8, abs=1e-6)
    assert seeds_needed(mde, sd, alpha) == n  # and the two functions agree


def test_welchs_power_at_six_seeds_is_simulated_too():
    sd, n, alpha = 1.0, 6, 0.025
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.0, sd, (40_000, n)), rng.normal(1.5, sd, (40_000, n))
    rejected = np.mean(scipy_stats.ttest_ind(b, a, axis=1, equal_var=False).pvalue < alpha)
    assert power(1.5, sd, n, alpha) == pytest.approx(rejected, abs=0.01)


def test_pooled_std_weights_each_group_by_its_degrees_of_freedom():
    sd, df = pooled_std([[1.0, 3.0], [2.0, 4.0, 6.0], [5.0]])  # variances 2 (df 1) and 4 (df 2)
    assert df == 3 and sd == pytest.approx(math.sqrt((2 + 2 * 4) / 3))
    assert pooled_std([[1.0], [2.0]]) is None


def test_the_interval_drawn_beside_holms_verdict_excludes_zero_exactly_when_the_verdict_is_significant():
    """Each comparison's own 95% interval can clear 0 while Holm's correction says not significant (a figure
    that coloured by one and drew the other read as nearly significant); the drawn interval follows Holm."""
    rng = np.random.default_rng(0)
    disagreements = 0
    for _ in range(300):
        family = [welch(list(rng.normal(rng.normal(0, 0.02), 0.01, 3)), list(rng.normal(0, 0.01, 3)))
                  for _ in range(rng.integers(2, 6))]
        for c in adjust(family):
            assert (abs(c.delta) > c.ci_holm()) == c.significant
            # the interval at the level Holm's step uses, from scipy: half-width = t quantile x standard error
            level = 0.05 * c.p / c.p_adjusted
            assert c.ci_holm() == pytest.approx(scipy_stats.t.ppf(1 - level / 2, c.df) * c.se, rel=1e-9)
            disagreements += (abs(c.delta) > c.ci95()) != c.significant
    assert disagreements > 10  # the plain 95% interval disagrees with the verdict in some families


@pytest.mark.parametrize("p, text", [(0.0497, "0.0497"), (0.0503, "0.050"), (0.012, "0.012"), (0.0099, "0.0099"), (0.04999996, "0.04999996"), (0.05, "0.050"),
                                     (0.2, "0.200"), (0.001, "0.001")])
def test_a_p_value_near_a_threshold_shows_the_digits_that_decide_it(p, text):
    assert format_p(p) == text


@pytest.mark.parametrize("alpha, welch_power", [(0.05, 0.696), (0.025, 0.648)])
def test_students_80_percent_effect_is_detected_less_often_by_welchs_test(alpha, welch_power):
    """What the docs say: the difference Student's formula (df 2n - 2 throughout) detects 80% of the time at 3 seeds
    is detected 70% of the time by Welch's test at alpha 0.05, 65% at 0.025 (and 200,000 simulated tests agree)."""
    def student(d):
        nc, c = d / math.sqrt(2 / 3), scipy_stats.t.ppf(1 - alpha / 2, 4)
        return scipy_stats.nct.sf(c, 4, nc) + np.nan_to_num(scipy_stats.nct.cdf(-c, 4, nc)) - 0.8
    from scipy import optimize
    d = optimize.brentq(student, 0.01, 7)
    assert power(d, 1.0, 3, alpha) == pytest.approx(welch_power, abs=0.002)
