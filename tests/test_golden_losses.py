"""The numbers of the whole recipe: a change that moves a loss fails here (see golden_losses.py)."""

import json
import math

import pytest

from tests.golden_losses import EXPERIMENTS, PATH, cpu, losses, measured_drift, tolerance

GOLDEN = json.loads(PATH.read_text())["experiments"]


def assert_matches_golden(name: str, got: dict) -> None:
    for key in ("train", "val"):
        want = [row for row in GOLDEN[name][key] if row[0] <= got[key][-1][0]]
        assert [s for s, _ in got[key]] == [s for s, _ in want], (name, key)
        for (step, a), (_, b) in zip(got[key], want):
            assert math.isclose(a, b, rel_tol=0, abs_tol=tolerance(step) * 1.001), (
                f"{name} {key} loss at step {step} is {a}, golden {b}: {abs(a - b):.1e} apart, more than the "
                f"tolerance {tolerance(step):.0e} and {abs(a - b) / measured_drift(step):.0f}x the most that float32 "
                f"kernels moved it between CPUs and thread counts (measured, tests/golden_losses.py). A change in "
                f"the code moved the numbers: if it is meant to, regenerate with `python -m tests.golden_losses "
                f"--write` and say why in the commit. If nothing changed, this CPU ({cpu()}) drifts more than "
                f"any measured: `python -m tests.golden_losses --drift` prints how far, range by range; report it")


@pytest.mark.parametrize("name", EXPERIMENTS)
@pytest.mark.slow
def test_first_steps_reproduce_the_golden_losses(tmp_path, name):
    # stop_at keeps the schedule, so the first steps are the golden run's first steps
    assert_matches_golden(name, losses(name, tmp_path, "train.stop_at=3", "train.num_samples=0"))


@pytest.mark.long
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_whole_smoke_run_reproduces_the_golden_losses(tmp_path, name):
    got = losses(name, tmp_path)
    assert len(got["train"]) == 50 and [s for s, _ in got["val"]] == list(range(0, 51, 5))
    assert_matches_golden(name, got)
