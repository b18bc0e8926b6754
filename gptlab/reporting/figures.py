"""A study's figures: each experiment's mean curve with a band over its seeds (validation
loss, smoothed train loss, HellaSwag), and each variant's difference to the baseline with
its 95% confidence interval. Curves are read from each run's log.txt."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gptlab.training.logger import read_log


def seed_curves(runs: list[dict], key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(steps, values (seeds, steps)) at the steps every run logged, up to each run's last step."""
    curves = []
    for r in runs:
        points = dict((s, v) for s, v in read_log(Path(r["log_dir"]) / "log.txt").get(key, []) if s <= r["step"])
        if points:
            curves.append(points)
    if not curves:
        return None
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    if not steps:
        return None
    return np.array(steps), np.array([[c[s] for s in steps] for c in curves])


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average along the last axis (the first points average what there is)."""
    if window <= 1:
        return values
    cumulative = np.cumsum(np.pad(values, [(0, 0), (1, 0)]), axis=-1)
    idx = np.arange(1, values.shape[-1] + 1)
    lo = np.maximum(idx - window, 0)
    return (cumulative[:, idx] - cumulative[:, lo]) / (idx - lo)


def study_figures(table, out: Path, suffix: str = "") -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves_path, deltas_path = out / f"study_curves{suffix}.png", out / f"study_deltas{suffix}.png"
    fig, axes = plt.subplots(1, 3, figsize=(18, 5.2))
    panels = (("val", "validation loss", axes[0]), ("train", "train loss (smoothed)", axes[1]),
              ("hella", "HellaSwag acc_norm", axes[2]))
    for i, row in enumerate(table.rows):
        color = f"C{i}"
        for key, _, ax in panels:
            found = seed_curves(row.complete or row.incomplete, key)
            if found is None:
                continue
            steps, values = found
            if key == "train":
                values = smooth(values, max(1, len(steps) // 10))
            label = f"{row.experiment} (n={values.shape[0]})"
            ax.plot(steps, values.mean(axis=0), color=color, linewidth=2 if i == 0 else 1.4, label=label,
                    linestyle="-" if row.complete else ":")
            if values.shape[0] > 1:
                ax.fill_between(steps, values.min(axis=0), values.max(axis=0), color=color, alpha=0.18, linewidth=0)
    if table.recipe:
        axes[0].axhline(3.2924, color="gray", linestyle="--", linewidth=1, label="OpenAI GPT-2 124M")
        axes[2].axhline(0.2955, color="gray", linestyle="--", linewidth=1, label="OpenAI GPT-2 124M")
    if axes[2].lines:
        axes[2].axhline(0.25, color="lightgray", linestyle=":", linewidth=1, label="chance (4 endings)")
    for key, title, ax in panels:
        ax.set(title=title, xlabel="step")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no results in these logs", ha="center", va="center", transform=ax.transAxes,
                    color="gray")
    _zoom_to_tail(axes[0])
    _zoom_to_tail(axes[1])
    fig.suptitle(f"{table.title}\nmean over seeds; band: min to max over seeds; dotted: incomplete runs", fontsize=10)
    fig.tight_layout()
    fig.savefig(curves_path, dpi=110)
    plt.close(fig)

    variants = table.rows[1:]
    fig, axes = plt.subplots(1, 2, figsize=(13, 1.6 + 0.55 * max(1, len(variants))))
    for ax, attr, title in ((axes[0], "val_vs_baseline", "Δ val loss vs baseline (lower is better)"),
                            (axes[1], "hella_vs_baseline", "Δ HellaSwag acc_norm vs baseline (higher is better)")):
        for y, row in enumerate(variants):
            c = getattr(row, attr)
            if c is None:
                ax.text(0.02, y, "no interval: fewer than 2 runs with this score on a side", va="center", fontsize=8,
                        color="gray", transform=ax.get_yaxis_transform())
                continue
            color = "C2" if c.significant and (c.delta < 0) == (attr == "val_vs_baseline") else (
                "C3" if c.significant else "gray")
            ax.errorbar(c.delta, y, xerr=c.ci95(), fmt="o", color=color, capsize=4)
            ax.annotate(f"{c.delta:+.4f} (p={c.p:.3f})", (c.delta, y), textcoords="offset points", xytext=(0, 7),
                        ha="center", fontsize=8)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(range(len(variants)), [row.experiment for row in variants])
        ax.set_ylim(-0.7, len(variants) - 0.3)
        ax.invert_yaxis()
        ax.set(title=title)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"vs {table.baseline}: mean difference ± 95% confidence interval (Welch); green: significantly "
                 f"better, red: significantly worse, gray: within noise", fontsize=9)
    fig.tight_layout()
    fig.savefig(deltas_path, dpi=110)
    plt.close(fig)
    return [curves_path, deltas_path]


def _zoom_to_tail(ax) -> None:
    """Losses start near ln(vocab) and fall fast: show the range of the curves past the first
    fifth of the steps (the first evaluation, of the untrained model, is left above the frame)."""
    lines = [line for line in ax.lines if len(line.get_xdata()) > 1]
    last = max((max(line.get_xdata()) for line in lines), default=0)
    ys = [y for line in lines for x, y in zip(line.get_xdata(), line.get_ydata()) if x >= last / 5]
    if ys:
        lo, hi = min(ys), max(ys)
        pad = 0.08 * (hi - lo or 1)
        ax.set_ylim(lo - pad, hi + pad)
