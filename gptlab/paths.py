"""Where things live, found from the location of this code (never the current directory)."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS_DIR = REPO_ROOT / "experiments"
DATA_DIR = REPO_ROOT / "data"
LOG_ROOT = REPO_ROOT / "log_train"
STUDIES_DIR = REPO_ROOT / "studies"
BENCH_ROOT = REPO_ROOT / "log_bench"
