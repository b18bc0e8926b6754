"""An experiment's own learning rate, from a sweep: the final validation loss at each multiplier of
`max_lr`, fitted by a parabola in log(lr) (the loss-vs-log-lr bowl of Wortsman et al. 2023, and of
the per-variant sweeps of Marin and "Fantastic Pretraining Optimizers", arXiv 2509.02046).

The fitted optimum picks the grid point the seeds then train at: the grid point nearest to it in
log(lr). Near the optimum the bowl is flat (for the fit a x^2 + b x + c in x = ln lr, the cost of
the nearest point is at most a (ln step / 2)^2, printed), a vertex fitted through five noisy points
moves more than that between repeats of the sweep, and where the grid point is x1 the shared
table's runs serve the tuned one too.
An optimum at or beyond an edge of the grid is not extrapolated: the edge point is taken, and
the fit says which way to widen the grid. A fit that is not convex says so, and the grid's best
point is taken.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class LRFit:
    experiment: str
    base_lr: float  # max_lr at multiplier 1
    points: dict[float, float]  # multiplier -> final val loss of the sweep's run
    diverged: list[float] = field(default_factory=list)  # multipliers whose run diverged
    missing: list[float] = field(default_factory=list)  # multipliers whose run is not complete (yet)
    coefficients: tuple[float, float, float] | None = None  # val = a x^2 + b x + c, x = ln(multiplier)
    optimum: float | None = None  # the fitted optimum's multiplier, where it lies inside the grid
    chosen: float = 1.0  # the multiplier the seeds train at
    flag: str = ""  # why the optimum is not a clean interior fit, in words

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
           diverged: list[float] = ()) -> LRFit:
    """The fit of one experiment's sweep: `losses` the final val loss of each multiplier that
    completed, `diverged` those whose run diverged; a multiplier in neither is missing."""
    grid = sorted(grid)
    fit = LRFit(experiment, base_lr, {m: losses[m] for m in grid if m in losses},
                diverged=sorted(m for m in diverged if m in grid),
                missing=[m for m in grid if m not in losses and m not in diverged])
    done = sorted(fit.points)
    if not done:
        fit.flag = "no run of the sweep has completed"
        return fit
    best = min(done, key=lambda m: fit.points[m])
    fit.chosen = best
    if len(done) < 3:
        fit.flag = f"{len(done)} point(s) completed, a parabola needs 3: the grid's best point is taken"
        return fit
    x, y = np.log(done), np.array([fit.points[m] for m in done])
    a, b, c = (float(v) for v in np.polyfit(x, y, 2))
    fit.coefficients = (a, b, c)
    vertex = -b / (2 * a) if a > 0 else None
    if best == done[0] or (vertex is not None and vertex <= x[0]):
        fit.flag = f"optimum at or below the grid's smallest rate (x{done[0]:g}): widen the grid towards smaller rates"
        fit.chosen = done[0]
    elif best == done[-1] or (vertex is not None and vertex >= x[-1]):
        fit.flag = f"optimum at or above the grid's largest rate (x{done[-1]:g}): widen the grid towards larger rates"
        fit.chosen = done[-1]
        if any(m > done[-1] for m in fit.diverged):
            fit.flag += f" (x{min(m for m in fit.diverged if m > done[-1]):g} diverged)"
    elif vertex is None:
        fit.flag = ("the fit is not convex (the losses do not rise on both sides of a minimum): the grid's best "
                    "point is taken; add seeds to the sweep or widen the grid")
    else:
        fit.optimum = math.exp(vertex)
        fit.chosen = min(done, key=lambda m: abs(math.log(m) - vertex))
    return fit


def sweep_fits(records: list[dict]) -> dict[str, LRFit]:
    """Each experiment's fit from the records of a study's runs (their `study` key names the sweep,
    the run's multiplier and the study's first seed): the first seed's run at each multiplier."""
    fits = {}
    for name in dict.fromkeys(r["experiment"] for r in records):
        own = [r for r in records if r["experiment"] == name]
        study = own[0].get("study") or {}
        grid = sorted({*study.get("lr_sweep", []), 1.0})
        sweep = {(r.get("study") or {}).get("lr_multiplier", 1.0): r for r in own
                 if r.get("seed") == study.get("first_seed")}
        losses = {m: r["val_loss"] for m, r in sweep.items() if r.get("status") == "complete"
                  and isinstance(r.get("val_loss"), float) and math.isfinite(r["val_loss"])}
        diverged = [m for m, r in sweep.items() if r.get("status") == "diverged"]
        some = next(iter(sweep.values()), own[0])
        base_lr = (some.get("training_config") or {}).get("max_lr", 0.0) / (some.get("study") or {}).get("lr_multiplier", 1.0)
        fits[name] = fit_lr(name, base_lr, grid, losses, diverged)
    return fits
