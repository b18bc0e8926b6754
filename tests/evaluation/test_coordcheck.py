"""The coordinate check and the learning-rate transfer: under muP every quantity's size stays flat as the width
grows, under the standard parametrization some grow; and muP's best rate holds across a 4x width where the
standard one's moves."""

import math
import subprocess
import sys

import pytest

from gptlab.core.experiment import available_experiments, load_experiment
from gptlab.evaluation.coordcheck import (DEPTHS, FLAT, measure, measure_depth, shift_in_steps, slopes, transfer,
                                         verdict)
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


def check_depth(name: str) -> dict:
    experiment = load_experiment(name)
    return {p: slopes(measure_depth(experiment, p), DEPTHS) for p in ("standard", "completep")}


def test_under_completep_the_residual_stream_stays_flat_across_depths_and_under_the_standard_it_grows():
    """Depths 2 to 16 at width 48, 8 steps of AdamW at 3e-3 (measured: CompleteP within 0.03; the standard's residual
    stream +1.03, its change since the initialisation +1.09: each block's update adds up over the depth)."""
    found = check_depth("baseline")
    assert all(abs(s) < FLAT for s in found["completep"].values()), found
    assert found["standard"]["residual change"] > 0.8 and found["standard"]["residual"] > 0.8, found


def test_without_completeps_branch_multiplier_the_depth_check_fails(monkeypatch):
    from gptlab.modules.block import Block
    built = Block.__init__

    def without_multiplier(self, *args, **kwargs):
        built(self, *args, **kwargs)
        self.branch_scale = 1.0
    monkeypatch.setattr(Block, "__init__", without_multiplier)
    found = check_depth("baseline")
    assert found["completep"]["residual change"] >= FLAT, found


@pytest.mark.long
@pytest.mark.parametrize("name", available_experiments())
def test_every_experiment_passes_the_depth_check_under_completep(name):
    """Measured on a 2-core AMD EPYC: under CompleteP every slope within 0.35 (small_init's residual -0.35: its Wang
    residual init at the base depth; the rest within 0.17); the standard's residual change +0.22 (small_init) to
    +1.26 (mla), below FLAT for small_init, sine and llama_muon within 8 steps, yet above CompleteP's everywhere."""
    found = check_depth(name)
    assert all(abs(s) < FLAT for s in found["completep"].values()), found
    assert found["standard"]["residual change"] > found["completep"]["residual change"] + 0.2, found


def test_the_verdict_says_which_way_a_quantity_moves_and_a_slope_it_could_not_read():
    assert verdict({"attention": 0.1, "logits": -0.2}) == "flat: every quantity's size changes less than width^0.4 " \
                                                          "across the widths"
    assert verdict({"attention": 1.6, "logits": -0.5}, "depth") == \
        "grows with the depth: attention ~ depth^+1.60; shrinks with the depth: logits ~ depth^-0.50"
    assert verdict({"attention": 0.1, "residual change": math.nan}).startswith("not measured: residual change")


def test_each_row_is_the_parametrization_it_names_whatever_the_experiments_own(tmp_path):
    """An experiment that sets CompleteP itself is still measured under the standard parametrization on the
    standard row (the row once kept the experiment's own)."""
    path = tmp_path / "own_completep.py"
    path.write_text('from gptlab import GPTConfig\n\nMODEL_CONFIG = GPTConfig(parametrization="completep", '
                    'base_depth=2)\n')
    own = slopes(measure_depth(load_experiment(str(path)), "standard", (2, 8), steps=4), (2, 8))
    plain = slopes(measure_depth(load_experiment("baseline"), "standard", (2, 8), steps=4), (2, 8))
    assert own == plain and own["residual change"] > FLAT


@pytest.mark.long  # the default tier's budget: one of its slowest
def test_the_command_prints_the_verdicts_and_draws_the_figure(tmp_path):
    pytest.importorskip("matplotlib")
    result = subprocess.run([sys.executable, "-m", "gptlab", "coordcheck", "rope", "--steps", "2", "--widths",
                             "32,64,128", "--depths", "2,4", "--out", str(tmp_path)], capture_output=True, text=True, cwd=REPO_ROOT,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert "rope under standard: " in result.stdout and "rope under mup: " in result.stdout
    assert (tmp_path / "coordcheck_rope.png").is_file()
    assert "rope under completep, across depths: " in result.stdout
    assert (tmp_path / "coordcheck_depth_rope.png").is_file()
    bad = subprocess.run([sys.executable, "-m", "gptlab", "coordcheck", "rope", "--widths", "64,32", "--depths", "2"],
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
