"""The statistics of a comparison over seeds, with scipy.stats doing the distributions.

- Welch's t-test (Welch 1947) of a variant's mean against the baseline's: it does not assume
  the two have the same seed-to-seed spread.
- Holm's step-down correction (Holm 1979) over the comparisons of one table and metric: the
  chance that any of them is called significant when no variant differs stays at alpha.
- Resolution: the minimum detectable effect of Welch's test at n seeds per arm (its power from
  the noncentral t distribution, averaged over Welch's degrees of freedom), and the seeds per arm
  a given difference needs.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, replace

import numpy as np
from scipy import optimize, special
from scipy import stats as scipy_stats

SIGNIFICANCE = 0.05  # family-wise: a difference is called significant below this Holm-adjusted p-value
POWER = 0.8  # the power the resolution is stated at
# the fewest seeds per arm at which a difference is tested at all. With two, each arm's spread rests on one
# degree of freedom (its 95% range spans a factor of 72), so two seeds that agree by chance make any difference
# "significant"; three give each spread two degrees of freedom and Welch's test at least two.
MIN_SEEDS = 3


@dataclass(frozen=True)
class Comparison:
    """Variant minus baseline."""
    delta: float  # difference of the means
    se: float  # its standard error
    df: float  # Welch-Satterthwaite degrees of freedom
    t: float
    p: float  # two-sided, this comparison alone
    p_adjusted: float | None = None  # Holm-adjusted over the table's comparisons of this metric
    family: int = 1  # how many comparisons the adjustment is over

    @property
    def p_family(self) -> float:
        return self.p if self.p_adjusted is None else self.p_adjusted

    @property
    def significant(self) -> bool:
        return self.p_family < SIGNIFICANCE

    def mark(self) -> str:
        """'**' adjusted p < 0.01, '*' < 0.05, else 'not significant'."""
        return "**" if self.p_family < 0.01 else "*" if self.p_family < SIGNIFICANCE else "not significant"

    def ci95(self) -> float:
        """Half-width of the 95% confidence interval of the difference (this comparison alone)."""
        return t_quantile(0.975, self.df) * self.se if self.se else 0.0

    def ci_holm(self) -> float:
        """Half-width of the interval that matches Holm's verdict: this comparison's own interval at
        level 1 - alpha p / p_Holm, which excludes 0 exactly when the Holm-adjusted p is below alpha
        (p < alpha p / p_Holm <=> p_Holm < alpha). Wider than ci95 by the correction's factor; its level
        follows the verdict rather than being a fixed 95%."""
        if not self.se:
            return 0.0
        level = SIGNIFICANCE * self.p / self.p_family if self.p_family > 0 else SIGNIFICANCE
        return t_quantile(1 - level / 2, self.df) * self.se


def format_p(p: float) -> str:
    """A p-value with three decimals, or as many more as it takes to print it on its own side of each threshold
    a mark turns on (0.0497, not 0.050)."""
    for digits in range(3, 10):
        text = f"{p:.{digits}f}"
        if all((float(text) < t) == (p < t) for t in (SIGNIFICANCE, 0.01)):
            return text
    return f"{p:.3g}"


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """(mean, sample standard deviation); the deviation is None for a single value."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def welch(variant: list[float], baseline: list[float]) -> Comparison | None:
    """Welch's t-test of mean(variant) - mean(baseline); None when either side has fewer than
    two values (no spread to compare the difference with)."""
    if len(variant) < 2 or len(baseline) < 2:
        return None
    (m1, s1), (m2, s2) = mean_std(variant), mean_std(baseline)
    delta, se = m1 - m2, math.sqrt(s1 ** 2 / len(variant) + s2 ** 2 / len(baseline))
    if se == 0:  # identical runs: a difference is certain, no difference is certainly none
        return Comparison(delta, 0.0, math.inf, math.copysign(math.inf, delta) if delta else 0.0,
                          0.0 if delta else 1.0)
    result = scipy_stats.ttest_ind_from_stats(m1, s1, len(variant), m2, s2, len(baseline), equal_var=False)
    df = se ** 4 / ((s1 ** 2 / len(variant)) ** 2 / (len(variant) - 1) + (s2 ** 2 / len(baseline)) ** 2 / (len(baseline) - 1))
    return Comparison(delta, se, df, float(result.statistic), float(result.pvalue))


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given: the i-th smallest p is multiplied by
    (m - i + 1), and an adjusted p is never below the one before it in that order."""
    m = len(p_values)
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def adjust(comparisons: list[Comparison | None], family: int | None = None) -> list[Comparison | None]:
    """The comparisons of one family (one table, one metric) with their Holm-adjusted p-values.
    `family`: how many comparisons the table makes, when some of them could not be tested (too
    few seeds): each counts as a hypothesis not rejected (p = 1), so it still raises the bar."""
    tested = [c for c in comparisons if c is not None]
    family = max(family or 0, len(tested))
    adjusted = iter(holm([c.p for c in tested] + [1.0] * (family - len(tested))))
    return [None if c is None else replace(c, p_adjusted=next(adjusted), family=family) for c in comparisons]


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with df degrees of freedom."""
    return float(scipy_stats.t.sf(t, df))


def t_quantile(q: float, df: float) -> float:
    """The t with P(T <= t) = q."""
    return float(scipy_stats.t.ppf(q, df))


def pooled_std(groups: list[list[float]]) -> tuple[float, int] | None:
    """(the seed-to-seed standard deviation pooled over the groups with two values or more, its
    degrees of freedom), or None when no group has two."""
    groups = [g for g in groups if len(g) > 1]
    df = sum(len(g) - 1 for g in groups)
    if not df:
        return None
    return math.sqrt(sum((len(g) - 1) * statistics.variance(g) for g in groups) / df), df


def power(delta: float, sd: float, n: int, alpha: float) -> float:
    """The power of Welch's two-sided test (the one the report runs) with n seeds per arm to detect
    a true difference delta when both arms' seed-to-seed standard deviation is sd.

    With equal arms Welch's statistic is the pooled one, T' = noncentral t with 2n - 2 degrees of
    freedom and noncentrality delta / (sd sqrt(2/n)); only its critical value differs, from t with
    Welch's df = (n - 1) / (B^2 + (1 - B)^2), where B = s1^2 / (s1^2 + s2^2) ~ Beta((n-1)/2, (n-1)/2).
    B is independent of T' (the ratio of two independent chi-squares is independent of their sum),
    so the power is P(|T'| > t_crit(df(B))) averaged over B: Gauss-Jacobi quadrature, whose weight
    is B's density. Student's formula (df 2n - 2 throughout) would overstate it: its 0.80 is 0.70 at 3
    seeds and alpha 0.05, 0.65 at alpha 0.025."""
    nc = abs(delta) / (sd * math.sqrt(2 / n))
    half = (n - 1) / 2
    x, w = special.roots_jacobi(QUADRATURE_NODES, half - 1, half - 1)
    b = (1 + x) / 2
    critical = scipy_stats.t.ppf(1 - alpha / 2, (n - 1) / (b ** 2 + (1 - b) ** 2))
    rejected = scipy_stats.nct.sf(critical, 2 * n - 2, nc) + np.nan_to_num(scipy_stats.nct.cdf(-critical, 2 * n - 2, nc))
    return float(np.dot(w, rejected) / w.sum())


QUADRATURE_NODES = 48  # of the average over Welch's df: equal to adaptive integration to 1e-6 from 2 to 200 seeds


def minimum_detectable_effect(sd: float, n: int, alpha: float, target: float = POWER) -> float:
    """The smallest true difference Welch's test with n seeds per arm (n >= 2) detects
    with probability `target` at level alpha, for seed-to-seed standard deviation sd."""
    if sd == 0:
        return 0.0
    hi = sd
    while power(hi, sd, n, alpha) < target:
        hi *= 2
    return float(optimize.brentq(lambda d: power(d, sd, n, alpha) - target, 0.0, hi, xtol=sd * 1e-9))


def seeds_needed(delta: float, sd: float, alpha: float, target: float = POWER, most: int = 100_000) -> int | None:
    """The fewest seeds per arm (at least 2) at which Welch's test detects a true
    difference delta with probability `target`; None beyond `most`."""
    if sd == 0:
        return 2
    if delta == 0 or power(delta, sd, most, alpha) < target:
        return None
    lo, hi = 1, 2  # power(lo) < target <= power(hi)
    while power(delta, sd, hi, alpha) < target:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if power(delta, sd, mid, alpha) < target else (lo, mid)
    return hi
