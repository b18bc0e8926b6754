"""Train a gptlab experiment: `python train.py --experiment NAME` (see --help)."""

import sys

from gptlab.training.cli import main

if __name__ == "__main__":
    sys.exit(main())
