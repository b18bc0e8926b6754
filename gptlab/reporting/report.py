"""The report of a study (or of any runs): which variant won, by how much, at what cost, and
whether the difference is larger than seed-to-seed noise.

    gptlab report [DIR ...] [--baseline NAME] [--out DIR]

Every run found under the directories (its run.json, or log.txt for a run without one) is
grouped into comparisons: the runs of one study, or else runs with the same preset, data
and fair training fields (see gptlab.study.plan.FAIR_FIELDS). In each, one row per
experiment: mean ± sample std over the complete runs' seeds of the final validation loss and
HellaSwag acc_norm, the difference to the baseline with Welch's t-test (`*` p < 0.05, `**`
p < 0.01, else "not significant"; none with a single seed), and the costs: parameters,
FLOPs/token, KV-cache bytes/token, tokens/s, MFU. Incomplete runs are listed, never
averaged with complete ones. Prints Markdown, writes report.md, report.csv, report.json.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

from gptlab.core.config import GPTConfig, TrainingConfig
from gptlab.files import atomic_write_text
from gptlab.paths import LOG_ROOT
from gptlab.reporting.stats import Comparison, mean_std, welch
from gptlab.training.record import read_record

# published references for the GPT-2 124M recipe on FineWeb-Edu (build-nanogpt's setting)
REFERENCES = {
    "val_loss": [("OpenAI GPT-2 124M on the FineWeb-Edu val shard", 3.2924)],
    "hellaswag_acc_norm": [("OpenAI GPT-2 124M, completion-style scoring as here", 0.2955),
                           ("OpenAI GPT-2 124M in lm-eval-harness", 0.3114),
                           ("GPT-3 124M (paper)", 0.337)],
}


@dataclass
class Row:
    experiment: str
    complete: list[dict] = field(default_factory=list)
    incomplete: list[dict] = field(default_factory=list)
    val: tuple | None = None  # (mean, std)
    hella: tuple | None = None
    val_vs_baseline: Comparison | None = None
    hella_vs_baseline: Comparison | None = None

    @property
    def runs(self) -> list[dict]:
        return self.complete or self.incomplete


@dataclass
class Table:
    """One table: runs comparable with each other, and their baseline."""
    title: str
    baseline: str
    rows: list[Row]
    recipe: bool  # the GPT-2 124M recipe, for which published references apply


def find_runs(paths: list[Path]) -> list[dict]:
    """The record of every run under paths (a run's own directory, or any directory above)."""
    dirs = []
    for path in paths:
        found = {p.parent for pattern in ("run.json", "log.txt") for p in path.rglob(pattern)}
        dirs += [d for d in sorted(found) if d not in dirs]
    return [r for r in (read_record(d) for d in dirs) if r and r.get("experiment")]


def group(records: list[dict], baseline: str | None = None) -> list[Table]:
    tables: dict[str, list[dict]] = {}
    for r in records:
        tables.setdefault(_comparison_key(r), []).append(r)
    result = []
    for key, runs in tables.items():
        names = list(dict.fromkeys(_label(r, runs) for r in runs))
        study = runs[0].get("study") or {}
        base = baseline if baseline in names else study.get("baseline") if study.get("baseline") in names else (
            "baseline" if "baseline" in names else names[0])
        rows = []
        for name in [base] + [n for n in names if n != base]:
            row = Row(name)
            seen = set()
            for r in sorted((r for r in runs if _label(r, runs) == name), key=lambda r: str(r.get("seed"))):
                if r.get("status") == "complete" and r.get("seed") in seen:  # a copy of a seed is not a new sample
                    r = {**r, "status": f"a repeat of seed {r.get('seed')}"}
                (row.complete if r.get("status") == "complete" else row.incomplete).append(r)
                if r.get("status") == "complete":
                    seen.add(r.get("seed"))
            row.val = _mean_std(row.complete, "val_loss")
            row.hella = _mean_std(row.complete, "hellaswag_acc_norm")
            rows.append(row)
        for row in rows[1:]:
            row.val_vs_baseline = welch(_values(row.complete, "val_loss"), _values(rows[0].complete, "val_loss"))
            row.hella_vs_baseline = welch(_values(row.complete, "hellaswag_acc_norm"),
                                          _values(rows[0].complete, "hellaswag_acc_norm"))
        result.append(Table(_title(runs[0], study), base, rows, _is_recipe(runs)))
    return result


def _comparison_key(r: dict) -> str:
    study = r.get("study")
    if study:
        return json.dumps(["study", study.get("name"), str(Path(r["log_dir"]).parent.parent)])
    from gptlab.study.plan import FAIR_FIELDS
    cfg = r.get("training_config") or {}
    return json.dumps([r.get("preset"), r.get("data_fingerprint"), [cfg.get(f) for f in FAIR_FIELDS]], default=str)


def _label(r: dict, runs: list[dict]) -> str:
    """The experiment's name; with the model fields that differ where one experiment ran with several configs."""
    same = [o for o in runs if o["experiment"] == r["experiment"]]
    configs = {json.dumps(o.get("model_config"), sort_keys=True) for o in same}
    if len(configs) == 1:
        return r["experiment"]
    mine = r.get("model_config") or {}
    others = [o.get("model_config") or {} for o in same]
    varied = [k for k in sorted(mine) if any(o.get(k) != mine[k] for o in others)]
    return f"{r['experiment']} ({', '.join(f'{k}={mine[k]}' for k in varied)})"


def _title(r: dict, study: dict) -> str:
    cfg = r.get("training_config") or {}
    steps, batch, val = (cfg.get(k) if isinstance(cfg.get(k), int) else 0
                         for k in ("max_steps", "total_batch_size", "val_tokens"))
    name = f"{study['name']}: " if study else ""
    where = Path(r["log_dir"]).parent.parent
    return (f"{name}preset {r.get('preset')}, {steps:,} steps x {batch:,} tokens = {steps * batch:,} tokens, "
            f"val {val:,} tokens, data {r.get('data_fingerprint')} ({where})")


def _is_recipe(runs: list[dict]) -> bool:
    """Runs of the GPT-2 124M recipe: GPT-2's model and build-nanogpt's training config."""
    base_model, base_train = dataclasses.asdict(GPTConfig()), dataclasses.asdict(TrainingConfig())
    from gptlab.study.plan import FAIR_FIELDS
    return any(r["experiment"] == "baseline" and r.get("model_config") == base_model
               and all((r.get("training_config") or {}).get(f) == base_train[f] for f in FAIR_FIELDS
                       if f not in ("data", "data_dir", "hellaswag_file"))
               for r in runs)


def _values(runs: list[dict], key: str) -> list[float]:
    return [r[key] for r in runs if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]


def _mean_std(runs: list[dict], key: str) -> tuple | None:
    values = _values(runs, key)
    return mean_std(values) if values else None


def _mean(runs: list[dict], key: str) -> float | None:
    values = _values(runs, key)
    return statistics.fmean(values) if values else None


# ---- rendering

def _pm(stats: tuple | None, digits: int = 4) -> str:
    if stats is None:
        return "-"
    mean, std = stats
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if std is not None else f"{mean:.{digits}f}"


def _delta(c: Comparison | None, row_values: list, base_values: list, digits: int = 4) -> str:
    if c is not None:
        return f"{c.delta:+.{digits}f} ± {c.ci95():.{digits}f} (p={c.p:.3f} {c.mark()})"
    if row_values and base_values:
        delta = statistics.fmean(row_values) - statistics.fmean(base_values)
        return f"{delta:+.{digits}f} (one seed: no test)"
    return "-"


def _si(n: float | None, unit: str = "") -> str:
    if n is None:
        return "-"
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}{unit}"
    return f"{n:g}{unit}"


COLUMNS = ["experiment", "seeds", "val loss", "Δ val vs baseline", "HellaSwag acc_norm", "Δ acc_norm",
           "params", "non-emb params", "FLOPs/token", "KV B/token", "tok/s", "MFU", "steps", "val@2x/4x/8x", "notes"]


def row_cells(row: Row, base: Row) -> list[str]:
    runs, first = row.complete, row.runs[0]
    notes = []
    unfair = sorted({f for r in row.runs for f in (r.get("study") or {}).get("unfair", [])})
    if unfair:
        notes.append("UNFAIR: changes " + ", ".join(f"train.{f}" for f in unfair))
    base_data = {r.get("data_fingerprint") for r in base.runs}
    if any(r.get("data_fingerprint") not in base_data for r in row.runs):
        notes.append("UNFAIR: other data than the baseline's (data fingerprint)")
    for r in row.incomplete:
        notes.append(f"seed {r.get('seed')} {r.get('status')} at step {r.get('step')}/{r.get('max_steps')}"
                     f" (not averaged)")
    steps = sorted({f"{r.get('step')}/{r.get('max_steps')}" for r in runs}) or ["-"]
    mfu = _mean(runs, "mfu")
    return [
        row.experiment + (" (baseline)" if row is base and row.experiment != "baseline" else ""),
        ", ".join(str(r.get("seed")) for r in runs) or "none complete",
        _pm(row.val),
        "" if row is base else _delta(row.val_vs_baseline, _values(runs, "val_loss"), _values(base.complete, "val_loss")),
        _pm(row.hella),
        "" if row is base else _delta(row.hella_vs_baseline, _values(runs, "hellaswag_acc_norm"),
                                      _values(base.complete, "hellaswag_acc_norm")),
        _params(first), _si(first.get("params_non_embedding")), _si(first.get("flops_per_token")),
        f"{first['kv_cache_bytes_per_token']:,}" if first.get("kv_cache_bytes_per_token") else "-",
        f"{_mean(runs, 'tok_per_sec'):,.0f}" if _mean(runs, "tok_per_sec") else "-",
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
        cells.append(f"{statistics.fmean(values):.3f}" if values else "n/a")
    if cells == ["n/a"] * 3 and any(f.get("why") for f in found):
        return "not defined past block_size"
    return " / ".join(cells)


def markdown(tables: list[Table]) -> str:
    out = []
    for table in tables:
        base = table.rows[0]
        out.append(f"### {table.title}\n")
        out.append("| " + " | ".join(COLUMNS) + " |")
        out.append("|" + "|".join("---" for _ in COLUMNS) + "|")
        for row in table.rows:
            out.append("| " + " | ".join(row_cells(row, base)) + " |")
        out.append("")
        out.append(f"Δ: variant minus baseline ({table.baseline}), ± the 95% confidence interval; Welch's t-test over "
                   f"seeds, `*` p < 0.05, `**` p < 0.01. Lower val loss is better, higher acc_norm is better.")
        out.append(_card(table))
        out.append("")
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
    return [{"title": t.title, "baseline": t.baseline, "gpt2_recipe": t.recipe, "rows": [
        {"experiment": row.experiment, "val_loss": row.val, "hellaswag_acc_norm": row.hella,
         "val_vs_baseline": comparison(row.val_vs_baseline), "hella_vs_baseline": comparison(row.hella_vs_baseline),
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
            writer.writerow([table.title] + row_cells(row, table.rows[0]))
    return buffer.getvalue()


def write_report(paths: list[Path], out: Path, baseline: str | None = None, figures: bool = True) -> str:
    """Find, compare, print-ready Markdown; writes report.md/.csv/.json (and the figures) into out."""
    tables = group(find_runs(paths), baseline)
    if not tables:
        raise FileNotFoundError(f"no runs (run.json or log.txt) under {', '.join(map(str, paths))}")
    text = markdown(tables)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "report.md", text + "\n")
    atomic_write_text(out / "report.csv", as_csv(tables))
    atomic_write_text(out / "report.json", json.dumps(as_json(tables), indent=1, default=str) + "\n")
    written = [out / "report.md", out / "report.csv", out / "report.json"]
    if figures:
        from gptlab.reporting.figures import study_figures
        for i, table in enumerate(tables):
            suffix = "" if len(tables) == 1 else f"_{i + 1}"
            written += study_figures(table, out, suffix)
    return text + "\nwrote " + ", ".join(str(p) for p in written)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gptlab report", description="Compare runs: a Markdown table (and CSV, JSON "
                                "and figures) of every run under the directories, grouped by experiment.")
    p.add_argument("dirs", nargs="*", type=Path, help=f"directories of runs or studies (default: {LOG_ROOT})")
    p.add_argument("--baseline", help="the experiment to compare with (default: the study's, or 'baseline')")
    p.add_argument("--out", type=Path, help="where report.md/.csv/.json and the figures go (default: the first DIR)")
    p.add_argument("--no-figures", action="store_true", help="the table only (figures need matplotlib)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    dirs = args.dirs or [LOG_ROOT]
    missing = [str(d) for d in dirs if not d.is_dir()]
    if missing:
        print(f"error: no directory {', '.join(missing)}; give the log directories of runs or studies", file=sys.stderr)
        return 2
    if args.baseline and not any(r["experiment"] == args.baseline for r in find_runs(dirs)):
        print(f"error: --baseline {args.baseline}: no run of that experiment under {', '.join(map(str, dirs))}",
              file=sys.stderr)
        return 2
    try:
        print(write_report(dirs, args.out or dirs[0], args.baseline, figures=not args.no_figures))
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
