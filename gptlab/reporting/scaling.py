"""Does it hold at scale? A ladder's answer: the baseline's loss as a power law of compute over its rungs,

    L(C) = L_inf + A (C / C0)^-alpha            (Kaplan et al. 2020; Hoffmann et al. 2022, eq. 2 in compute)

and what each variant is worth in compute at each rung: its effective compute multiplier, the compute the
baseline's law needs to reach the variant's loss over the compute the variant spent (Marin's "effective compute
speedup"): above 1 the change is worth more compute than it cost. C is the project's own count, FLOPs per token
(gptlab.models.flops) times the tokens trained; C0 is the rungs' geometric mean, for the fit's conditioning.

The interval carries the seed noise and the fit's uncertainty: a parametric bootstrap draws the seed-to-seed std
from its sampling distribution (pooled over every rung and experiment, s * sqrt(df / chi2_df)), each arm's mean
loss at each rung from a normal of that spread over its seeds, refits the law and recomputes the multiplier,
BOOTSTRAP times; the interval is the central LEVEL of those. Its coverage is checked by simulation in the tests
(runs drawn from a known law with a known multiplier). The trend is the multiplier's slope in log C across the
rungs, from the same draws. Extrapolations (to a compute beyond the rungs) are labelled as such.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize

BOOTSTRAP = 1000
LEVEL = 0.90
POOR_R2 = 0.95  # a law explaining less of the spread of the baseline's losses than this is flagged


@dataclass
class Point:
    """One experiment at one rung: its complete seeds' final losses and the compute each spent."""
    rung: str
    experiment: str
    losses: list[float]
    compute: float  # FLOPs a run, the mean over its seeds (they train the same tokens)
    flops_per_second: float | None = None  # achieved: FLOPs per token x tokens per second, the mean over seeds
    device: str = ""

    @property
    def loss(self) -> float:
        return statistics.fmean(self.losses)


@dataclass
class Law:
    l_inf: float
    log_a: float
    alpha: float
    c0: float
    free: int  # parameters fitted (3, or fewer where pinned)
    points: int
    pinned: dict = field(default_factory=dict)  # {"L_inf": value, "alpha": value} where given, not fitted
    r2: float | None = None
    residuals: list[float] = field(default_factory=list)
    flag: str = ""

    def loss(self, compute):
        return self.l_inf + math.exp(self.log_a) * (np.asarray(compute) / self.c0) ** -self.alpha

    def compute(self, loss: float) -> float:
        """The compute at which the law reaches `loss`; inf at or below its floor L_inf."""
        if loss <= self.l_inf:
            return math.inf
        return self.c0 * ((loss - self.l_inf) / math.exp(self.log_a)) ** (-1 / self.alpha)


class FitError(ValueError):
    """The law cannot be fitted as asked; the message says why and what to do."""


def fit_law(compute: list[float], loss: list[float], l_inf: float | None = None, alpha: float | None = None) -> Law:
    """The least-squares fit of L(C) = L_inf + A (C/C0)^-alpha through the points; l_inf and/or alpha pinned
    where given. Fewer points than free parameters is refused."""
    c, y = np.asarray(compute, float), np.asarray(loss, float)
    free = 3 - (l_inf is not None) - (alpha is not None)
    if len(c) < free:
        raise FitError(f"{len(c)} rung(s) for a law of {free} free parameter(s) (L_inf, A, alpha): add rungs, or pin "
                       f"L_inf and/or alpha")
    c0 = float(np.exp(np.mean(np.log(c))))
    x = np.log(c / c0)
    if l_inf is not None and alpha is not None:
        log_a = float(np.mean(np.log(np.maximum(y - l_inf, 1e-12)) + alpha * x))
        law = Law(l_inf, log_a, alpha, c0, free, len(c))
    elif l_inf is not None:  # log(L - L_inf) = log A - alpha x: a line
        if np.any(y <= l_inf):
            raise FitError(f"a loss at or below the pinned L_inf={l_inf:g}: pin it lower")
        slope, intercept = np.polyfit(x, np.log(y - l_inf), 1)
        law = Law(l_inf, float(intercept), float(-slope), c0, free, len(c))
    else:
        def residuals(p):
            floor, log_a, a = p if alpha is None else (p[0], p[1], alpha)
            return floor + np.exp(log_a) * np.exp(-a * x) - y
        top = float(y.min())
        start = [0.5 * top, math.log(max(y.max() - 0.5 * top, 1e-6)), 0.3][:3 if alpha is None else 2]
        low, high = [0.0, -50.0, 1e-4][:len(start)], [top - 1e-9, 50.0, 5.0][:len(start)]
        result = optimize.least_squares(residuals, start, bounds=(low, high))
        floor, log_a = result.x[0], result.x[1]
        law = Law(float(floor), float(log_a), float(result.x[2]) if alpha is None else alpha, c0, free, len(c))
    law.pinned = {k: v for k, v in (("L_inf", l_inf), ("alpha", alpha)) if v is not None}
    law.residuals = [float(v) for v in (y - law.loss(c))]
    spread = float(np.sum((y - y.mean()) ** 2))
    law.r2 = 1 - float(np.sum(np.square(law.residuals))) / spread if spread > 0 else None
    if len(c) == free:
        law.flag = (f"{len(c)} rungs for {free} free parameters: the law passes through every point and nothing checks "
                    f"it; add a rung, or pin L_inf or alpha")
    elif law.r2 is not None and law.r2 < POOR_R2:
        law.flag = f"a poor fit (R^2 {law.r2:.3f}): the rungs do not follow one power law of compute"
    return law


@dataclass
class Worth:
    """What one variant is worth at one rung."""
    rung: str
    experiment: str
    compute: float
    multiplier: float
    interval: tuple[float, float]
    wall: float | None = None  # the multiplier times the achieved FLOP/s ratio (variant / baseline)
    beyond_floor: bool = False  # the variant's loss is at or below the law's floor: no compute reaches it
    extrapolated: bool = False  # the baseline's law is read beyond its rungs' losses


@dataclass
class Trend:
    experiment: str
    slope: float  # d log(multiplier) / d log(C)
    interval: tuple[float, float]
    word: str  # grows, shrinks, steady, changes sign
    target: dict | None = None  # the extrapolation to a named compute


@dataclass
class Ladder:
    baseline: str
    law: Law
    worth: list[Worth]
    trends: list[Trend]
    sd: float
    df: int
    points: list[Point]


def pooled(points: list[Point]) -> tuple[float, int]:
    """The seed-to-seed std pooled over every experiment and rung with two seeds or more, and its df."""
    groups = [p.losses for p in points if len(p.losses) > 1]
    df = sum(len(g) - 1 for g in groups)
    if not df:
        raise FitError("no experiment has two seeds at a rung: the seed noise is unknown, and so is any interval; "
                       "train two seeds or more")
    return math.sqrt(sum((len(g) - 1) * statistics.variance(g) for g in groups) / df), df


def analyse(points: list[Point], baseline: str, l_inf: float | None = None, alpha: float | None = None,
            target: tuple[str, float] | None = None, draws: int = BOOTSTRAP, seed: int = 0) -> Ladder:
    """The law over the baseline's rungs, every variant's multiplier at every rung with its interval, and each
    variant's trend across the rungs (extrapolated to `target` = (its name, its compute) where given)."""
    base = sorted((p for p in points if p.experiment == baseline), key=lambda p: p.compute)
    if not base:
        raise FitError(f"the baseline {baseline} has no complete run at any rung")
    law = fit_law([p.compute for p in base], [p.loss for p in base], l_inf, alpha)
    sd, df = pooled(points)
    rng = np.random.default_rng(seed)
    variants = [p for p in points if p.experiment != baseline]
    # the draws: every arm's mean at every rung, from the seed noise (its std itself drawn from its chi-square)
    scale = sd * np.sqrt(df / rng.chisquare(df, draws))
    base_draws = np.array([p.loss + rng.standard_normal(draws) * scale / math.sqrt(len(p.losses)) for p in base]).T
    var_draws = {id(p): p.loss + rng.standard_normal(draws) * scale / math.sqrt(len(p.losses)) for p in variants}
    laws = []
    for row in base_draws:
        try:
            laws.append(fit_law([p.compute for p in base], list(row), l_inf, alpha))
        except (FitError, ValueError):
            laws.append(None)
    worth, samples = [], {}
    rates = {p.rung: p.flops_per_second for p in base}
    lowest = min(p.loss for p in base)
    for p in variants:
        multiplier = law.compute(p.loss) / p.compute
        drawn = np.array([(fit.compute(v) / p.compute) if fit is not None else np.nan
                          for fit, v in zip(laws, var_draws[id(p)])])
        drawn = drawn[~np.isnan(drawn)]
        samples[id(p)] = drawn
        low, high = np.quantile(drawn, [(1 - LEVEL) / 2, (1 + LEVEL) / 2]) if len(drawn) else (math.nan, math.nan)
        wall = (multiplier * p.flops_per_second / rates[p.rung] if p.flops_per_second and rates.get(p.rung)
                and math.isfinite(multiplier) else None)
        worth.append(Worth(p.rung, p.experiment, p.compute, multiplier, (float(low), float(high)), wall,
                           beyond_floor=not math.isfinite(multiplier), extrapolated=p.loss < lowest))
    trends = []
    for name in dict.fromkeys(p.experiment for p in variants):
        mine = sorted((p for p in variants if p.experiment == name), key=lambda p: p.compute)
        if len(mine) < 2:
            continue
        x = np.log([p.compute for p in mine])
        point = [math.log(w.multiplier) if w.multiplier > 0 and math.isfinite(w.multiplier) else math.nan
                 for w in (next(w for w in worth if w.rung == p.rung and w.experiment == name) for p in mine)]
        if any(math.isnan(v) for v in point):
            continue
        slope, intercept = np.polyfit(x, point, 1)
        n = min(len(samples[id(p)]) for p in mine)
        ys = np.log(np.clip(np.array([samples[id(p)][:n] for p in mine]).T, 1e-300, np.inf))
        ok = np.all(np.isfinite(ys), axis=1)
        fits = np.array([np.polyfit(x, row, 1) for row in ys[ok]]) if ok.any() else np.empty((0, 2))
        low, high = (np.quantile(fits[:, 0], [(1 - LEVEL) / 2, (1 + LEVEL) / 2]) if len(fits)
                     else (math.nan, math.nan))
        lows = [next(w for w in worth if w.rung == p.rung and w.experiment == name).interval for p in mine]
        if lows[0][1] < 1 < lows[-1][0] or lows[0][0] > 1 > lows[-1][1]:
            word = "changes sign"
        elif low > 0:
            word = "grows"
        elif high < 0:
            word = "shrinks"
        else:
            word = "steady"
        trend = Trend(name, float(slope), (float(low), float(high)), word)
        if target is not None and len(fits):
            t = math.log(target[1])
            at = np.exp(fits[:, 1] + fits[:, 0] * t)
            trend.target = {"name": target[0], "compute": target[1], "multiplier": math.exp(intercept + slope * t),
                            "interval": tuple(float(v) for v in np.quantile(at, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])),
                            "beyond": target[1] / mine[-1].compute, "baseline_loss": float(law.loss(target[1]))}
        trends.append(trend)
    return Ladder(baseline, law, worth, trends, sd, df, points)


# ---- words

VERBS = {"grows": "grows", "shrinks": "shrinks", "steady": "holds steady", "changes sign": "changes sign"}

def _x(m: float) -> str:
    return "unbounded" if not math.isfinite(m) else f"{m:.2f}x" if m < 100 else f"{m:.3g}x"


def ladder_lines(ladder: Ladder, rungs: list[str], lr_words: str, scale_note: str = "") -> list[str]:
    """The ladder's section of the report: the law, each variant's worth at each rung, the trends."""
    law = ladder.law
    pinned = "".join(f"; {k} pinned at {v:g}" for k, v in law.pinned.items())
    out = [f"### Does it hold at scale? {len(rungs)} rungs ({', '.join(rungs)})", ""]
    if scale_note:
        out += [f"**{scale_note}**", ""]
    out.append(f"The baseline ({ladder.baseline}): L(C) = {law.l_inf:.4g} + {math.exp(law.log_a):.4g} (C / "
               f"{law.c0:.3g})^-{law.alpha:.4g}, C in FLOPs ({law.free} free parameter(s) over {law.points} rungs"
               + (f"; R^2 {law.r2:.4f}" if law.r2 is not None else "") + "; residuals " +
               ", ".join(f"{r:+.4f}" for r in law.residuals) + ")" + (f". {law.flag}" if law.flag else "") + pinned)
    out.append("")
    head = ["experiment", "rung", "compute (FLOPs)", "loss", "worth in the baseline's compute",
            f"{LEVEL:.0%} interval", "wall-clock", "note"]
    out += ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    points = {(p.rung, p.experiment): p for p in ladder.points}
    for p in sorted((p for p in ladder.points if p.experiment == ladder.baseline), key=lambda p: p.compute):
        out.append(f"| {p.experiment} | {p.rung} | {p.compute:.3g} | {p.loss:.4f} | 1 (the law: "
                   f"{float(law.loss(p.compute)):.4f}) | | | |")
    for w in ladder.worth:
        p = points[(w.rung, w.experiment)]
        note = ("at or below the law's floor: no compute reaches it" if w.beyond_floor else
                "beyond the baseline's losses: the law extrapolated" if w.extrapolated else "")
        wall = f"{w.wall:.3g}x ({p.device})" if w.wall is not None else "-"
        out.append(f"| {w.experiment} | {w.rung} | {w.compute:.3g} | {p.loss:.4f} | {_x(w.multiplier)} | "
                   f"{_x(w.interval[0])} to {_x(w.interval[1])} | {wall} | {note} |")
    out.append("")
    for t in ladder.trends:
        last = max((w for w in ladder.worth if w.experiment == t.experiment), key=lambda w: w.compute)
        out.append(f"- **{t.experiment}** is worth {_x(last.multiplier)} the baseline's compute ({LEVEL:.0%} interval "
                   f"{_x(last.interval[0])} to {_x(last.interval[1])}) at {last.rung}; across the rungs it {VERBS[t.word]} "
                   f"(slope of log multiplier in log C {t.slope:+.3f}, {LEVEL:.0%} interval {t.interval[0]:+.3f} to "
                   f"{t.interval[1]:+.3f}).")
        if t.target:
            tg = t.target
            out.append(f"  Extrapolated (an extrapolation, not a measurement: {tg['beyond']:.3g}x the compute of the "
                       f"largest rung) to {tg['name']} ({tg['compute']:.3g} FLOPs): {_x(tg['multiplier'])} "
                       f"({LEVEL:.0%} interval {_x(tg['interval'][0])} to {_x(tg['interval'][1])}); the baseline's law "
                       f"there: loss {tg['baseline_loss']:.3f}.")
    out += ["", f"Worth in the baseline's compute: the compute the baseline's law needs to reach the variant's loss, "
                f"over the compute the variant spent (above 1: the change is worth more compute than it cost). "
                f"Wall-clock: that times the variant's achieved FLOP/s over the baseline's at the rung (the device "
                f"named). Intervals: {BOOTSTRAP} parametric bootstrap draws of every arm's mean from the seed-to-seed "
                f"std ({ladder.sd:.4f}, pooled over every rung and experiment, df {ladder.df}, itself drawn from its "
                f"chi-square), the law refitted each time. Learning rate: {lr_words}."]
    return out
