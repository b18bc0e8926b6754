"""One rule for paths: what gptlab writes and finds by name lives in the checkout; a typed path is relative to
the current directory; what is printed is absolute."""

import subprocess
import sys

import pytest

from gptlab.paths import REPO_ROOT, missing


def test_a_typed_path_is_the_current_directorys_and_the_checkouts_copy_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert missing("nowhere/at/all") == f"{tmp_path / 'nowhere/at/all'} does not exist"
    said = missing("experiments")  # a directory the checkout has
    assert said.startswith(f"{tmp_path / 'experiments'} does not exist (a path you type is relative to the current "
                           f"directory, {tmp_path}; the checkout has {REPO_ROOT / 'experiments'})")


def test_status_and_report_from_another_directory_say_where_the_checkouts_runs_are(tmp_path):
    for command in (["status", "experiments"], ["report", "experiments"]):
        result = subprocess.run([sys.executable, "-m", "gptlab", *command], cwd=tmp_path, capture_output=True, text=True)
        assert result.returncode == 2
        assert f"the checkout has {REPO_ROOT / 'experiments'}" in result.stderr, result.stderr


def test_runs_go_into_the_checkout_from_any_directory(tmp_path):
    """The default log directory is the checkout's log_train, whatever the current directory."""
    from gptlab.training.planning import default_log_dir
    assert default_log_dir("rope", 7) == REPO_ROOT / "log_train" / "rope" / "seed7"


@pytest.mark.long
def test_commands_work_from_the_directory_that_holds_a_checkout_named_gptlab(tmp_path):
    """A clone at ~/gptlab, the command typed in ~: `-m gptlab` took the clone's root for the package once a run had
    made its data/ (ModuleNotFoundError: gptlab.data.shards), in the command and in a study's runs."""
    clone = tmp_path / "gptlab"
    (clone / "data").mkdir(parents=True)  # what a first run leaves in a checkout
    (clone / "gptlab").symlink_to(REPO_ROOT / "gptlab")
    tiny = ["--preset", "smoke", "train.max_steps=1", "train.hellaswag=false", "train.num_samples=0"]
    result = subprocess.run([sys.executable, "-m", "gptlab", "train", "--experiment", "baseline", "--log-dir",
                             str(tmp_path / "run"), *tiny], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    result = subprocess.run([sys.executable, "-m", "gptlab", "study", "--experiments", "baseline", "rope", "--out",
                             str(tmp_path / "study"), *tiny], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "2/2] rope seed1337: complete" in result.stdout, result.stdout + result.stderr
