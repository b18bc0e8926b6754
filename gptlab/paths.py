"""Where things live, and the one rule for paths.

What gptlab writes by default (log_train/, data/, log_bench/) and what it finds by name
(experiments/NAME.py, studies/NAME.py) lives in the checkout, found from the location of this
code, never from the current directory. A path a user types is relative to the current
directory, as with any command-line tool. Every path gptlab prints is absolute.
"""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS_DIR = REPO_ROOT / "experiments"
DATA_DIR = REPO_ROOT / "data"
LOG_ROOT = REPO_ROOT / "log_train"
STUDIES_DIR = REPO_ROOT / "studies"
BENCH_ROOT = REPO_ROOT / "log_bench"


def missing(path: str | Path) -> str:
    """A typed path that is not there, said absolutely; where the same relative path exists in the
    checkout (a study's log_train/quick typed from another directory), that one is named."""
    given = Path(path).expanduser()
    text = f"{Path.cwd() / given if not given.is_absolute() else given} does not exist"
    if not given.is_absolute() and (REPO_ROOT / given).exists() and Path.cwd() != REPO_ROOT:
        text += (f" (a path you type is relative to the current directory, {Path.cwd()}; the checkout has "
                 f"{REPO_ROOT / given})")
    return text
