"""The learning-rate fit on synthetic losses of a known bowl in log(lr), with noise."""

import math

import numpy as np
import pytest

from gptlab.reporting.lr_sweep import fit_lr, sweep_fits

GRID = [0.5, 0.71, 1.0, 1.41, 2.0]


def bowl(optimum: float, curvature: float = 0.05, floor: float = 3.3, noise: float = 0.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    return {m: floor + curvature * math.log(m / optimum) ** 2 + rng.normal(0, noise) for m in GRID}


@pytest.mark.parametrize("optimum", [0.75, 0.85, 1.0, 1.2, 1.4])
def test_the_fit_finds_an_interior_optimum_through_noise(optimum):
    """Noise of 0.001 on a bowl of curvature 0.05 per (ln lr)^2: the fitted optimum is within 10% of
    the true one, and the seeds train at the grid point nearest to it in log(lr)."""
    for seed in range(5):
        fit = fit_lr("rope", 6e-4, GRID, bowl(optimum, noise=0.001, seed=seed))
        assert fit.flag == "" and fit.optimum == pytest.approx(optimum, rel=0.1)
        assert fit.chosen == min(GRID, key=lambda m: abs(math.log(m / fit.optimum)))
        assert 0 <= fit.excess() < 0.05 * math.log(1.41) ** 2  # never more than half a grid step away


@pytest.mark.parametrize("optimum, edge, way", [(3.0, 2.0, "larger"), (0.3, 0.5, "smaller")])
def test_an_optimum_beyond_the_grid_is_flagged_not_extrapolated(optimum, edge, way):
    fit = fit_lr("mla", 6e-4, GRID, bowl(optimum))
    assert fit.optimum is None and fit.chosen == edge
    assert f"widen the grid towards {way} rates" in fit.flag


def test_a_concave_fit_says_so_and_takes_the_best_point():
    losses = dict(zip(GRID, [3.32, 3.36, 3.37, 3.30, 3.33]))  # best inside, but a hump, not a bowl, fits them
    fit = fit_lr("gqa", 6e-4, GRID, losses)
    assert fit.coefficients[0] < 0
    assert "not convex" in fit.flag and fit.optimum is None and fit.chosen == 1.41


def test_diverged_and_missing_points():
    losses = bowl(1.2)
    del losses[2.0], losses[1.41]
    fit = fit_lr("alibi", 6e-4, GRID, losses, diverged=[2.0])
    assert fit.diverged == [2.0] and fit.missing == [1.41] and not fit.complete
    assert "larger rates" in fit.flag and "x2 diverged" in fit.flag
    two = fit_lr("alibi", 6e-4, GRID, {0.5: 3.4, 1.0: 3.3})
    assert two.chosen == 1.0 and "a parabola needs 3" in two.flag


def test_fits_from_records_read_the_first_seed_at_each_multiplier():
    def record(m, seed, val, status="complete"):
        return {"experiment": "rope", "seed": seed, "status": status, "val_loss": val,
                "training_config": {"max_lr": 6e-4 * m},
                "study": {"lr_sweep": GRID, "lr_multiplier": m, "first_seed": 1337}}
    losses = bowl(1.2)
    records = [record(m, 1337, v) for m, v in losses.items()] + [record(1.41, 1338, 9.9), record(0.5, 1337, None, "diverged")]
    records[0] = record(0.5, 1337, None, "diverged")
    fit = sweep_fits(records)["rope"]
    assert fit.base_lr == pytest.approx(6e-4) and fit.diverged == [0.5] and 0.5 not in fit.points
    assert fit.points[1.41] == losses[1.41]  # the second seed's run is not a sweep point
