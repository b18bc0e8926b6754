"""The statistics of a comparison over seeds: mean, sample standard deviation, and Welch's
t-test (Welch 1947) of the difference between two variants' means.

Welch's test does not assume the two variants have the same seed-to-seed spread. Its
p-value comes from Student's t distribution with the Welch-Satterthwaite degrees of
freedom, computed through the regularized incomplete beta function (Numerical Recipes
§6.4, the continued fraction evaluated by Lentz's method): no SciPy needed.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

SIGNIFICANCE = 0.05  # a difference is called significant below this two-sided p-value


@dataclass(frozen=True)
class Comparison:
    """Variant minus baseline."""
    delta: float  # difference of the means
    se: float  # its standard error
    df: float  # Welch-Satterthwaite degrees of freedom
    t: float
    p: float  # two-sided

    @property
    def significant(self) -> bool:
        return self.p < SIGNIFICANCE

    def mark(self) -> str:
        """'**' p < 0.01, '*' p < 0.05, else 'not significant'."""
        return "**" if self.p < 0.01 else "*" if self.p < SIGNIFICANCE else "not significant"

    def ci95(self) -> float:
        """Half-width of the 95% confidence interval of the difference."""
        return t_quantile(0.975, self.df) * self.se


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """(mean, sample standard deviation); the deviation is None for a single value."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def welch(variant: list[float], baseline: list[float]) -> Comparison | None:
    """Welch's t-test of mean(variant) - mean(baseline); None when either side has fewer than
    two values (no spread to compare the difference with)."""
    if len(variant) < 2 or len(baseline) < 2:
        return None
    (m1, s1), (m2, s2) = mean_std(variant), mean_std(baseline)
    v1, v2 = s1 ** 2 / len(variant), s2 ** 2 / len(baseline)
    delta, se = m1 - m2, math.sqrt(v1 + v2)
    if se == 0:  # identical runs: a difference is certain, no difference is certainly none
        return Comparison(delta, 0.0, math.inf, math.copysign(math.inf, delta) if delta else 0.0,
                          0.0 if delta else 1.0)
    df = (v1 + v2) ** 2 / (v1 ** 2 / (len(variant) - 1) + v2 ** 2 / (len(baseline) - 1))
    t = delta / se
    return Comparison(delta, se, df, t, 2 * t_sf(abs(t), df))


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with df degrees of freedom, t >= 0."""
    if math.isinf(df):
        return 0.5 * math.erfc(t / math.sqrt(2))
    return 0.5 * betainc(df / 2, 0.5, df / (df + t * t))


def t_quantile(q: float, df: float) -> float:
    """The t with P(T <= t) = q (q in (0.5, 1)), by bisection on t_sf."""
    lo, hi = 0.0, 1e6
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if 1 - t_sf(mid, df) < q else (lo, mid)
    return (lo + hi) / 2


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):  # the continued fraction converges fast here; else use the symmetry
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, 1 - x) / b


def _beta_fraction(a: float, b: float, x: float, tiny: float = 1e-300) -> float:
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 500):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return result
