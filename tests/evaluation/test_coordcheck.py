"""The coordinate check and the learning-rate transfer: under muP every quantity's size stays flat as the width
grows, under the standard parametrization some grow; and muP's best rate holds across a 4x width where the
standard one's moves."""

import math
import subprocess
import sys

import pytest

from gptlab.core.experiment import available_experiments, load_experiment
from gptlab.evaluation.coordcheck import FLAT, measure, shift_in_steps, slopes, transfer
from gptlab.paths import REPO_ROOT


def check(name: str) -> dict:
    experiment = load_experiment(name)
    return {p: slopes(measure(experiment, p)) for p in ("standard", "mup")}


def test_under_mup_the_baselines_activations_stay_flat_and_under_the_standard_they_grow():
    """Widths 48 to 384, 8 steps of AdamW at 3e-3 (measured: muP within 0.22, standard's attention +1.64)."""
    found = check("baseline")
    assert all(abs(s) < FLAT for s in found["mup"].values()), found
    assert found["standard"]["attention"] > 1.0 and found["standard"]["mlp"] > 1.0, found


@pytest.mark.long
@pytest.mark.parametrize("name", available_experiments())
def test_every_experiment_passes_the_coordinate_check_under_mup(name):
    found = check(name)
    assert all(abs(s) < FLAT for s in found["mup"].values()), found
    assert max(abs(s) for s in found["standard"].values()) >= FLAT, found


def test_a_removed_rule_fails_the_check(monkeypatch):
    """Without muP's logit multiplier (or its hidden init scale) the check is not flat: it tests the rules."""
    import gptlab.models.gpt as gpt
    monkeypatch.setattr(gpt, "output_multiplier", lambda config: 1.0)
    found = check("baseline")
    assert max(abs(s) for s in found["mup"].values()) >= FLAT, found


def test_the_command_prints_the_verdicts_and_draws_the_figure(tmp_path):
    pytest.importorskip("matplotlib")
    result = subprocess.run([sys.executable, "-m", "gptlab", "coordcheck", "rope", "--steps", "2", "--widths",
                             "32,64,128", "--out", str(tmp_path)], capture_output=True, text=True, cwd=REPO_ROOT,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert "rope under standard: " in result.stdout and "rope under mup: " in result.stdout
    assert (tmp_path / "coordcheck_rope.png").is_file()
    bad = subprocess.run([sys.executable, "-m", "gptlab", "coordcheck", "rope", "--widths", "64,32"],
                         capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert bad.returncode == 2 and "two or more growing widths" in bad.stderr


@pytest.mark.long
def test_the_best_rate_holds_across_a_4x_width_under_mup_and_moves_under_the_standard():
    """Widths 64 and 256, a grid of x0.25 to x4 in steps of 2 (measured with steps of sqrt(2): muP's best moved
    from x0.87 to x0.83, 0.1 step; the standard's from x0.87 to x0.25 or below, 3.6 steps or more)."""
    grid = (0.25, 0.5, 1.0, 2.0, 4.0)
    experiment = load_experiment("baseline")
    mup = transfer(experiment, "mup", grid=grid)
    standard = transfer(experiment, "standard", grid=grid)
    assert shift_in_steps(mup["fits"], grid) <= 1.0
    assert shift_in_steps(standard["fits"], grid) > 1.0
    assert all(math.isfinite(v) for result in (mup, standard) for losses in result["losses"].values()
               for v in losses.values())
