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


def test_a_concave_fit_says_so_and_takes_the_best_point_even_at_an_edge():
    """A hump, not a bowl, through the best point and its neighbours: the fit says it is not convex, rather than
    calling the best point an edge optimum to widen the grid from."""
    losses = dict(zip(GRID, [3.31, 3.36, 3.38, 3.36, 3.30]))
    fit = fit_lr("gqa", 6e-4, GRID, losses)
    assert fit.coefficients[0] < 0 and fit.kind == "concave"
    assert "not convex" in fit.flag and "towards" not in fit.flag and fit.optimum is None and fit.chosen == 2.0


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


def test_a_point_that_blew_up_and_stayed_finite_is_a_divergence_and_the_fit_uses_the_points_around_the_minimum():
    """{x0.25: 3.5, x0.5: 3.3, x1: 3.2, x2: 3.1, x4: 3.0, x64: 13.2}: x64 ended above the untrained model's loss
    (ln 50304 = 10.83); a parabola through every point put the seeds at x1, though x4 is 0.20 lower."""
    grid = [0.25, 0.5, 1.0, 2.0, 4.0, 64.0]
    losses = dict(zip(grid, [3.5, 3.3, 3.2, 3.1, 3.0, 13.2]))
    fit = fit_lr("baseline", 6e-4, grid, losses)
    assert fit.diverged == [64.0] and fit.chosen == 4.0 and fit.kind == "edge-high"
    assert "x64 diverged" in fit.flag
    # finite and below ln(V), but far above the bowl: left out of the fit, not called diverged
    losses[64.0] = 9.5
    fit = fit_lr("baseline", 6e-4, grid, losses)
    assert fit.left_out == [64.0] and fit.diverged == [] and fit.chosen == 4.0
    # the bowl near its bottom: the best point and two on each side, whatever lies further out
    far = dict(zip([0.01, 0.5, 0.71, 1.0, 1.41, 2.0], [5.9, 3.33, 3.31, 3.30, 3.31, 3.33]))
    fit = fit_lr("rope", 6e-4, list(far), far)
    assert fit.fitted == [0.5, 0.71, 1.0, 1.41, 2.0] and fit.optimum == pytest.approx(1.0, rel=0.05)


def test_a_flat_sweep_is_called_flat_and_keeps_the_shared_rate():
    losses = dict(zip(GRID, [3.3012, 3.3003, 3.3008, 3.2999, 3.3001]))  # within the seeds' noise of each other
    fit = fit_lr("rope", 6e-4, GRID, losses, noise=0.004)
    assert fit.kind == "flat" and fit.chosen == 1.0 and "less than twice the seed-to-seed std" in fit.flag
    assert "smallest rate" not in fit.flag and "largest rate" not in fit.flag
    assert fit_lr("rope", 6e-4, GRID, losses).kind != "flat"  # without a known spread, no claim of flatness


def test_a_widened_grid_in_the_same_directory_fits_its_new_points():
    """The grid was read from the first record (the old run's): the new points trained and were ignored."""
    def record(m, sweep):
        return {"experiment": "mla", "seed": 1337, "status": "complete", "val_loss": 3.3 + 0.05 * math.log(m / 3.0) ** 2,
                "training_config": {"max_lr": 6e-4 * m}, "study": {"lr_sweep": sweep, "lr_multiplier": m,
                                                                   "first_seed": 1337}}
    old, wide = [0.5, 1.0, 2.0], [0.5, 1.0, 2.0, 4.0, 8.0]
    records = [record(m, old) for m in old] + [record(m, wide) for m in (4.0, 8.0)]
    fit = sweep_fits(records)["mla"]
    assert sorted(fit.points) == wide and fit.kind == "" and fit.optimum == pytest.approx(3.0, rel=0.05)
