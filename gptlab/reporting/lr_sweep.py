"""An experiment's own learning rate, from a sweep: the final validation loss at each multiplier of
`max_lr`, fitted by a parabola in log(lr) (the loss-vs-log-lr bowl of Wortsman et al. 2023, and of
the per-variant sweeps of Marin and "Fantastic Pretraining Optimizers", arXiv 2509.02046).

Which points the fit uses. A run that diverged, or whose loss is at or above the untrained model's
(ln of the vocabulary: a run that learned nothing, or blew up and stayed finite), is a divergence.
A point far above the bowl (more than half-way from the best point's loss up to the untrained one)
is left out as well: it is off the bowl the parabola describes. The parabola is fitted through the
best point and up to two points on each side of it: the bowl near its bottom, not the whole grid.

The fitted optimum picks the grid point the seeds then train at: the grid point nearest to it in
log(lr). Near the optimum the bowl is flat (for the fit a x^2 + b x + c in x = ln lr, the cost of
the nearest point is at most a (ln step / 2)^2, printed), a vertex fitted through five noisy points
moves more than that between repeats of the sweep, and where the grid point is x1 the shared
table's runs serve the tuned one too. A fit that is not convex says so and takes the grid's best
point; a sweep whose points differ by less than twice the seed-to-seed spread is flat (the rate
barely matters there) and keeps x1. An optimum at or beyond an edge of the grid is not
extrapolated: the edge point is taken, and the fit says which way to widen the grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from gptlab.reporting.stats import pooled_std

UNTRAINED_VOCAB = 50304  # the loss of an untrained model is ln(vocab_size); this one where a record does not say
NEIGHBOURS = 2  # points on each side of the best one that the parabola is fitted through


@dataclass
class LRFit:
    experiment: str
    base_lr: float  # max_lr at multiplier 1
    points: dict[float, float]  # multiplier -> final val loss of the sweep's run
    diverged: list[float] = field(default_factory=list)  # multipliers whose run diverged (or learned nothing)
    missing: list[float] = field(default_factory=list)  # multipliers whose run is not complete (yet)
    left_out: list[float] = field(default_factory=list)  # finite points far above the bowl, not fitted
    fitted: list[float] = field(default_factory=list)  # the points the parabola went through
    coefficients: tuple[float, float, float] | None = None  # val = a x^2 + b x + c, x = ln(multiplier)
    optimum: float | None = None  # the fitted optimum's multiplier, where it lies inside the grid
    chosen: float = 1.0  # the multiplier the seeds train at
    flag: str = ""  # why the optimum is not a clean interior fit, in words
    kind: str = ""  # "", "edge-low", "edge-high", "concave", "flat", "few": what the flag is about

    @property
    def complete(self) -> bool:
        return not self.missing

    def predicted(self, multiplier: float) -> float | None:
        if self.coefficients is None:
            return None
        a, b, c = self.coefficients
        x = math.log(multiplier)
        return a * x * x + b * x + c

    def excess(self) -> float | None:
        """The fitted loss of the chosen grid point above the fitted optimum's."""
        if self.optimum is None:
            return None
        return self.predicted(self.chosen) - self.predicted(self.optimum)


def fit_lr(experiment: str, base_lr: float, grid: list[float], losses: dict[float, float],
           diverged: list[float] = (), untrained: float = math.log(UNTRAINED_VOCAB),
           noise: float | None = None) -> LRFit:
    """The fit of one experiment's sweep: `losses` the final val loss of each multiplier that completed,
    `diverged` those whose run diverged; a multiplier in neither is missing. `untrained`: the untrained
    model's loss; `noise`: the seed-to-seed std of the final loss, where it is known (for flatness)."""
    grid = sorted(grid)
    gone = {m for m in diverged if m in grid}
    gone |= {m for m, v in losses.items() if m in grid and (not math.isfinite(v) or v >= untrained)}
    fit = LRFit(experiment, base_lr, {m: losses[m] for m in grid if m in losses}, diverged=sorted(gone),
                missing=[m for m in grid if m not in losses and m not in gone])
    kept = sorted(m for m in fit.points if m not in gone)
    if not kept:
        fit.flag, fit.kind = "no run of the sweep has completed without diverging", "few"
        return fit
    best = min(kept, key=lambda m: fit.points[m])
    ceiling = fit.points[best] + 0.5 * (untrained - fit.points[best])
    fit.left_out = [m for m in kept if fit.points[m] > ceiling]
    kept = [m for m in kept if m not in fit.left_out]
    fit.chosen = best
    i = kept.index(best)
    fit.fitted = kept[max(0, i - NEIGHBOURS):i + NEIGHBOURS + 1]
    if len(fit.fitted) < 3:
        fit.flag, fit.kind = (f"{len(fit.fitted)} point(s) near the best one, a parabola needs 3: the grid's best "
                              f"point is taken"), "few"
        return fit
    x, y = np.log(fit.fitted), np.array([fit.points[m] for m in fit.fitted])
    a, b, c = (float(v) for v in np.polyfit(x, y, 2))
    fit.coefficients = (a, b, c)
    if noise is not None and y.max() - y.min() < 2 * noise:
        fit.flag, fit.kind = (f"flat: the points around the best differ by {y.max() - y.min():.4f}, less than twice "
                              f"the seed-to-seed std ({noise:.4f}): the rate barely matters here; the seeds train at "
                              f"x1"), "flat"
        fit.chosen = 1.0 if 1.0 in kept else best
        return fit
    values = [fit.points[m] for m in kept]
    toward_edge = (best == kept[0] and values == sorted(values)) or (best == kept[-1] and values == sorted(values,
                                                                                                           reverse=True))
    if a <= 0 and not toward_edge:
        fit.flag, fit.kind = ("the fit is not convex (the losses do not rise on both sides of one minimum): the grid's "
                              "best point is taken; add seeds to the sweep"), "concave"
        return fit
    vertex = -b / (2 * a) if a > 0 else (math.inf if best == kept[-1] else -math.inf)
    beyond = [m for m in fit.diverged + fit.left_out]
    if best == kept[0] or vertex <= math.log(kept[0]):
        fit.flag, fit.kind = (f"optimum at or below the grid's smallest rate (x{kept[0]:g}): widen the grid towards "
                              f"smaller rates"), "edge-low"
        fit.chosen = kept[0]
        if any(m < kept[0] for m in beyond):
            fit.flag += f" (x{max(m for m in beyond if m < kept[0]):g} is off the bowl)"
    elif best == kept[-1] or vertex >= math.log(kept[-1]):
        fit.flag, fit.kind = (f"optimum at or above the grid's largest rate (x{kept[-1]:g}): widen the grid towards "
                              f"larger rates"), "edge-high"
        fit.chosen = kept[-1]
        if any(m > kept[-1] for m in beyond):
            fit.flag += f" (x{min(m for m in beyond if m > kept[-1]):g} " + (
                "diverged)" if min(m for m in beyond if m > kept[-1]) in fit.diverged else "is off the bowl)")
    else:
        fit.optimum = math.exp(vertex)
        fit.chosen = min(kept, key=lambda m: abs(math.log(m) - vertex))
    return fit


def _multiplier(record: dict) -> float:
    return float((record.get("study") or {}).get("lr_multiplier", 1.0))


def seed_noise(records: list[dict]) -> float | None:
    """The seed-to-seed std of the final val loss at the shared rate, pooled over the experiments, or None."""
    groups: dict[str, list[float]] = {}
    for r in records:
        if _multiplier(r) == 1.0 and r.get("status") == "complete" and isinstance(r.get("val_loss"), float):
            groups.setdefault(r["experiment"], []).append(r["val_loss"])
    pooled = pooled_std(list(groups.values()))
    return pooled[0] if pooled else None


def sweep_fits(records: list[dict]) -> dict[str, LRFit]:
    """Each experiment's fit from the records of a study's runs (their `study` key names the sweep, the run's
    multiplier and the study's first seed): the first seed's run at each multiplier. The grid is every
    multiplier any of the experiment's records was planned with, so a grid widened in the same directory
    fits its new points too."""
    fits = {}
    noise = seed_noise(records)
    for name in dict.fromkeys(r["experiment"] for r in records):
        own = [r for r in records if r["experiment"] == name]
        grid = sorted({1.0, *(m for r in own for m in (r.get("study") or {}).get("lr_sweep", [])),
                       *(_multiplier(r) for r in own)})
        first = next((r.get("study") or {}).get("first_seed") for r in own)
        sweep = {_multiplier(r): r for r in own if r.get("seed") == first}
        losses = {m: r["val_loss"] for m, r in sweep.items() if r.get("status") == "complete"
                  and isinstance(r.get("val_loss"), float)}
        diverged = [m for m, r in sweep.items() if r.get("status") == "diverged"]
        some = next(iter(sweep.values()), own[0])
        base_lr = (some.get("training_config") or {}).get("max_lr", 0.0) / _multiplier(some)
        vocab = (some.get("model_config") or {}).get("vocab_size") or UNTRAINED_VOCAB
        fits[name] = fit_lr(name, base_lr, grid, losses, diverged, untrained=math.log(vocab), noise=noise)
    return fits
