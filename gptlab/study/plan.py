"""What a study is: experiments, seeds, a preset and overrides, one baseline; and its plan,
every run resolved and checked before anything trains.

A study is fair by construction: every run of it reads the same data in the same order (a
seed changes the initialisation and dropout, never the data stream), for the same tokens,
schedule and batch, and is evaluated on the same validation tokens and HellaSwag examples.
An experiment file that changes any of these (its TRAINING_CONFIG) is refused, naming the
experiment and the fields, unless the study allows it; the report then marks those rows.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import runpy
from dataclasses import dataclass, field
from pathlib import Path

from gptlab.core.config import ConfigError, TrainingConfig
from gptlab.core.experiment import ExperimentError
from gptlab.paths import LOG_ROOT, STUDIES_DIR
from gptlab.training.presets import PRESETS
from gptlab.training.run import Run

# training fields a variant may change without making the comparison unfair, and why
FREE_FIELDS = {
    "seed": "what a study varies",
    "micro_batch_size": "the same tokens a step and the same validation tokens; only memory differs",
    "stop_at": "a pause, schedule unchanged", "keep_last": "checkpoints kept", "compile": "speed only",
    "num_samples": "text samples", "sample_length": "text samples", "sample_prompt": "text samples",
    "max_bad_steps": "a guard", "allow_data_change": "resume rule", "allow_source_change": "resume rule",
    "wandb": "a tracker", "tensorboard": "a tracker",
}
FAIR_FIELDS = tuple(f.name for f in dataclasses.fields(TrainingConfig) if f.name not in FREE_FIELDS)


class StudyError(ValueError):
    """A study cannot run as given; the message says why and what to do."""


@dataclass
class Study:
    experiments: list[str]
    seeds: int = 1  # runs of each experiment, with seeds train.seed, train.seed + 1, ...
    preset: str = "gpt2"
    overrides: list[str] = field(default_factory=list)  # model.FIELD=VALUE / train.FIELD=VALUE for every run
    baseline: str = ""  # the experiment the others are compared with; "" = "baseline" if present, else the first
    out: str = ""  # where the runs live: <out>/<experiment>/seed<N>; "" = log_train (a study file's: log_train/<name>)
    allow_unfair: bool = False  # train experiments whose files change fair fields (marked in the report)
    name: str = "study"

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.experiments, (list, tuple)) or not all(isinstance(e, str) for e in self.experiments):
            raise StudyError(f"study {self.name}: experiments must be a list of names, e.g. [\"baseline\", \"rope\"]; "
                             f"got {self.experiments!r}")
        if not isinstance(self.overrides, (list, tuple)) or not all(isinstance(o, str) for o in self.overrides):
            raise StudyError(f"study {self.name}: overrides must be a list of \"model.X=...\"/\"train.Y=...\" strings; "
                             f"got {self.overrides!r}")
        if not isinstance(self.allow_unfair, bool):
            problems.append(f"allow_unfair={self.allow_unfair!r}: give True or False")
        if not self.experiments:
            problems.append("name at least one experiment")
        duplicates = sorted({e for e in self.experiments if self.experiments.count(e) > 1})
        if duplicates:
            problems.append(f"experiment(s) named twice: {', '.join(duplicates)}")
        if not isinstance(self.seeds, int) or isinstance(self.seeds, bool) or self.seeds < 1:
            problems.append(f"seeds={self.seeds!r}: give the number of seeds, 1 or more")
        if self.preset not in PRESETS:
            problems.append(f"preset {self.preset!r} is not one of {', '.join(sorted(PRESETS))}")
        if self.baseline and self.baseline not in self.experiments:
            problems.append(f"baseline {self.baseline!r} is not among the experiments {', '.join(self.experiments)}")
        if problems:
            raise StudyError(f"study {self.name} is invalid:\n  - " + "\n  - ".join(problems))
        self.baseline = self.baseline or ("baseline" if "baseline" in self.experiments else self.experiments[0])

    @property
    def root(self) -> Path:
        return Path(self.out).expanduser().resolve() if self.out else LOG_ROOT

    def definition(self) -> dict:
        """What study.json records of it."""
        return {"name": self.name, "experiments": self.experiments, "seeds": self.seeds, "preset": self.preset,
                "overrides": self.overrides, "baseline": self.baseline, "allow_unfair": self.allow_unfair}


# the settings of a study file, and the Study field each sets
FILE_SETTINGS = {"EXPERIMENTS": "experiments", "SEEDS": "seeds", "PRESET": "preset", "OVERRIDES": "overrides",
                 "BASELINE": "baseline", "OUT": "out", "ALLOW_UNFAIR": "allow_unfair"}


def available_studies() -> list[str]:
    return sorted(p.stem for p in STUDIES_DIR.glob("*.py") if not p.name.startswith("_"))


def load_study(name_or_path: str) -> Study:
    """`quick` -> studies/quick.py; a path ending in .py as it is. A study file sets
    EXPERIMENTS (required), SEEDS, PRESET, OVERRIDES, BASELINE, OUT, ALLOW_UNFAIR; its runs
    live under log_train/<name>/ unless it sets OUT."""
    if name_or_path.endswith(".py"):
        path = Path(name_or_path).expanduser().resolve()
        if not path.is_file():
            raise StudyError(f"study file {name_or_path!r} does not exist")
    else:
        path = STUDIES_DIR / f"{name_or_path}.py"
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name_or_path) or not path.is_file():
            close = difflib.get_close_matches(name_or_path, available_studies(), n=3, cutoff=0.5)
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            raise StudyError(f"no study named {name_or_path!r}; {hint}studies in {STUDIES_DIR}: "
                             f"{', '.join(available_studies()) or 'none'} (or give --experiments)")
    try:
        namespace = runpy.run_path(str(path))
    except Exception as e:  # the user's file: say which file failed and how
        raise StudyError(f"study file {path} failed to run: {type(e).__name__}: {e}") from e
    problems = []
    for name in namespace:
        if name.isupper() and name not in FILE_SETTINGS:
            close = difflib.get_close_matches(name, FILE_SETTINGS, n=1)
            problems.append(f"{name} is not a study setting" + (f"; did you mean {close[0]}?" if close else
                                                                f" (settings: {', '.join(FILE_SETTINGS)})"))
    if "EXPERIMENTS" not in namespace:
        problems.append("EXPERIMENTS is missing: name the experiments to compare, e.g. EXPERIMENTS = "
                        "[\"baseline\", \"rope\"]")
    if problems:
        raise StudyError(f"study file {path} has problems:\n  - " + "\n  - ".join(problems))
    values = {FILE_SETTINGS[k]: namespace[k] for k in FILE_SETTINGS if k in namespace}
    for key in ("experiments", "overrides"):  # a tuple is a list; anything else is named by Study
        if isinstance(values.get(key), tuple):
            values[key] = list(values[key])
    values.setdefault("out", str(LOG_ROOT / path.stem))
    return Study(name=path.stem, **values)


@dataclass
class PlannedRun:
    experiment: str
    seed: int
    run: Run
    differs: dict  # from the baseline's run: {"model.FIELD" or a class slot: [baseline's, this one's]}
    unfair: list[str]  # fair fields this run changes (only with allow_unfair)

    @property
    def log_dir(self) -> Path:
        return self.run.log_dir

    @property
    def label(self) -> str:
        return f"{self.experiment} seed{self.seed}"


def plan(study: Study) -> list[PlannedRun]:
    """Every run of the study, resolved and checked, in the order they train: seed by seed, so a
    study stopped early already holds whole comparisons. Refuses an unfair study."""
    from gptlab.training.cli import plan_run, seed_dir_name
    first = {}
    for name in study.experiments:  # the first seed of each: configs and components checked
        try:
            first[name] = plan_run(name, study.preset, study.overrides)
        except (ExperimentError, ConfigError, ValueError) as e:
            raise StudyError(f"experiment {name!r} of study {study.name} cannot run: {e}") from None
    by_name = {}
    for name, run in first.items():
        by_name.setdefault(run.experiment.name, []).append(name)
    clashes = [names for names in by_name.values() if len(names) > 1]
    if clashes:
        raise StudyError("two experiments of the study have one name, so their runs would share a directory: " +
                         "; ".join(" and ".join(names) for names in clashes) + "; rename one of the files")
    base_seed = first[study.baseline].train_config.seed
    base = first[study.baseline]
    unfair = {name: unfair_fields(run, base) for name, run in first.items()}
    refused = {name: fields for name, fields in unfair.items() if fields}
    if refused and not study.allow_unfair:
        lines = [f"{first[name].experiment.name} changes " + ", ".join(f"train.{f} ({getattr(base.train_config, f)!r} -> "
                                                f"{getattr(first[name].train_config, f)!r})" for f in fields)
                 for name, fields in refused.items()]
        raise StudyError("the study would not compare like with like: every run must have the same data, tokens, "
                         "schedule, batch and evaluation, and these experiment files change them:\n  - " +
                         "\n  - ".join(lines) + "\nremove the fields from the files' TRAINING_CONFIG (or set them "
                         "for every run with train.FIELD=VALUE overrides), or train anyway with --allow-unfair "
                         "(the report marks these rows). Nothing was trained")
    runs = []
    for i in range(study.seeds):
        seed = base_seed + i
        for name in study.experiments:
            run = plan_run(name, study.preset, study.overrides, seed=seed, quiet=True,
                           log_dir=study.root / first[name].experiment.name / seed_dir_name(seed))
            runs.append(PlannedRun(name, seed, run, differences(run, base), unfair[name]))
    check_existing(runs)
    return runs


def check_existing(runs: list[PlannedRun]) -> None:
    """A run directory that already holds a run of other settings is not this study's: refuse
    (before anything trains) rather than skip it as complete or mix it into the comparison."""
    from gptlab.training.record import read_record
    problems = []
    for planned in runs:
        record = read_record(planned.log_dir)
        if not record or not isinstance(record.get("model_config"), dict):
            continue
        now = {**{f"model.{k}": v for k, v in dataclasses.asdict(planned.run.model_config).items()},
               **{f"train.{k}": getattr(planned.run.train_config, k) for k in FAIR_FIELDS + ("seed",)},
               **planned.run.experiment.class_names()}
        was = {**{f"model.{k}": v for k, v in record["model_config"].items()},
               **{f"train.{k}": (record.get("training_config") or {}).get(k) for k in FAIR_FIELDS + ("seed",)},
               **(record.get("classes") or {})}
        changed = [f"{k} {was.get(k)!r} -> {v!r}" for k, v in now.items() if was.get(k) != v]
        if changed:
            problems.append(f"{planned.log_dir} holds a run of other settings: {', '.join(changed[:6])}"
                            + (f" and {len(changed) - 6} more" if len(changed) > 6 else ""))
    if problems:
        raise StudyError("the study's directory already holds runs that are not of this study:\n  - " +
                         "\n  - ".join(problems) + "\ngive this study its own --out (or move those runs away). "
                         "Nothing was trained")


def unfair_fields(run: Run, base: Run) -> list[str]:
    return [f for f in FAIR_FIELDS if getattr(run.train_config, f) != getattr(base.train_config, f)]


def differences(run: Run, base: Run) -> dict:
    """What this run changes from the baseline's: model fields and component classes."""
    differs = {f"model.{f.name}": [getattr(base.model_config, f.name), getattr(run.model_config, f.name)]
               for f in dataclasses.fields(run.model_config)
               if getattr(run.model_config, f.name) != getattr(base.model_config, f.name)}
    mine, theirs = run.experiment.class_names(), base.experiment.class_names()
    differs.update({slot: [theirs[slot], mine[slot]] for slot in mine if mine[slot] != theirs[slot]})
    return differs
