import sys

from gptlab.bench.cli import main

sys.exit(main())
