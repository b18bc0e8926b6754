"""A study's figures: each experiment's mean curve with a band over its seeds (validation loss,
smoothed train loss, HellaSwag where it was measured), each variant's difference to the baseline
with its 95% interval (coloured by the Holm-corrected test), and, with a learning-rate sweep,
each experiment's final loss against the learning rate with its fitted parabola. Curves are read
from each run's log.txt. A panel is drawn only for a metric with data."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from gptlab.reporting.scope import scale_notes
from gptlab.reporting.stats import MIN_SEEDS, POWER, format_p, welch
from gptlab.training.logger import read_log
from gptlab.training.record import LOWER_IS_BETTER, METRICS


def seed_curves(runs: list[dict], key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(steps, values (seeds, steps)) at the steps every run logged, up to each run's last step."""
    curves = []
    for r in runs:
        log = Path(r["log_dir"]) / "log.txt"
        if not log.is_file():  # a record whose log is gone: its scores are in the table, it has no curve
            continue
        points = dict((s, v) for s, v in read_log(log).get(key, []) if s <= r["step"])
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


def hellaswag_missing(table) -> str:
    """Why no run of the table has a HellaSwag score, in words."""
    runs = [r for row in table.rows for r in row.runs]
    if all((r.get("training_config") or {}).get("hellaswag") is False for r in runs):
        return "HellaSwag: off in these runs (train.hellaswag=false)"
    why = next((r["hellaswag_skipped"] for r in runs if r.get("hellaswag_skipped")), "")
    if why.startswith("could not download"):
        why = "its validation file could not be downloaded (offline?); train.hellaswag_file=PATH scores a local copy"
    return f"HellaSwag: not scored ({why or 'skipped in every run'})"


def study_figures(table, out: Path, suffix: str = "") -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = [_curves(plt, table, out / f"study_curves{suffix}.png"), _deltas(plt, table, out / f"study_deltas{suffix}.png")]
    if table.fits:
        written.append(_lr_figure(plt, table, out / f"study_lr{suffix.removesuffix('_tuned')}.png"))
    return written


def _curves(plt, table, path: Path) -> Path:
    metrics = {"val": "validation loss", "train": "train loss (smoothed)", "hella": "HellaSwag acc_norm"}
    found = {key: [(i, row, seed_curves(row.complete or row.incomplete, key)) for i, row in enumerate(table.rows)]
             for key in metrics}
    keys = [key for key in metrics if any(curve is not None for _, _, curve in found[key])]
    notes = [] if "hella" in keys else [hellaswag_missing(table)]
    base_val = found["val"][0][2]
    if base_val is not None and any(curve is not None for _, _, curve in found["val"][1:]):
        # where the variants part: each one's mean validation loss minus the baseline's, step by step
        metrics["val_delta"] = f"validation loss minus {table.baseline}'s (difference of the means)"
        found["val_delta"] = [(i, row, _difference(curve, base_val)) for i, row, curve in found["val"][1:]]
        keys.insert(1, "val_delta")
    fig, axes = plt.subplots(1, max(1, len(keys)), figsize=(6.5 * max(1, len(keys)), 5.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for i, row, curve in found[key]:
            if curve is None:
                continue
            if key == "val_delta":
                _draw_difference(ax, curve, i, row)
                continue
            steps, values = curve
            if key == "train":
                values = smooth(values, max(1, len(steps) // 10))
            label = f"{_name(row)} (n={values.shape[0]})"
            ax.plot(steps, values.mean(axis=0), color=f"C{i}", linewidth=2 if i == 0 else 1.4, label=label,
                    linestyle="-" if row.complete else ":", marker="." if len(steps) <= 25 else None)
            if values.shape[0] > 1:
                ax.fill_between(steps, values.min(axis=0), values.max(axis=0), color=f"C{i}", alpha=0.18, linewidth=0)
        if table.recipe and key in ("val", "hella"):
            ax.axhline(3.2924 if key == "val" else 0.2955, color="gray", linestyle="--", linewidth=1,
                       label="OpenAI GPT-2 124M")
        if key == "hella":
            ax.axhline(0.25, color="lightgray", linestyle=":", linewidth=1, label="chance (4 endings)")
        elif key == "val_delta":
            ax.axhline(0, color="black", linewidth=0.8)
            _zoom_to_tail(ax, 0.2)
            ax.text(0.01, 0.01, "band: 95% interval of the difference at each step (both arms' spread); the same "
                    "seeds at every step,\nso successive points are not independent evidence: the test is the "
                    "final step's (the table)", transform=ax.transAxes, fontsize=7, color="0.35", va="bottom")
        else:
            _zoom_to_tail(ax, 0.5 if key == "val" else 0.2)
        ax.set(title=metrics[key], xlabel="step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if not keys:
        axes[0][0].text(0.5, 0.5, "no results in these logs", ha="center", va="center", color="gray")
    caption(fig, [table.title, *scale_notes(table, short=True),
                  "mean over seeds; band: min to max over seeds (the difference panel: its 95% interval); dotted: "
                  "incomplete runs" + "".join(f"; {n}" for n in notes)])
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _deltas(plt, table, path: Path) -> Path:
    """Each variant's difference to the baseline: a point with the interval that matches Holm's verdict (it
    excludes 0 exactly when the corrected test is significant), coloured by that verdict; a hollow point
    alone where the difference is not tested (fewer than MIN_SEEDS a side, or no spread). Behind each row,
    the differences below its own minimum detectable effect, at its own seeds."""
    variants, base = table.rows[1:], table.rows[0]
    keys = [key for key in METRICS if base.values(key) and any(row.values(key) for row in variants)]
    fig, axes = plt.subplots(1, max(1, len(keys)), figsize=(6.8 * max(1, len(keys)), 2.0 + 0.6 * max(1, len(variants))),
                             squeeze=False)
    for ax, key in zip(axes[0], keys):
        resolution, shaded = table.resolution.get(key), False
        for y, row in enumerate(variants):
            mine, theirs = row.values(key), base.values(key)
            if not mine or not theirs:
                ax.text(0.02, y, "no complete run on a side", va="center", fontsize=8, color="gray",
                        transform=ax.get_yaxis_transform())
                continue
            delta = float(np.mean(mine) - np.mean(theirs))
            c = row.comparison(key)
            if resolution is not None and min(len(mine), len(theirs)) >= MIN_SEEDS:
                mde = resolution.mde(min(len(mine), len(theirs)))
                ax.fill_betweenx([y - 0.32, y + 0.32], -mde, mde, color="0.88", zorder=0, linewidth=0,
                                 label=None if shaded else f"|Δ| below the row's minimum detectable effect: missed "
                                                           f"more than {1 - POWER:.0%} of the time (not: no effect)")
                shaded = True
            if c is not None:
                better = (c.delta < 0) == LOWER_IS_BETTER[key]
                color = ("C2" if better else "C3") if c.significant else "gray"
                ax.errorbar(c.delta, y, xerr=c.ci_holm(), fmt="o", color=color, capsize=4)
                text = f"{c.delta:+.4f} (p={c.p:.3f}, Holm {format_p(c.p_family)})"
            else:
                ax.plot([delta], [y], "o", mfc="white", color="gray")
                text = f"{delta:+.4f} (n={len(mine)} vs {len(theirs)}: not tested)"
            ax.annotate(text, (delta, y), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8)
        ax.axvline(0, color="black", linewidth=0.8)
        if shaded:
            ax.legend(fontsize=7, loc="lower right")
        ax.set_yticks(range(len(variants)), [_name(row) for row in variants])
        ax.set_ylim(-0.7, len(variants) - 0.3)
        ax.invert_yaxis()
        better = "lower" if LOWER_IS_BETTER[key] else "higher"
        ax.set(title=f"Δ {METRICS[key]} vs {table.baseline} ({better} is better)")
        ax.grid(axis="x", alpha=0.3)
    if not keys:
        axes[0][0].text(0.5, 0.5, "no variant and baseline both with complete runs", ha="center", va="center",
                        color="gray")
    notes = [] if "hellaswag_acc_norm" in keys else [hellaswag_missing(table)]
    title = (f"vs {table.baseline}: mean difference; whiskers: the interval matching Holm's correction (it excludes 0 "
             "exactly when the difference is significant after correction; the table's ± is each comparison's own "
             "95%); green/red: significantly better/worse after Holm's correction; gray: not significant; hollow: "
             f"fewer than {MIN_SEEDS} seeds a side or no spread, not tested")
    caption(fig, [title, *scale_notes(table, short=True), *notes])
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def caption(fig, paragraphs: list[str], fontsize: float = 9) -> None:
    """The figure's title, each paragraph wrapped to the figure's width, with the figure grown to hold it
    above its axes (a long title over a short figure hid its panels)."""
    width, height = fig.get_size_inches()
    lines = [line for text in paragraphs for line in textwrap.wrap(text, int(width * 72 / (fontsize * 0.55)))]
    text_height = len(lines) * fontsize * 1.35 / 72 + 0.15
    fig.tight_layout()
    fig.set_size_inches(width, height + text_height)
    fig.subplots_adjust(top=height / (height + text_height) * fig.subplotpars.top, bottom=fig.subplotpars.bottom *
                        height / (height + text_height))
    fig.suptitle("\n".join(lines), fontsize=fontsize, y=1 - 0.05 / (height + text_height), va="top")


def _lr_figure(plt, table, path: Path) -> Path:
    """Final val loss against the learning rate: each experiment's sweep points, its fitted parabola in
    log(lr), the fitted optimum (a star) and the grid point its seeds trained at (a ring)."""
    fig, ax = plt.subplots(figsize=(8.5, 5.5))
    for i, row in enumerate(table.rows):
        fit = table.fits.get(row.name)
        if fit is None or not fit.points:
            continue
        color = f"C{i}"
        ms = sorted(fit.points)
        found = {"": f"fitted optimum x{fit.optimum:.3g}" if fit.optimum else "", "concave": "the fit is not convex",
                 "flat": "flat", "few": "too few points to fit", "edge-low": "optimum at or below the smallest rate",
                 "edge-high": "optimum at or above the largest rate"}[fit.kind]
        shown = [m for m in ms if m not in fit.diverged and m not in fit.left_out]
        ax.plot([fit.base_lr * m for m in shown], [fit.points[m] for m in shown], "o", color=color,
                label=f"{row.name}: {found}; seeds at x{fit.chosen:g}")
        for m in fit.left_out:  # off the bowl: not fitted, and named at the frame's top rather than drawn there
            ax.annotate(f"x{m:g}: {fit.points[m]:.3g}, left out", (fit.base_lr * m, 1.0), color=color, fontsize=8,
                        ha="center", va="top", xycoords=("data", "axes fraction"))
        if fit.coefficients is not None and fit.kind != "concave":  # a concave parabola has no optimum to show
            grid = np.exp(np.linspace(np.log(fit.fitted[0]), np.log(fit.fitted[-1]), 100))
            ax.plot(fit.base_lr * grid, [fit.predicted(m) for m in grid], "-", color=color, alpha=0.6, linewidth=1)
        if fit.optimum is not None:
            ax.plot([fit.base_lr * fit.optimum], [fit.predicted(fit.optimum)], "*", color=color, markersize=14,
                    markeredgecolor="black")
        if fit.chosen in fit.points:
            ax.plot([fit.base_lr * fit.chosen], [fit.points[fit.chosen]], "o", markersize=13, mfc="none", color=color)
        top = max((fit.points[m] for m in shown), default=0)
        for m in fit.diverged:
            ax.annotate("diverged", (fit.base_lr * m, top), color=color, fontsize=8, ha="center")
    ax.set_xscale("log")
    ax.set(xlabel="max_lr", ylabel="final validation loss (the first seed)",
           title="learning-rate sweep: points, parabola in log(lr), star: fitted optimum, ring: where the seeds train")
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _difference(curve, base) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
    """(steps, the variant's mean minus the baseline's, the half-width of that difference's 95% interval
    (Welch's, both arms' spread) or None where a side has a single seed), at the steps both have."""
    if curve is None:
        return None
    steps = np.intersect1d(curve[0], base[0])
    if not len(steps):
        return None
    mine = curve[1][:, np.searchsorted(curve[0], steps)]
    theirs = base[1][:, np.searchsorted(base[0], steps)]
    delta = mine.mean(axis=0) - theirs.mean(axis=0)
    if min(len(mine), len(theirs)) < 2:
        return steps, delta, None
    half = [c.ci95() if c is not None else 0.0 for c in (welch(list(mine[:, j]), list(theirs[:, j]))
                                                           for j in range(len(steps)))]
    return steps, delta, np.array(half)


def _draw_difference(ax, curve, i: int, row) -> None:
    steps, delta, half = curve
    n = len(row.complete or row.incomplete)
    ax.plot(steps, delta, color=f"C{i}", linewidth=1.4, label=f"{_name(row)} (n={n})",
            linestyle="-" if row.complete else ":", marker="." if len(steps) <= 25 else None)
    if half is not None:
        ax.fill_between(steps, delta - half, delta + half, color=f"C{i}", alpha=0.18, linewidth=0)


def _name(row) -> str:
    return row.experiment + (f" at x{row.lr_multiplier:g}" if row.lr_multiplier is not None else "")


def _zoom_to_tail(ax, after: float) -> None:
    """Losses start near ln(vocab) and fall fast: show the range of the curves past the first
    `after` of the steps (the first evaluations, of an untrained model, are left above the frame)."""
    lines = [line for line in ax.lines if len(line.get_xdata()) > 1]
    last = max((max(line.get_xdata()) for line in lines), default=0)
    ys = [y for line in lines for x, y in zip(line.get_xdata(), line.get_ydata()) if x >= last * after]
    ys += [y for coll in ax.collections for path in coll.get_paths() for x, y in path.vertices if x >= last * after]
    if ys:
        lo, hi = min(ys), max(ys)
        pad = 0.08 * (hi - lo or 1)
        ax.set_ylim(lo - pad, hi + pad)
        # from the first step drawn there, not from a fraction of a step (4.8)
        first = min((x for line in lines for x in line.get_xdata() if x >= last * after), default=last * after)
        ax.set_xlim(first - 0.02 * last, last * 1.02)


def ladder_figures(ladder, out: Path, suffix: str = "") -> list[Path]:
    """A ladder's two figures: loss against compute (each experiment's rungs with their seeds' range, and the
    baseline's fitted law, dashed beyond its rungs), and each variant's worth in the baseline's compute against
    compute (its interval, the line at 1 and the trend)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gptlab.reporting.scaling import LEVEL, VERBS
    names = list(dict.fromkeys([ladder.baseline] + [p.experiment for p in ladder.points]))
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for i, name in enumerate(names):
        mine = sorted((p for p in ladder.points if p.experiment == name), key=lambda p: p.compute)
        c, y = [p.compute for p in mine], [p.loss for p in mine]
        low = [p.loss - min(p.losses) for p in mine]
        high = [max(p.losses) - p.loss for p in mine]
        ax.errorbar(c, y, yerr=[low, high], fmt="o", color=f"C{i}", capsize=3, label=f"{name} (seeds: min to max)")
        for p in mine:
            ax.annotate(p.rung, (p.compute, p.loss), textcoords="offset points", xytext=(4, 4), fontsize=7,
                        color=f"C{i}")
    base = [p.compute for p in ladder.points if p.experiment == ladder.baseline]
    inside = np.geomspace(min(base), max(base), 100)
    law = ladder.law
    ax.plot(inside, law.loss(inside), "-", color="C0", linewidth=1,
            label=f"{ladder.baseline}'s law: {law.l_inf:.3g} + {np.exp(law.log_a):.3g} (C/{law.c0:.2g})^-{law.alpha:.3g}")
    for lo, hi in ((min(base) / 4, min(base)), (max(base), max(base) * 4)):
        span = np.geomspace(lo, hi, 30)
        ax.plot(span, law.loss(span), "--", color="C0", linewidth=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_numbers(ax)
    ax.set(xlabel="compute (training FLOPs)", ylabel="final validation loss",
           title="loss against compute: points are each experiment's rungs; the line is the baseline's law "
                 "(dashed: extrapolated)")
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    first = out / f"ladder_loss{suffix}.png"
    fig.savefig(first, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 5.5))
    for i, name in enumerate(names[1:], start=1):
        mine = sorted((w for w in ladder.worth if w.experiment == name), key=lambda w: w.compute)
        c = [w.compute for w in mine]
        m = [w.multiplier if np.isfinite(w.multiplier) else np.nan for w in mine]
        err = [[max(0.0, w.multiplier - w.interval[0]) if np.isfinite(w.multiplier) else 0 for w in mine],
               [max(0.0, w.interval[1] - w.multiplier) if np.isfinite(w.interval[1]) and np.isfinite(w.multiplier)
                else 0 for w in mine]]
        ax.errorbar(c, m, yerr=err, fmt="o", color=f"C{i}", capsize=4, label=f"{name} ({LEVEL:.0%} intervals)")
        for w in mine:
            ax.annotate(w.rung, (w.compute, w.multiplier), textcoords="offset points", xytext=(4, 4), fontsize=7,
                        color=f"C{i}")
        trend = next((t for t in ladder.trends if t.experiment == name), None)
        if trend is not None and all(np.isfinite(m)):
            x = np.log(c)
            intercept = np.mean(np.log(m) - trend.slope * x)
            span = np.geomspace(min(c), max(c), 50)
            ax.plot(span, np.exp(intercept + trend.slope * np.log(span)), "-", color=f"C{i}", linewidth=1,
                    alpha=0.7, label=f"{name}'s trend: it {VERBS[trend.word]}")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_numbers(ax)
    ax.set(xlabel="compute (training FLOPs)", ylabel="worth in the baseline's compute (x)",
           title="each variant's worth in the baseline's compute: above 1, worth more compute than it cost")
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    second = out / f"ladder_worth{suffix}.png"
    fig.savefig(second, dpi=110)
    plt.close(fig)
    return [first, second]


def _plain_numbers(ax) -> None:
    """A log axis of losses or multipliers reads as numbers (7.1, 1.25), not powers of ten."""
    from matplotlib.ticker import FormatStrFormatter
    ax.yaxis.set_major_formatter(FormatStrFormatter("%.3g"))
    ax.yaxis.set_minor_formatter(FormatStrFormatter("%.3g"))
    ax.tick_params(axis="y", which="minor", labelsize=7)
