"""Plot training curves: `python plot_training_log.py LOG [LOG ...] OUT.png [START]`."""

import sys

from gptlab.reporting.plots import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
