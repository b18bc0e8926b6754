"""Training curves from log.txt files: train/val loss and HellaSwag accuracy, one figure,
several experiments overlaid.

    python plot_training_log.py LOG|DIR [LOG|DIR ...] OUT.png [START]     (or gptlab plot ...)

A directory stands for every log.txt under it (a run's, or a study's). A study's figures,
with means and bands over seeds, come from `gptlab report`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gptlab.paths import missing
from gptlab.training.logger import read_log


def label_of(log_path: Path) -> str:
    """log_train/<experiment>/log/log.txt -> <experiment>; .../<experiment>/seed<N>/log.txt -> <experiment>/seed<N>."""
    parent = log_path.parent
    if parent.name == "log":
        return parent.parent.name
    return f"{parent.parent.name}/{parent.name}" if parent.name.startswith("seed") else parent.name


def expand(paths: list[str]) -> list[Path]:
    """Log files, with each directory replaced by the log.txt files under it."""
    logs = []
    for p in map(Path, paths):
        logs += sorted(p.rglob("log.txt")) if p.is_dir() else [p]
    return logs


def plot(logs: list[Path], out: Path, start: int = 1000) -> list[str]:
    """Draw the figure into `out`; returns what a reader should know about it (a start step past every
    log, so drawn from 0 instead; a panel with nothing to draw)."""
    import matplotlib.pyplot as plt

    fig, notes = figure(logs, start)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return notes


def figure(logs: list[Path], start: int = 1000):
    """(the figure of the logs' curves, the notes on it)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    notes = []
    series = [read_log(path) for path in logs]
    last = max((s for log in series for key in ("train", "val") for s, _ in log.get(key, [])), default=0)
    if start > last:
        notes.append(f"START {start} is past the last step ({last}) of every log: drawing from step 0")
        start = 0
    fig, (ax_loss, ax_hella) = plt.subplots(1, 2, figsize=(14, 5))
    for i, (path, log) in enumerate(zip(logs, series)):
        color, name = f"C{i}", label_of(path)
        for key, style in (("train", dict(alpha=0.35, linewidth=0.8)), ("val", dict(linewidth=2))):
            points = [(s, v) for s, v in log.get(key, []) if s >= start]
            if points:
                ax_loss.plot(*zip(*points), color=color, label=f"{name} {key}", **style)
        hella = [(s, v) for s, v in log.get("hella", []) if s >= start]
        if hella:
            ax_hella.plot(*zip(*hella), color=color, label=name)
    if not any(log.get("hella") for log in series):
        notes.append("no HellaSwag results in these logs (skipped: offline, or train.hellaswag=false)")
        ax_hella.text(0.5, 0.5, "no HellaSwag results\n(skipped: offline, or train.hellaswag=false)",
                      ha="center", va="center", transform=ax_hella.transAxes, color="gray")
    ax_loss.set(xlabel="step", ylabel="loss", title=f"loss (from step {start})")
    ax_hella.set(xlabel="step", ylabel="acc_norm", title="HellaSwag")
    if any(log.get("hella") for log in series):  # a reference line alone on an empty panel would read as data
        ax_hella.axhline(0.2955, color="gray", linestyle="--", linewidth=1, label="GPT-2 124M (OpenAI)")
    for ax in (ax_loss, ax_hella):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig, notes


USAGE = "LOG|DIR [LOG|DIR ...] OUT.png [START]"


def parser() -> argparse.ArgumentParser:
    """One positional list: which of its words is START (a whole number at the end) argparse cannot tell."""
    p = argparse.ArgumentParser(prog="plot_training_log.py", usage=f"%(prog)s {USAGE}", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    p.add_argument("arguments", nargs="*", metavar=USAGE,
                   help="log.txt files or directories holding them; then the figure's file (.png, .pdf, .svg, "
                        ".jpg); then START, the first step drawn (default 1000: the first steps' losses would "
                        "flatten the plot)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = parser().parse_args(argv).arguments
    if len(argv) < 2:
        print(f"error: give the log files (or directories of them), then OUT.png: plot_training_log.py {USAGE}",
              file=sys.stderr)
        return 2
    start = 1000
    if argv[-1].lstrip("-").isdigit():
        start, argv = int(argv[-1]), argv[:-1]
    *given, out = argv
    logs = expand(given)
    problems = []
    absent = [missing(p) for p in logs if not p.is_file()]
    absent += [f"{Path(p).resolve()} holds no log.txt" for p in given if Path(p).is_dir() and not expand([p])]
    if absent or not logs:
        problems.append(f"no log file: {'; '.join(absent) or '(none given)'}; give log.txt paths or directories "
                        f"holding them, then OUT.png")
    if start < 0:
        problems.append(f"START {start} is negative; give the first step to draw, 0 or more")
    if Path(out).suffix.lower() not in (".png", ".pdf", ".svg", ".jpg"):
        problems.append(f"{out} is not an image file name (.png, .pdf, .svg); the last argument (before START) is "
                        f"where the figure goes")
    elif not Path(out).parent.is_dir():
        problems.append(f"the directory of {out} does not exist; create it or write the figure elsewhere")
    if problems:
        print("error: " + "; ".join(problems), file=sys.stderr)
        return 2
    for note in plot(logs, Path(out), start):
        print(note)
    print(f"wrote {out}")
    return 0
