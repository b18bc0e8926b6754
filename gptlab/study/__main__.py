"""`python -m gptlab.study`: the same as `gptlab study`."""

import sys

from gptlab.study.cli import main

sys.exit(main())
