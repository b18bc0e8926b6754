import sys
from pathlib import Path

# `python -m gptlab` from the directory that holds a checkout named gptlab: Python put the current directory first
# on sys.path and took the checkout's root for the package (a namespace package, with the checkout's data/ as
# gptlab.data). Import the package from the checkout this file is in instead (a regular package on an earlier
# entry of sys.path wins), before anything else of it is imported.
if getattr(sys.modules.get("gptlab"), "__file__", None) is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    for name in [m for m in sys.modules if m == "gptlab" or m.startswith("gptlab.")]:
        del sys.modules[name]

from gptlab.cli import main  # noqa: E402 - after the package is the real one

sys.exit(main())
