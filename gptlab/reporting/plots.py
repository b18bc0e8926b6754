"""Training curves from log.txt files: train/val loss and HellaSwag accuracy, one figure,
several experiments overlaid.

    python plot_training_log.py LOG [LOG ...] OUT.png [START]
"""

from __future__ import annotations

import sys
from pathlib import Path

from gptlab.training.logger import read_log


def label_of(log_path: Path) -> str:
    """log_train/<experiment>/log/log.txt -> <experiment>."""
    parent = log_path.parent
    return parent.parent.name if parent.name == "log" else parent.name


def plot(logs: list[Path], out: Path, start: int = 1000) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_hella) = plt.subplots(1, 2, figsize=(14, 5))
    for i, path in enumerate(logs):
        series = read_log(path)
        color, name = f"C{i}", label_of(path)
        for key, style in (("train", dict(alpha=0.35, linewidth=0.8)), ("val", dict(linewidth=2))):
            points = [(s, v) for s, v in series.get(key, []) if s >= start]
            if points:
                ax_loss.plot(*zip(*points), color=color, label=f"{name} {key}", **style)
        hella = [(s, v) for s, v in series.get("hella", []) if s >= start]
        if hella:
            ax_hella.plot(*zip(*hella), color=color, label=name)
    ax_loss.set(xlabel="step", ylabel="loss", title=f"loss (from step {start})")
    ax_hella.set(xlabel="step", ylabel="acc_norm", title="HellaSwag")
    ax_hella.axhline(0.2955, color="gray", linestyle="--", linewidth=1, label="GPT-2 124M (OpenAI)")
    for ax in (ax_loss, ax_hella):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help") or len(argv) < 2:
        print(__doc__.strip())
        print("START: first step drawn (default 1000: the first steps' losses would flatten the plot)")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    start = 1000
    if argv[-1].isdigit():
        start, argv = int(argv[-1]), argv[:-1]
    *logs, out = argv
    missing = [p for p in logs if not Path(p).is_file()]
    if missing or not logs:
        print(f"error: no log file at {', '.join(missing) or '(none given)'}; give log.txt paths then OUT.png",
              file=sys.stderr)
        return 2
    plot([Path(p) for p in logs], Path(out), start)
    print(f"wrote {out}")
    return 0
