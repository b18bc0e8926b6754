"""The report of a study (or of any runs): which variant won, by how much, at what cost, whether
the difference is larger than seed-to-seed noise, and what the study could have detected.

    gptlab report [DIR ...] [--baseline NAME] [--out DIR] [--detect DELTA]

Every run found under the directories (its run.json, or log.txt for a run without one) is
grouped into comparisons: the runs of one study, or else runs with the same preset, data and
fair training fields (see gptlab.study.plan.FAIR_FIELDS). A study with a learning-rate sweep
gives two tables, at the shared rate and at each experiment's tuned rate. In each table, one row
per experiment, in the study's order: mean ± sample std over the complete runs' seeds of the
final validation loss and HellaSwag acc_norm; the difference to the baseline with Welch's t-test,
Holm-corrected over the table's comparisons (one family per metric) and tested only from
MIN_SEEDS seeds a side; a verdict that says what could have been detected where nothing was;
and the costs: parameters, FLOPs/token, KV-cache bytes/token, tokens/s, MFU. Incomplete runs are
listed, never averaged. Prints Markdown, writes report.md, report.csv, report.json.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import math
import os
import statistics
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from gptlab.core.config import GPTConfig, TrainingConfig
from gptlab.files import atomic_write_text
from gptlab.paths import LOG_ROOT, missing
from gptlab.reporting.lr_sweep import LRFit, sweep_fits
from gptlab.reporting.scope import scale_notes
from gptlab.reporting.stats import (MIN_SEEDS, POWER, SIGNIFICANCE, Comparison, adjust, format_p, mean_std,
                                    minimum_detectable_effect, pooled_std, seeds_needed, welch)
from gptlab.training.record import LOWER_IS_BETTER, METRICS, read_record

# published references for the GPT-2 124M recipe on FineWeb-Edu (build-nanogpt's setting)
REFERENCES = {
    "val_loss": [("OpenAI GPT-2 124M on the FineWeb-Edu val shard", 3.2924)],
    "hellaswag_acc_norm": [("OpenAI GPT-2 124M, completion-style scoring as here", 0.2955),
                           ("OpenAI GPT-2 124M in lm-eval-harness", 0.3114),
                           ("GPT-3 124M (paper)", 0.337)],
}


@dataclass
class Row:
    experiment: str  # the label: the experiment's name, and what else differs where it does
    complete: list[dict] = field(default_factory=list)
    incomplete: list[dict] = field(default_factory=list)
    val: tuple | None = None  # (mean, std)
    hella: tuple | None = None
    val_vs_baseline: Comparison | None = None  # tested (MIN_SEEDS a side), Holm-adjusted
    hella_vs_baseline: Comparison | None = None
    name: str = ""  # the experiment's own name
    lr_multiplier: float | None = None  # the multiple of max_lr its runs trained at, in a table of tuned rates
    confounded: list[str] = field(default_factory=list)  # model fields it differs in beyond its named change
    mismatch: list[str] = field(default_factory=list)  # fair settings its runs were trained with unlike the baseline's
    excluded: bool = False  # not compared: trained with other fair settings than the baseline's (not allowed)

    @property
    def runs(self) -> list[dict]:
        return self.complete or self.incomplete

    def values(self, key: str) -> list[float]:
        return _values(self.complete, key)

    def comparison(self, key: str) -> Comparison | None:
        return self.val_vs_baseline if key == "val_loss" else self.hella_vs_baseline


@dataclass
class Resolution:
    """What one table could detect in one metric: the seed-to-seed spread pooled over its
    experiments, and the smallest difference its seeds detect at 80% power and the corrected alpha."""
    metric: str
    sd: float
    df: int  # of the pooled spread
    experiments: int  # pooled over
    seeds: int  # per arm: the fewest complete seeds of a row
    comparisons: int  # the family the alpha is divided over
    alpha: float  # SIGNIFICANCE / comparisons: Holm's strictest step

    @property
    def tested(self) -> bool:
        return self.seeds >= MIN_SEEDS

    def mde(self, seeds: int | None = None) -> float:
        """The minimum detectable effect at `seeds` per arm (default: the table's, or MIN_SEEDS below it)."""
        return minimum_detectable_effect(self.sd, max(seeds or self.seeds, MIN_SEEDS), self.alpha)

    def needed(self, delta: float) -> int | None:
        """Seeds per arm to detect delta (never fewer than a mark needs)."""
        n = seeds_needed(abs(delta), self.sd, self.alpha)
        return None if n is None else max(n, MIN_SEEDS)


@dataclass
class Table:
    """One table: runs comparable with each other, and their baseline."""
    title: str
    baseline: str
    rows: list[Row]
    recipe: bool  # the GPT-2 124M recipe, for which published references apply
    kind: str = ""  # "", "shared" or "tuned": which learning rates a study with a sweep compares at
    spread: str = ""  # what the seed-to-seed spread measured
    resolution: dict[str, Resolution] = field(default_factory=dict)
    fits: dict[str, LRFit] = field(default_factory=dict)  # the learning-rate sweep's fits
    study: bool = False
    notes: list[str] = field(default_factory=list)  # what the table leaves out, and why
    ladder: dict = field(default_factory=dict)  # the ladder rung this table is (its study record's "ladder")
    family: dict[str, int] = field(default_factory=dict)  # per metric, Holm's family where it spans several tables


def find_runs(paths: list[Path], unreadable: list[Path] | None = None) -> list[dict]:
    """The record of every run under paths (a run's own directory, or any directory above); the
    directories whose run.json and log.txt say no run are appended to `unreadable`."""
    dirs = []
    for path in paths:
        found = {p.parent for pattern in ("run.json", "log.txt") for p in path.rglob(pattern)}
        dirs += [d for d in sorted(found) if d not in dirs]
    records = []
    for d in dirs:
        r = read_record(d)
        if r and r.get("experiment"):
            records.append(r)
        elif unreadable is not None:
            unreadable.append(d)
    return records


def group(records: list[dict], baseline: str | None = None) -> list[Table]:
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(_comparison_key(r), []).append(r)
    tables = []
    for runs in groups.values():
        if any((r.get("study") or {}).get("lr_sweep") for r in runs):
            tables += _sweep_tables(runs, baseline)
        else:
            tables.append(_table(runs, baseline))
    return tables


def _sweep_tables(runs: list[dict], baseline: str | None) -> list[Table]:
    """A study with a learning-rate sweep: the table at the shared rate, and the one at each experiment's tuned
    rate (the seeds after the first, at the grid point its fit chose: the sweep's own run there was picked for
    its low loss) for the experiments whose sweep is complete, and only once the baseline's is. Their
    comparisons are corrected together. The sweep's fits go with the tuned table, or with the shared one
    while the tuned seeds have not trained."""
    study = next(r["study"] for r in runs if (r.get("study") or {}).get("lr_sweep"))
    fits = sweep_fits(runs)
    shared = _table([r for r in runs if _multiplier(r) == 1.0], baseline, kind="shared")
    base = shared.rows[0].name
    waiting = {name: "its sweep is missing " + ", ".join(f"x{m:g}" for m in fit.missing)
               for name, fit in fits.items() if not fit.complete}
    tuned_runs = [] if base in waiting else [
        r for r in runs if r["experiment"] in fits and r["experiment"] not in waiting
        and _multiplier(r) == fits[r["experiment"]].chosen and r.get("seed") != study.get("first_seed")]
    tuned = _table(tuned_runs, baseline, kind="tuned") if tuned_runs else None
    if tuned is not None and tuned.rows[0].name != base:  # the baseline's tuned seeds have not trained yet
        tuned = None
    (tuned or shared).fits = fits
    if base in waiting:
        shared.notes.append(f"No table at each experiment's tuned rate yet: the baseline ({base}) {waiting[base]}; "
                            f"the same study command trains what is missing.")
    elif tuned is None:
        shared.notes.append("The sweep is fitted (below); the seeds at each experiment's tuned rate have not "
                            "trained yet: the same study command trains them.")
    else:
        tuned.notes += [f"{name} is not in this table: {why}; the same study command trains it."
                        for name, why in waiting.items()]
    tables = [shared] + ([tuned] if tuned is not None else [])
    if tuned is not None:
        correct_together(tables)
    return tables


def correct_together(tables: list[Table]) -> None:
    """Holm's correction over the comparisons of several tables at once (a sweep study's shared and tuned
    rates: reading both is testing both), per metric."""
    for key in METRICS:
        cells, made = [], 0
        for table in tables:
            rows = table.rows
            made += sum(bool(row.values(key)) and not row.excluded for row in rows[1:]) if rows[0].values(key) else 0
            cells += [(row, row.comparison(key)) for row in rows[1:]]
        raw = [None if c is None else replace(c, p_adjusted=None) for _, c in cells]
        for (row, _), comparison in zip(cells, adjust(raw, family=made)):
            setattr(row, "val_vs_baseline" if key == "val_loss" else "hella_vs_baseline", comparison)
        for table in tables:
            table.family[key] = made


def _table(runs: list[dict], baseline: str | None, kind: str = "", fits: dict | None = None) -> Table:
    study = runs[0].get("study") or {}
    experiments = list(dict.fromkeys(r["experiment"] for r in runs))
    base_name = next((n for n in (baseline, _stem(study.get("baseline")), "baseline") if n in experiments),
                     experiments[0])
    labels = _labels(runs, base_name, bool(study))
    names = _ordered(list(dict.fromkeys(labels[id(r)][0] for r in runs)), study)
    base = next(n for n in names if n.split(" (")[0] == base_name)
    rows = []
    for name in [base] + [n for n in names if n != base]:
        row = Row(name, name=name.split(" (")[0])
        seen = set()
        for r in sorted((r for r in runs if labels[id(r)][0] == name), key=lambda r: str(r.get("seed"))):
            if r.get("status") == "complete" and r.get("seed") in seen:  # a copy of a seed is not a new sample
                r = {**r, "status": f"a repeat of seed {r.get('seed')}"}
            (row.complete if r.get("status") == "complete" else row.incomplete).append(r)
            if r.get("status") == "complete":
                seen.add(r.get("seed"))
        row.val = _mean_std(row.complete, "val_loss")
        row.hella = _mean_std(row.complete, "hellaswag_acc_norm")
        row.confounded = labels[id(row.runs[0])][1]
        if kind == "tuned":
            row.lr_multiplier = _multiplier(row.runs[0])
        rows.append(row)
    table = Table(_title(runs, study, kind), base, rows, _is_recipe(runs), kind=kind, spread=_spread(runs),
                  fits=fits or {}, study=bool(study), ladder=study.get("ladder") or {})
    wanted = baseline or _stem(study.get("baseline"))
    if wanted and wanted != base_name:
        table.notes.append(f"The baseline {wanted} has no run in this table: its rows are compared with {base_name}.")
    if study:  # a study's runs were planned fair; what their records say is checked all the same
        for row in rows:
            row.mismatch = setting_differences(row.runs, rows[0].runs[0], kind)
            allowed = {f for r in row.runs for f in (r.get("study") or {}).get("unfair", [])}
            row.excluded = row is not rows[0] and bool(row.mismatch) and not all(
                m.split()[0].removeprefix("train.") in allowed for m in row.mismatch)
        if rows[0].mismatch:
            table.notes.append(f"The baseline's own runs differ in {', '.join(rows[0].mismatch)}: its seeds are not "
                               f"one setting, and no row is a clean comparison.")
    for key in METRICS:
        made = sum(bool(row.values(key)) and not row.excluded for row in rows[1:]) if rows[0].values(key) else 0
        compared = adjust([None if row.excluded else _tested(row, rows[0], key) for row in rows[1:]], family=made)
        for row, comparison in zip(rows[1:], compared):
            setattr(row, "val_vs_baseline" if key == "val_loss" else "hella_vs_baseline", comparison)
        resolution = _resolution(rows, key)
        if resolution:
            table.resolution[key] = resolution
    return table


def _tested(row: Row, base: Row, key: str) -> Comparison | None:
    """Welch's test of the row against the baseline, where both have MIN_SEEDS complete seeds and a spread
    (seeds that all gave the same loss, on both sides, leave nothing to test a difference against)."""
    mine, theirs = row.values(key), base.values(key)
    if min(len(mine), len(theirs)) < MIN_SEEDS or no_spread(mine, theirs):
        return None
    return welch(mine, theirs)


def no_spread(*groups: list[float]) -> bool:
    """Every seed of every group gave the same value as the others of its group."""
    return all(len(set(g)) <= 1 for g in groups)


def setting_differences(runs: list[dict], reference: dict, kind: str = "") -> list[str]:
    """The fair settings (preset, the training fields every run of a comparison must share) these runs were
    trained with unlike the reference run, as `train.max_lr 0.0018 vs 0.0006`. Free: an optimizer's own fields
    (its named change), and in a table of tuned rates the learning rates."""
    from gptlab.optim import OPTIMIZER_FIELDS
    from gptlab.study.plan import FAIR_FIELDS
    mine = {}
    theirs = reference.get("training_config") or {}
    for r in runs:
        if r.get("preset") != reference.get("preset"):
            mine["preset"] = f"preset {r.get('preset')} vs {reference.get('preset')}"
        cfg = r.get("training_config") or {}
        for f in FAIR_FIELDS:
            if f in OPTIMIZER_FIELDS or (kind == "tuned" and f == "max_lr"):
                continue
            if f in cfg and f in theirs and cfg[f] != theirs[f]:
                mine[f] = f"train.{f} {cfg[f]!r} vs {theirs[f]!r}"
    return list(mine.values())


def _resolution(rows: list[Row], key: str) -> Resolution | None:
    measured = [row.values(key) for row in rows if row.values(key)]
    pooled = pooled_std(measured)
    if pooled is None or len(measured) < 2 or pooled[0] == 0:
        return None
    comparisons = len(measured) - 1
    return Resolution(key, pooled[0], pooled[1], sum(len(v) > 1 for v in measured), min(len(v) for v in measured),
                      comparisons, SIGNIFICANCE / comparisons)


def _comparison_key(r: dict) -> str:
    study = r.get("study")
    if study:
        return json.dumps(["study", study.get("name"), str(_study_root(r))])
    from gptlab.study.plan import FAIR_FIELDS
    cfg = r.get("training_config") or {}
    return json.dumps([r.get("preset"), r.get("data_fingerprint"), [cfg.get(f) for f in FAIR_FIELDS]], default=str)


def _study_root(r: dict) -> Path:
    """The study's directory: the run's directory less its place in the study (<experiment>/[lrM/]seed<N>)."""
    where = (r.get("study") or {}).get("run")
    depth = len(Path(where).parts) if isinstance(where, str) and where else 2
    return Path(r["log_dir"]).parents[depth - 1]


def _multiplier(r: dict) -> float:
    return float((r.get("study") or {}).get("lr_multiplier", 1.0))


def _stem(name) -> str | None:
    """An experiment as a record names it: a path given to a study is its file's stem."""
    return Path(name).stem if isinstance(name, str) and name.endswith(".py") else name


def _ordered(names: list[str], study: dict) -> list[str]:
    """Rows in the study's order of experiments, else as found."""
    order = [_stem(e) for e in study.get("experiments") or []]
    return sorted(names, key=lambda n: order.index(n.split(" (")[0]) if n.split(" (")[0] in order else len(order))


def _labels(runs: list[dict], base_name: str, in_study: bool) -> dict[int, tuple[str, list[str]]]:
    """Each run's row label and what confounds it: the experiment's name; with the model fields
    that set its runs apart where one experiment ran with several configs; and, outside a study,
    with the fields it differs from the baseline in beyond what its experiment file names."""
    labels = {}
    base_runs = [r for r in runs if r["experiment"] == base_name]
    base_config = (base_runs[0].get("model_config") or {}) if base_runs else None
    for r in runs:
        same = [o for o in runs if o["experiment"] == r["experiment"]]
        mine = r.get("model_config") if isinstance(r.get("model_config"), dict) else {}
        configs = {json.dumps(o.get("model_config"), sort_keys=True, default=str) for o in same}
        parts, confounded = [], []
        if len(configs) > 1:
            others = [o.get("model_config") if isinstance(o.get("model_config"), dict) else {} for o in same]
            parts = [f"{k}={mine[k]}" for k in sorted(mine) if any(o.get(k) != mine[k] for o in others)]
        if not in_study and isinstance(base_config, dict) and r["experiment"] != base_name:
            named = {**(base_runs[0].get("experiment_model_fields") or {}), **(r.get("experiment_model_fields") or {})}
            confounded = [f"{k} {mine[k]} vs {base_config.get(k)}" for k in sorted(mine)
                          if mine[k] != base_config.get(k) and k not in named]
            if confounded:
                parts.append(", ".join(confounded) + ": confounded")
        labels[id(r)] = (r["experiment"] + (f" ({'; '.join(parts)})" if parts else ""), confounded)
    return labels


def _title(runs: list[dict], study: dict, kind: str) -> str:
    r = runs[0]
    cfg = r.get("training_config") or {}
    steps, batch, val = (cfg.get(k) if isinstance(cfg.get(k), int) else 0
                         for k in ("max_steps", "total_batch_size", "val_tokens"))
    name = f"{study['name']}: " if study else ""
    where = _study_root(r) if study else Path(os.path.commonpath([str(run["log_dir"]) for run in runs]))
    rate = {"shared": f", at the shared learning rate (max_lr {cfg.get('max_lr', 0) / _multiplier(r):.3g})",
            "tuned": ", at each experiment's tuned learning rate"}.get(kind, "")
    return (f"{name}preset {r.get('preset')}, {steps:,} steps x {batch:,} tokens = {steps * batch:,} tokens, "
            f"val {val:,} tokens, data fingerprint {r.get('data_fingerprint')}{rate} ({where})")


def _spread(runs: list[dict]) -> str:
    orders = {(r.get("training_config") or {}).get("data_order", "fixed") for r in runs}
    if orders == {"seeded"}:
        return "seeds vary the initialisation and the order of the training data (train.data_order=seeded)"
    if orders == {"fixed"}:
        return ("seeds vary the initialisation only: every seed reads the same batches in the same order "
                "(train.data_order=seeded varies the order too)")
    return "seeds vary the initialisation, and the order of the training data in some runs only"


def _is_recipe(runs: list[dict]) -> bool:
    """Runs of the GPT-2 124M recipe: GPT-2's model and build-nanogpt's training config."""
    base_model, base_train = dataclasses.asdict(GPTConfig()), dataclasses.asdict(TrainingConfig())
    from gptlab.study.plan import FAIR_FIELDS
    return any(r["experiment"] == "baseline" and r.get("model_config") == base_model
               and all((r.get("training_config") or {}).get(f) == base_train[f] for f in FAIR_FIELDS
                       if f not in ("data", "data_dir", "hellaswag_file"))
               for r in runs)


def _values(runs: list[dict], key: str) -> list[float]:
    return [float(r[key]) for r in runs if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)
            and math.isfinite(r[key])]


def _mean_std(runs: list[dict], key: str) -> tuple | None:
    values = _values(runs, key)
    return mean_std(values) if values else None


def _mean(runs: list[dict], key: str) -> float | None:
    values = _values(runs, key)
    return statistics.fmean(values) if values else None


# ---- the verdict of a row

def verdict(row: Row, base: Row, table: Table, key: str = "val_loss") -> str:
    """What the row's difference to the baseline in one metric says, in words."""
    mine, theirs = row.values(key), base.values(key)
    if not mine or not theirs:
        return "-"
    if row.excluded:
        return (f"not compared: trained with other settings than the baseline ({', '.join(row.mismatch)}); a study "
                f"compares one setting")
    delta = statistics.fmean(mine) - statistics.fmean(theirs)
    resolution = table.resolution.get(key)
    c = row.comparison(key)
    if c is None and min(len(mine), len(theirs)) >= MIN_SEEDS and no_spread(mine, theirs):
        return ("no test: every seed gave the same loss on both sides, so there is no spread to judge a difference "
                "by (the seeds vary nothing here: dropout 0 and a fixed data order make seeds differ only in "
                "initialisation, which should differ; check the seeds)")
    if c is None:
        if resolution is None:
            return "one seed a side: no test; the seed-to-seed spread is unknown: train 3 seeds or more"
        n = resolution.needed(delta)
        need = (f"a difference of {abs(delta):.4f} needs {n} seeds per arm" if n else
                f"a difference of {abs(delta):.4f} needs more than 100,000 seeds per arm")
        return f"not tested: {len(mine)} and {len(theirs)} seeds (a mark needs {MIN_SEEDS} a side); {need}"
    if c.significant:
        better = (c.delta < 0) == LOWER_IS_BETTER[key]
        return f"{'better' if better else 'worse'} {c.mark()}"
    detectable = f"differences of {resolution.mde(min(len(mine), len(theirs))):.4f} or more would have been detected" \
        if resolution else "the spread is unknown"
    if abs(c.delta) <= c.ci95():
        return f"inconclusive: {detectable}"
    return f"not significant after Holm's correction over {c.family} comparisons (raw p={c.p:.3f}); {detectable}"


# ---- rendering

def _pm(stats: tuple | None, digits: int = 4) -> str:
    if stats is None:
        return "-"
    mean, std = stats
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if std is not None else f"{mean:.{digits}f}"


def _delta(row: Row, base: Row, key: str, digits: int = 4) -> str:
    """The difference of the means, ± the 95% interval of this comparison where both sides have a spread."""
    mine, theirs = row.values(key), base.values(key)
    if not mine or not theirs:
        return "-"
    c = row.comparison(key)  # an untested row (fewer than MIN_SEEDS a side) gets no interval: none is claimed
    delta = statistics.fmean(mine) - statistics.fmean(theirs)
    return f"{delta:+.{digits}f} ± {c.ci95():.{digits}f}" if c is not None else f"{delta:+.{digits}f}"


def _test_cells(c: Comparison | None) -> list[str]:
    """df, p, Holm's p and its mark."""
    if c is None:
        return ["-", "-", "-"]
    df = "∞" if math.isinf(c.df) else f"{c.df:.1f}"
    return [df, format_p(c.p), f"{format_p(c.p_family)} {c.mark()}".replace(" not significant", "")]


def _hella_cell(row: Row, base: Row) -> str:
    text = _delta(row, base, "hellaswag_acc_norm")
    c = row.hella_vs_baseline
    if c is not None:
        text += f" (df {c.df:.1f}, p={format_p(c.p)}, Holm {format_p(c.p_family)} {c.mark()})"
    elif text != "-":
        text += " (not tested)"
    return text


def _si(n: float | None, unit: str = "") -> str:
    if n is None:
        return "-"
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}{unit}"
    return f"{n:g}{unit}"


COLUMNS = ["experiment", "seeds", "val loss", "Δ val vs baseline", "df", "p", "p Holm", "verdict",
           "HellaSwag acc_norm", "Δ acc_norm", "params", "non-emb params", "FLOPs/token", "KV bytes/token (bf16)",
           "tok/s", "MFU", "steps", "val@2x/4x/8x", "notes"]


def row_cells(row: Row, base: Row, table: Table) -> list[str]:
    runs, first = row.complete, row.runs[0]
    notes = []
    unfair = sorted({f for r in row.runs for f in (r.get("study") or {}).get("unfair", [])})
    if unfair:
        notes.append("UNFAIR: changes " + ", ".join(f"train.{f}" for f in unfair))
    base_data = {r.get("data_fingerprint") for r in base.runs}
    if any(r.get("data_fingerprint") not in base_data for r in row.runs):
        notes.append("UNFAIR: other data than the baseline's (data fingerprint)")
    optimizer = (first.get("classes") or {}).get("optimizer_class")
    if optimizer and not optimizer.endswith(".AdamW"):  # the recipe's optimizer goes unsaid
        notes.append(f"optimizer {optimizer.rsplit('.', 1)[-1]}")
    if row.confounded:
        notes.append(f"CONFOUNDED: differs from the baseline in {', '.join(row.confounded)}, which its experiment "
                     f"file does not name: the difference is not the experiment's alone")
    if row.mismatch and not row.excluded and row is not base:
        notes.append(f"UNFAIR: trained with {', '.join(row.mismatch)} (allowed by the study)")
    for r in row.incomplete:
        notes.append(f"seed {r.get('seed')} {r.get('status')} at step {r.get('step')}/{r.get('max_steps')}"
                     f" (not averaged)")
    for r in row.runs:
        notes += [f"seed {r.get('seed')}: {w}" for w in r.get("warnings") or []]
    steps = sorted({f"{r.get('step')}/{r.get('max_steps')}" for r in runs}) or ["-"]
    mfu = _mean(runs, "mfu")
    name = row.experiment + (" (baseline)" if row is base and row.name != "baseline" else "")
    if row.lr_multiplier is not None:
        name += f" at x{row.lr_multiplier:g}"
    is_base = row is base
    return [
        name,
        ", ".join(str(r.get("seed")) for r in runs) or "none complete",
        _pm(row.val),
        "" if is_base else _delta(row, base, "val_loss"),
        *(["", "", ""] if is_base else _test_cells(row.val_vs_baseline)),
        "" if is_base else verdict(row, base, table),
        _pm(row.hella),
        "" if is_base else _hella_cell(row, base),
        _params(first), _si(first.get("params_non_embedding")), _si(first.get("flops_per_token")),
        f"{first['kv_cache_bytes_per_token']:,}" if first.get("kv_cache_bytes_per_token") else "-",
        f"{_mean(runs, 'tok_per_sec'):,.0f}{' †' if any(map(loaded, runs)) else ''}" if _mean(runs, "tok_per_sec")
        else "-",
        f"{mfu:.1f}%" if mfu is not None else "-",
        ", ".join(steps),
        _lengths(runs),
        "; ".join(notes),
    ]


def _params(record: dict) -> str:
    """Parameters, and those a token uses where fewer (a mixture of experts): `453M (124M active)`."""
    total, active = record.get("params"), record.get("params_active")
    return _si(total) + (f" ({_si(active)} active)" if active and total and active != total else "")


def _lengths(runs: list[dict]) -> str:
    """Mean validation loss at 2x, 4x, 8x the training length (from `gptlab eval-lengths`)."""
    measured = [r for r in runs if isinstance(r.get("lengths"), dict)]
    if not measured:
        return "-"
    found = [r["lengths"] for r in measured if r["lengths"].get("step") == r.get("step")]  # of the final weights
    if not found:
        return f"stale (measured at step {measured[0]['lengths'].get('step')}; run eval-lengths again)"
    cells = []
    for factor in ("2", "4", "8"):
        values = [f["losses"].get(factor) for f in found if isinstance(f.get("losses"), dict)]
        values = [v for v in values if isinstance(v, (int, float))]
        if values and len(values) < len(runs):  # a mean of some seeds is not the row's: say how many
            cells.append(f"n/a ({len(values)} of {len(runs)} seeds measured)")
        else:
            cells.append(f"{statistics.fmean(values):.3f}" if values else "n/a")
    if cells == ["n/a"] * 3 and any(f.get("why") for f in found):
        return "not defined past block_size"
    return " / ".join(cells)


def legend(table: Table) -> list[str]:
    """The lines under a table: how to read it, what it could detect, what its spread measures."""
    made = sum(bool(row.values("val_loss")) and not row.excluded for row in table.rows[1:])
    family = (f"study's {table.family['val_loss']} comparison(s) with the baseline, in both its tables (the shared and "
              f"the tuned rates: reading both is testing both)" if table.family.get("val_loss") else
              f"table's {made} comparison(s) with the baseline")
    lines = [f"Δ: variant minus baseline ({table.baseline}), ± the 95% confidence interval of that comparison alone; "
             f"Welch's t-test over seeds (df: Welch-Satterthwaite). p Holm: Holm's step-down correction over the "
             f"{family} (val loss and HellaSwag are separate families; a "
             f"comparison not tested counts as not rejected); the mark follows it: `*` < 0.05, `**` < 0.01. A "
             f"difference is tested only with at least {MIN_SEEDS} complete seeds on each side. Lower val loss is "
             f"better, higher acc_norm is better.",
             f"Spread: {table.spread}."]
    for key, r in table.resolution.items():
        at = (f"with {r.seeds} seeds per arm" if r.tested else
              f"rows with fewer than {MIN_SEEDS} seeds are not tested; with {MIN_SEEDS} seeds per arm")
        lines.append(f"Resolution ({METRICS[key]}): seed-to-seed std {r.sd:.4f}, pooled over {r.experiments} "
                     f"experiments (df {r.df}); {at}, at alpha = {SIGNIFICANCE:g}/{r.comparisons} (Holm's strictest "
                     f"step) and {POWER:.0%} power, differences of {r.mde():.4f} or more would be detected.")
    if table.resolution:
        lines.append("`gptlab report DIR --detect DELTA` gives the seeds per arm a smaller difference would need.")
    complete = [r for row in table.rows for r in row.complete]
    lines += throughput_notes(complete) + code_notes(complete)
    return lines


def code_notes(runs: list[dict]) -> list[str]:
    """Runs trained by different versions of gptlab's code (edited between a study's submissions): a
    difference between rows may be the code's."""
    versions: dict[str, list[str]] = {}
    for r in runs:
        for v in r.get("code_versions") or ([{"code": r["code"]}] if r.get("code") else []):
            versions.setdefault(v["code"], []).append(f"{r['experiment']} seed {r.get('seed')}")
    if len(versions) < 2:
        return []
    return [f"CODE: these runs were trained by {len(versions)} versions of gptlab's code (" + "; ".join(
        f"{code}: {len(who)} run(s)" for code, who in versions.items()) + "): a difference between rows may be the "
        "code's, not the experiments'. Retrain the older runs (or a new --out) to compare one version."]


# a CPU run whose machine's load average exceeded this many times its CPUs shared them with other work
LOADED = 1.5


def loaded(record: dict) -> bool:
    """Whether a CPU run's tokens/s were measured on a machine busy with other work."""
    load, cpus = record.get("load"), record.get("cpus")
    return (record.get("device") == "cpu" and isinstance(load, (int, float)) and isinstance(cpus, int)
            and load > LOADED * cpus)


def throughput_notes(runs: list[dict]) -> list[str]:
    """When tok/s and MFU cannot be compared across rows: runs on other devices, or on a busy machine."""
    notes = []
    devices = sorted({f"{r.get('device')}" + (f" ({r['cpu']})" if r.get("device") == "cpu" and r.get("cpu") else "")
                      for r in runs if r.get("device")})
    if len(devices) > 1:
        notes.append(f"tok/s and MFU were measured on different devices ({'; '.join(devices)}): not comparable across "
                     f"rows.")
    busy = [r for r in runs if loaded(r)]
    if busy:
        worst = max(busy, key=lambda r: r["load"] / r["cpus"])
        notes.append(f"† tok/s measured while the machine was busy with other work (load average up to "
                     f"{worst['load']:.1f} on {worst['cpus']} CPUs, in {len(busy)} of {len(runs)} runs): it measures "
                     f"the contention, not the architecture. `gptlab bench` compares speeds side by side in one "
                     f"process.")
    return notes


def sweep_lines(table: Table) -> list[str]:
    """The learning-rate sweep: each experiment's final val loss at each multiplier, and its optimum."""
    grid = sorted({m for fit in table.fits.values() for m in [*fit.points, *fit.diverged, *fit.missing]})
    base_lr = next(iter(table.fits.values())).base_lr
    head = ["experiment"] + [f"x{m:g}" for m in grid] + ["fitted optimum", "seeds train at", "note"]
    out = [f"Learning-rate sweep (the first seed; final val loss at each multiple of max_lr {base_lr:.3g}):", "",
           "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for row in table.rows:
        fit = table.fits.get(row.name)
        if fit is None:
            continue
        cells = [("diverged" + (f" ({fit.points[m]:.4g})" if m in fit.points else "")) if m in fit.diverged else
                 f"{fit.points[m]:.4f}" + (" (left out)" if m in fit.left_out else "") if m in fit.points else
                 "missing" for m in grid]
        optimum = f"x{fit.optimum:.3g} (max_lr {fit.base_lr * fit.optimum:.3g})" if fit.optimum else "-"
        excess = fit.excess()
        chosen = f"x{fit.chosen:g}" + (f" (+{excess:.4f} predicted over the optimum)" if excess is not None else "")
        out.append("| " + " | ".join([row.name, *cells, optimum, chosen, fit.flag]) + " |")
    out.append("")
    out.append("A parabola in log(lr) is fitted through each experiment's best point and up to two points on each "
               "side; its seeds train at the grid point nearest the fitted optimum (the bowl is flat near its bottom), "
               "never beyond the grid. A run that diverged or ended at or above the untrained model's loss (ln of the "
               "vocabulary) is a divergence; a point more than half-way from the best loss up to that is left out of "
               "the fit. The tuned table leaves out the sweep's own run at the chosen point: it was picked for its "
               "low loss.")
    return out


def markdown(tables: list[Table]) -> str:
    out = []
    for table in tables:
        base = table.rows[0]
        out.append(f"### {table.title}\n")
        out += [f"**{note}**\n" for note in scale_notes(table)]
        out.append("| " + " | ".join(COLUMNS) + " |")
        out.append("|" + "|".join("---" for _ in COLUMNS) + "|")
        for row in table.rows:
            out.append("| " + " | ".join(row_cells(row, base, table)) + " |")
        out.append("")
        out += legend(table)
        out += table.notes
        if table.fits:
            out.append("")
            out += sweep_lines(table)
        out.append(_card(table))
        out.append("")
    return "\n".join(out)


def detect_lines(tables: list[Table], delta: float) -> str:
    """--detect DELTA: the seeds per arm each table needs to detect a difference of DELTA in val loss."""
    out = []
    for table in tables:
        r = table.resolution.get("val_loss")
        if r is None:
            why = (f"one experiment ({table.rows[0].experiment}) and nothing to compare it with" if len(table.rows) < 2
                   else "no experiment with two seeds or more")
            out.append(f"{table.title}: no seed-to-seed spread to plan with ({why}); a study of a baseline and "
                       "its variants, 3 seeds or more each, has one")
            continue
        n = r.needed(delta)
        needs = f"{n} seeds per arm" if n else "more than 100,000 seeds per arm"
        has = ", ".join(f"{row.experiment} {len(row.values('val_loss'))}" for row in table.rows)
        out.append(f"{table.title}:\n  a val-loss difference of {delta:g} needs {needs} to be detected with "
                   f"{POWER:.0%} power at alpha = {SIGNIFICANCE:g}/{r.comparisons} (seed-to-seed std {r.sd:.4f}, "
                   f"pooled over {r.experiments} experiments, df {r.df}); the complete seeds it has: {has}")
    return "\n".join(out)


def _card(table: Table) -> str:
    if not table.recipe:
        return ("Published references (OpenAI GPT-2 124M: val loss 3.2924 on FineWeb-Edu, HellaSwag acc_norm 0.2955) "
                "apply to the GPT-2 124M recipe only (preset gpt2, FineWeb-Edu), not to these runs.")
    base = table.rows[0]
    lines = ["Baseline card, GPT-2 124M recipe (build-nanogpt's setting):"]
    ours = {"val_loss": base.val, "hellaswag_acc_norm": base.hella}
    for key, refs in REFERENCES.items():
        for name, value in refs:
            lines.append(f"- {key}: {name} {value}; this baseline {_pm(ours[key])}")
    return "\n".join(lines)


def as_json(tables: list[Table]) -> list[dict]:
    def comparison(c: Comparison | None) -> dict | None:
        return None if c is None else {**dataclasses.asdict(c), "ci95": c.ci95(), "mark": c.mark()}
    return [{"title": t.title, "baseline": t.baseline, "gpt2_recipe": t.recipe, "kind": t.kind, "spread": t.spread,
             "resolution": {k: {**dataclasses.asdict(r), "mde": r.mde()} for k, r in t.resolution.items()},
             "lr_sweep": {name: {"base_lr": f.base_lr, "points": f.points, "diverged": f.diverged, "missing": f.missing,
                                 "coefficients": f.coefficients, "optimum": f.optimum, "chosen": f.chosen,
                                 "flag": f.flag} for name, f in t.fits.items()},
             "rows": [
        {"experiment": row.experiment, "lr_multiplier": row.lr_multiplier, "val_loss": row.val,
         "hellaswag_acc_norm": row.hella, "val_vs_baseline": comparison(row.val_vs_baseline),
         "hella_vs_baseline": comparison(row.hella_vs_baseline),
         "verdict": None if row is t.rows[0] else verdict(row, t.rows[0], t), "confounded": row.confounded,
         "runs": [{k: r.get(k) for k in ("log_dir", "seed", "status", "step", "max_steps", "val_loss", "val_loss_best",
                                         "hellaswag_acc_norm", "hellaswag_acc", "params", "params_non_embedding",
                                         "flops_per_token", "kv_cache_bytes_per_token", "tok_per_sec", "mfu", "device",
                                         "world_size", "git_commit", "lengths", "study")}
                  for r in row.complete + row.incomplete]}
        for row in t.rows]} for t in tables]


def as_csv(tables: list[Table]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["comparison"] + COLUMNS)
    for table in tables:
        for row in table.rows:
            writer.writerow([table.title] + row_cells(row, table.rows[0], table))
    return buffer.getvalue()


def planned_but_absent(paths: list[Path], records: list[dict]) -> list[str]:
    """The runs a study's study.json lists (under any of paths) that have no record: a seed the report would
    otherwise drop without a word."""
    found = {str(Path(r["log_dir"]).resolve()) for r in records}
    absent = []
    for path in paths:
        for definition in sorted(Path(path).rglob("study.json")):
            try:
                planned = json.loads(definition.read_text(encoding="utf-8"))["runs"]
                for run in planned:
                    if str((definition.parent / run["log_dir"]).resolve()) not in found:
                        rate = "" if run.get("lr_multiplier", 1.0) == 1.0 else f" at x{run['lr_multiplier']:g}"
                        where = definition.parent / run["log_dir"]
                        absent.append(f"{run['experiment']}{rate} seed {run['seed']} ({where})")
            except (OSError, ValueError, KeyError, TypeError):
                continue
    return absent


def ladder_sections(tables: list[Table], law: dict | None = None) -> list[tuple[str, list[str], object]]:
    """Each ladder among the tables: (its root, its section's lines, the analysis or None where it cannot be
    fitted yet). A rung's experiments are read from its table at each experiment's tuned rate where it has one.
    `law`: L_inf and/or alpha pinned (over the study's own LAW)."""
    from gptlab.reporting.scaling import FitError, Point, analyse, ladder_lines
    from gptlab.reporting.scope import recipe_cost, toy
    from gptlab.study.rungs import LADDER_LR_WORDS
    by_root: dict[str, dict[str, Table]] = {}
    for table in tables:
        if table.ladder:
            rungs = by_root.setdefault(table.ladder["root"], {})
            if table.kind == "tuned" or table.ladder["rung"] not in rungs:
                rungs[table.ladder["rung"]] = table
    sections = []
    for root, rungs in by_root.items():
        info = next(iter(rungs.values())).ladder
        points = []
        for rung, table in rungs.items():
            for row in table.rows:
                runs = row.complete
                if not runs or not row.values("val_loss"):
                    continue
                compute = statistics.fmean(r["flops_per_token"] * r["tokens"] for r in runs)
                rates = [r["flops_per_token"] * r["tok_per_sec"] for r in runs if r.get("tok_per_sec")]
                device = runs[0].get("device") or ""
                device += f" ({runs[0]['cpu']})" if device == "cpu" and runs[0].get("cpu") else ""
                points.append(Point(rung, row.name, row.values("val_loss"), compute,
                                    statistics.fmean(rates) if rates else None, device))
        baseline = next(iter(rungs.values())).rows[0].name
        largest = max((r for t in rungs.values() for r in t.rows[0].complete), key=lambda r: r["tokens"] or 0,
                      default=None)
        note = ""
        if largest and toy(largest.get("params_non_embedding") or 0, largest.get("tokens") or 0):
            note = ("A toy ladder: its largest rung is "
                    f"{(largest.get('params_non_embedding') or 0) / 1e6:.3g}M non-embedding parameters on "
                    f"{(largest.get('tokens') or 0) / 1e6:.3g}M tokens. It shows the method (the law, each variant's "
                    f"worth and its interval, the trend) on real runs; its numbers do not predict GPT-2's scale, "
                    f"where a variant's worth is measured on rungs near it (docs/ladders.md gives that ladder's cost).")
        cost = recipe_cost()
        pinned = {**(info.get("law") or {}), **(law or {})}
        how = []  # which rungs were swept, which transferred, under which parametrization
        for rung, table in rungs.items():
            lr = table.ladder.get("lr") or {}
            if lr.get("swept"):
                how.append(f"{rung} swept")
            elif lr.get("multipliers"):
                how.append(f"{rung} at the rates {lr.get('from')}'s sweep chose (" + ", ".join(
                    f"{n} x{m:g}" for n, m in lr["multipliers"].items()) + ")")
        first = next(iter(rungs.values())).rows[0].runs[0]
        parametrization = (first.get("model_config") or {}).get("parametrization", "standard")
        words = LADDER_LR_WORDS.get(info["lr"]["mode"], "") + (f" ({'; '.join(how)})" if how else "") + \
            f"; parametrization: {parametrization}"
        try:
            ladder = analyse(points, baseline, l_inf=pinned.get("l_inf"), alpha=pinned.get("alpha"),
                             target=("GPT-2 124M on 10B tokens", cost["flops"]))
            lines = ladder_lines(ladder, info["rungs"], words, note)
        except FitError as e:
            ladder, lines = None, [f"### Does it hold at scale? {len(rungs)} of {len(info['rungs'])} rungs", "",
                                   f"No law yet: {e}."]
        missing = [r for r in info["rungs"] if r not in rungs]
        if missing:
            lines.append(f"Rungs with no complete run yet: {', '.join(missing)} (the same study command trains them).")
        sections.append((root, lines, ladder))
    return sections


def write_report(paths: list[Path], out: Path, baseline: str | None = None, figures: bool = True,
                 detect: float | None = None, law: dict | None = None) -> str:
    """Find, compare, print-ready Markdown; writes report.md/.csv/.json (and the figures) into out."""
    paths = [Path(p).resolve() for p in paths]  # what is printed names files absolutely
    unreadable = []
    records = find_runs(paths, unreadable)
    for warning in (w for r in records for w in r.get("warnings") or []):
        print(f"warning: {warning}", file=sys.stderr)
    for d in unreadable:
        print(f"warning: {d}: its run.json and log.txt are not a run's (unreadable or damaged); left out",
              file=sys.stderr)
    tables = group(records, baseline)
    if not tables:
        raise FileNotFoundError(f"no runs (run.json or log.txt) under {', '.join(map(str, paths))}" +
                                (f": {len(unreadable)} director{'y holds' if len(unreadable) == 1 else 'ies hold'} "
                                 "a run.json or log.txt that is not a run's" if unreadable else ""))
    text = markdown(tables)
    ladders = ladder_sections(tables, law)
    for _, lines, _ in ladders:
        text += "\n" + "\n".join(lines) + "\n"
    absent = planned_but_absent(paths, records)
    if absent:
        text += ("\nPlanned by the study but with no run record (not started yet, or its directory was deleted; "
                 "`gptlab status DIR` shows each run's state): " + ", ".join(absent) + ".\n")
    if detect is not None:
        text += "\n" + detect_lines(tables, detect) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "report.md", text + "\n")
    atomic_write_text(out / "report.csv", as_csv(tables))
    atomic_write_text(out / "report.json", json.dumps(as_json(tables), indent=1, default=str) + "\n")
    written = [out / "report.md", out / "report.csv", out / "report.json"]
    if figures:
        from gptlab.reporting.figures import ladder_figures, study_figures
        groups = sum(t.kind != "tuned" for t in tables)
        index = 0
        for table in tables:
            index += table.kind != "tuned"
            name = f"_{table.ladder['rung']}" if table.ladder else "" if groups == 1 else f"_{index}"
            written += study_figures(table, out, name + ("_tuned" if table.kind == "tuned" else ""))
        for root, _, ladder in ladders:
            if ladder is not None:
                written += ladder_figures(ladder, out, "" if len(ladders) == 1 else f"_{Path(root).name}")
    return text + "\nwrote " + ", ".join(str(p) for p in written)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gptlab report", description="Compare runs: a Markdown table (and CSV, JSON "
                                "and figures) of every run under the directories, grouped by experiment.",
                                allow_abbrev=False)
    p.add_argument("dirs", nargs="*", type=Path, help=f"directories of runs or studies (default: {LOG_ROOT})")
    p.add_argument("--baseline", help="the experiment to compare with (default: the study's, or 'baseline')")
    p.add_argument("--out", type=Path, help="where report.md/.csv/.json and the figures go (default: the first DIR)")
    p.add_argument("--no-figures", action="store_true", help="the table only (figures need matplotlib)")
    p.add_argument("--law", nargs="+", metavar="KEY=VALUE", type=law_item,
                   help="a ladder's law L(C) = L_inf + A C^-alpha with l_inf and/or alpha pinned (over the study's "
                        "LAW), e.g. --law l_inf=0")
    p.add_argument("--detect", type=float, metavar="DELTA",
                   help="how many seeds per arm would detect a val-loss difference of DELTA (80%% power, Holm's "
                        "strictest alpha), from each table's seed-to-seed spread")
    return p


def law_item(text: str) -> tuple[str, float]:
    key, eq, value = text.partition("=")
    try:
        if key in ("l_inf", "alpha") and eq:
            return key, float(value)
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"{text!r}: give l_inf=VALUE or alpha=VALUE (the law's floor or exponent)")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    dirs = args.dirs or [LOG_ROOT]
    absent = [d for d in dirs if not d.is_dir()]
    if absent:
        print(f"error: {'; '.join(missing(d) for d in absent)}; give the log directories of runs or studies",
              file=sys.stderr)
        return 2
    if args.detect is not None and not (math.isfinite(args.detect) and args.detect > 0):
        print(f"error: --detect {args.detect}: give a positive difference of val loss, e.g. --detect 0.01",
              file=sys.stderr)
        return 2
    if args.baseline and not any(r["experiment"] == args.baseline for r in find_runs(dirs)):
        print(f"error: --baseline {args.baseline}: no run of that experiment under {', '.join(map(str, dirs))}",
              file=sys.stderr)
        return 2
    try:
        print(write_report(dirs, args.out or dirs[0], args.baseline, figures=not args.no_figures, detect=args.detect,
                           law=dict(args.law or [])))
    except FileNotFoundError as e:
        print(f"error: {e}; train some first (gptlab study ..., or python train.py ...)", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: cannot write the report into {args.out or dirs[0]} ({e.strerror or e}); choose another --out",
              file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        print(f"error: the figures need {e.name}: pip install -e \".[plot]\", or --no-figures", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
