"""What a study is: experiments, seeds, a preset and overrides, one baseline; and its plan,
every run resolved and checked before anything trains.

A study is fair by construction: every run of it reads the same data (in the same order, or
with train.data_order=seeded in an order each seed draws), for the same tokens, schedule and
batch, and is evaluated on the same validation tokens and HellaSwag examples. An experiment
file that changes any of these (its TRAINING_CONFIG) is refused, naming the experiment and the
fields, unless the study allows it; the report then marks those rows. A variant that the preset
or the overrides turned into the baseline's model is refused. A learning-rate sweep varies
the learning rates of each experiment's optimizer (max_lr, and Muon's muon_lr with it), the one
fair setting it may: every experiment at every multiplier of its rates.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import runpy
from dataclasses import dataclass, field
from pathlib import Path

from gptlab.core.config import ConfigError, GPTConfig, TrainingConfig
from gptlab.core.experiment import ExperimentError, recorded_classes
from gptlab.optim import optimizer_class
from gptlab.paths import LOG_ROOT, STUDIES_DIR, missing
from gptlab.study.rungs import LADDER_LR, Budget, RungError, parse_rungs
from gptlab.training.planning import plan_run, seed_dir_name
from gptlab.training.presets import PRESETS
from gptlab.training.run import Run, TrainingError

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
    lr_sweep: list[float] = field(default_factory=list)  # multipliers of max_lr each experiment is swept over
    launcher: str = "local"  # where the runs train: "local" (this machine) or "slurm" (a job array)
    slurm: dict = field(default_factory=dict)  # the SLURM settings (gptlab.study.slurm.SlurmOptions' fields)
    name: str = "study"
    # a ladder of model sizes (gptlab.study.rungs): its rungs, budget and how each rung's learning rate is chosen
    ladder: list = field(default_factory=list)  # "d2,d4,d6" or rungs: ["d2", {"name": ..., "n_layer": ...}, ...]
    budget: dict = field(default_factory=dict)  # Budget's fields: rule, tokens_per_param, params
    ladder_lr: str = "shared"  # "shared", "sweep" (every rung) or "transfer" (the smallest rung's, to the others)
    law: dict = field(default_factory=dict)  # the baseline's law with L_inf and/or alpha pinned: {"l_inf": 0.0}
    # set by the ladder for one rung's study (not settings a user writes):
    experiment_overrides: dict = field(default_factory=dict)  # {experiment: [overrides]}: its shape, its budget
    budget_fields: list = field(default_factory=list)  # training fields the budget sets per experiment (isoFLOP)
    ladder_record: dict = field(default_factory=dict)  # what each run's record keeps of the ladder

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.experiments, (list, tuple)) or not all(isinstance(e, str) for e in self.experiments):
            raise StudyError(f"study {self.name}: experiments must be a list of names, e.g. [\"baseline\", \"rope\"]; "
                             f"got {self.experiments!r}")
        if not isinstance(self.overrides, (list, tuple)) or not all(isinstance(o, str) for o in self.overrides):
            raise StudyError(f"study {self.name}: overrides must be a list of \"model.X=...\"/\"train.Y=...\" strings; "
                             f"got {self.overrides!r}")
        if not isinstance(self.lr_sweep, (list, tuple)) or not all(
                isinstance(m, (int, float)) and not isinstance(m, bool) for m in self.lr_sweep):
            raise StudyError(f"study {self.name}: lr_sweep must be a list of multipliers of max_lr, e.g. "
                             f"[0.5, 0.71, 1, 1.41, 2]; got {self.lr_sweep!r}")
        self.lr_sweep = [float(m) for m in self.lr_sweep]
        if self.lr_sweep:
            if not all(math.isfinite(m) and m > 0 for m in self.lr_sweep):
                problems.append(f"lr_sweep={self.lr_sweep}: multipliers must be positive numbers")
            elif len({*self.lr_sweep, 1.0}) < 3:
                problems.append(f"lr_sweep={self.lr_sweep}: give at least 3 different multipliers, x1 (always "
                                f"trained) included: a parabola is fitted through them, e.g. 0.5,0.71,1,1.41,2")
            else:  # each point's runs live in lr<M:g>/: two multipliers of one name would share a directory
                names = {}
                for m in sorted({*self.lr_sweep, 1.0}):
                    names.setdefault(f"{m:g}", []).append(m)
                same = [ms for ms in names.values() if len(ms) > 1]
                if same:
                    problems.append("lr_sweep: " + "; ".join(" and ".join(repr(m) for m in ms) for ms in same) +
                                    " are one multiplier at 6 significant digits (and one directory, lr" +
                                    f"{same[0][0]:g}); give multipliers that differ sooner")
        if self.ladder or self.budget or self.ladder_lr != "shared" or self.law:
            if isinstance(self.ladder, str):  # the command line's "d2,d4,d6"
                self.ladder = [r.strip() for r in self.ladder.split(",") if r.strip()]
            try:
                if self.ladder:
                    parse_rungs(self.ladder)
                Budget.parse(self.budget)
            except RungError as e:
                problems.append(str(e))
            if not self.ladder:
                problems.append("budget and ladder_lr set how a ladder of sizes trains: give the ladder too "
                                "(--ladder d2,d4,d6)")
            if not isinstance(self.law, dict) or any(k not in ("l_inf", "alpha") or not isinstance(v, (int, float))
                                                     or isinstance(v, bool) for k, v in self.law.items()):
                problems.append(f"law={self.law!r}: give the parameters pinned, e.g. {{'l_inf': 0.0}} or "
                                f"{{'alpha': 0.3}} (L_inf and alpha of L(C) = L_inf + A C^-alpha)")
            if self.ladder_lr not in LADDER_LR:
                problems.append(f"ladder_lr={self.ladder_lr!r} must be one of {', '.join(LADDER_LR)}")
            elif self.ladder_lr != "shared" and not self.lr_sweep:
                problems.append(f"ladder_lr={self.ladder_lr!r} sweeps the learning rate: give the grid too (--lr-sweep "
                                f"0.5,0.71,1,1.41,2)")
        if self.launcher not in ("local", "slurm"):
            problems.append(f"launcher={self.launcher!r} must be 'local' or 'slurm'")
        if not isinstance(self.slurm, dict):
            problems.append(f"slurm={self.slurm!r} must be a dict of SLURM settings, e.g. {{'partition': 'gpu'}}")
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
        out = {"name": self.name, "experiments": self.experiments, "seeds": self.seeds, "preset": self.preset,
               "overrides": self.overrides, "baseline": self.baseline, "allow_unfair": self.allow_unfair,
               "lr_sweep": self.lr_sweep}
        if self.ladder:
            out.update(ladder=self.ladder, budget=self.budget, ladder_lr=self.ladder_lr, law=self.law)
        if self.experiment_overrides:
            out["experiment_overrides"] = self.experiment_overrides
        return out


# the settings of a study file, and the Study field each sets
FILE_SETTINGS = {"EXPERIMENTS": "experiments", "SEEDS": "seeds", "PRESET": "preset", "OVERRIDES": "overrides",
                 "BASELINE": "baseline", "OUT": "out", "ALLOW_UNFAIR": "allow_unfair", "LR_SWEEP": "lr_sweep",
                 "LAUNCHER": "launcher", "SLURM": "slurm", "LADDER": "ladder", "BUDGET": "budget",
                 "LADDER_LR": "ladder_lr", "LAW": "law"}


def available_studies() -> list[str]:
    return sorted(p.stem for p in STUDIES_DIR.glob("*.py") if not p.name.startswith("_"))


def load_study(name_or_path: str) -> Study:
    """`quick` -> studies/quick.py; a path ending in .py as it is. A study file sets
    EXPERIMENTS (required), SEEDS, PRESET, OVERRIDES, BASELINE, OUT, ALLOW_UNFAIR, LR_SWEEP, LAUNCHER,
    SLURM; its runs
    live under log_train/<name>/ unless it sets OUT."""
    if name_or_path.endswith(".py"):
        path = Path(name_or_path).expanduser().resolve()
        if not path.is_file():
            raise StudyError(f"study file {missing(name_or_path)}")
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
    for key in ("experiments", "overrides", "lr_sweep"):  # a tuple is a list; anything else is named by Study
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
    overrides: list[str] = field(default_factory=list)  # the study's, and this run's max_lr where it is swept
    lr_multiplier: float = 1.0  # of the study's max_lr (a learning-rate sweep's point, or a tuned rate)
    first_seed: int = 0  # the study's first seed (the seed of its learning-rate sweep)

    @property
    def log_dir(self) -> Path:
        return self.run.log_dir

    @property
    def label(self) -> str:
        rate = "" if self.lr_multiplier == 1 else f" lr x{self.lr_multiplier:g}"
        return f"{self.experiment}{rate} seed{self.seed}"

    def record(self, study: Study) -> dict:
        """What the run's record keeps of the study (its `study` key): the report reads it."""
        record = {"name": study.name, "baseline": study.baseline, "experiments": study.experiments,
                  "differs": self.differs, "unfair": self.unfair,
                  "run": self.log_dir.relative_to(study.root).as_posix(), "lr_multiplier": self.lr_multiplier,
                  "lr_sweep": study.lr_sweep, "first_seed": self.first_seed}
        if study.ladder_record:
            record["ladder"] = {**study.ladder_record, "budget_fields": study.budget_fields}
        return record


def lr_dir_name(multiplier: float) -> str:
    """The directory of an experiment's runs at a multiplier of max_lr other than 1: lr0.71."""
    return f"lr{multiplier:g}"


def plan(study: Study) -> list[PlannedRun]:
    """Every run of the study that can be planned before anything trains, resolved and checked,
    in the order they train, seed by seed, so that a study stopped early already holds whole
    comparisons. With a learning-rate sweep the sweep goes first (every experiment at every
    multiplier, with the first seed); the runs at each experiment's tuned rate are planned when
    the sweep is done (`plan_tuned`). Refuses an unfair study, and a variant that is the
    baseline's model."""
    first = _check(study)
    seeds = _seeds(study, first)
    runs = []
    if study.lr_sweep:
        for name in study.experiments:
            for multiplier in sorted({*study.lr_sweep, 1.0}):
                runs.append(_planned(study, first, name, seeds[0], multiplier))
        seeds = seeds[1:]
    for seed in seeds:
        for name in study.experiments:
            runs.append(_planned(study, first, name, seed, 1.0))
    check_existing(runs)
    return runs


def plan_tuned(study: Study, chosen: dict[str, float]) -> list[PlannedRun]:
    """Each experiment's runs at its tuned multiplier of max_lr (`chosen`, from the sweep): as many
    seeds as the study's, none of them the sweep's own. The sweep's run at the chosen rate was
    picked for its low loss, so counting it would pull each tuned mean toward its luckiest seed (the
    winner's curse); the seeds after the first and one more are fresh. Where the tuned rate is 1
    those after the first are the shared table's runs, trained once."""
    first = _check(study, quiet=True)
    seeds = _seeds(study, first)
    runs = [_planned(study, first, name, seed, chosen[name]) for seed in [*seeds[1:], seeds[-1] + 1]
            for name in study.experiments if name in chosen]
    check_existing(runs)
    return runs


def _seeds(study: Study, first: dict[str, Run]) -> list[int]:
    base_seed = first[study.baseline].train_config.seed
    return [base_seed + i for i in range(study.seeds)]


def _planned(study: Study, first: dict[str, Run], name: str, seed: int, multiplier: float) -> PlannedRun:
    base, own = first[study.baseline], first[name]
    overrides = [*study.overrides, *study.experiment_overrides.get(name, [])]
    where = study.root / own.experiment.name
    if multiplier != 1.0:  # each of the experiment's optimizer's learning rates, by the same factor
        overrides += [f"train.{f}={getattr(own.train_config, f) * multiplier!r}"
                      for f in optimizer_class(own.experiment.optimizer_class).lr_fields]
        where = where / lr_dir_name(multiplier)
    run = plan_run(name, study.preset, overrides, seed=seed, quiet=True, log_dir=where / seed_dir_name(seed))
    return PlannedRun(name, seed, run, differences(run, base), unfair_fields(own, base), overrides, multiplier,
                      _seeds(study, first)[0])


def _check(study: Study, quiet: bool = False) -> dict[str, Run]:
    """The first seed's run of each experiment, its configs and components checked, and the study's
    fairness: no unfair experiment unless allowed, no two experiments of one name, no variant that
    the preset and overrides made the baseline's model."""
    first = {}
    for name in study.experiments:
        try:
            first[name] = plan_run(name, study.preset, [*study.overrides, *study.experiment_overrides.get(name, [])],
                                   quiet=quiet)
        except (ExperimentError, ConfigError, ValueError, TrainingError) as e:
            raise StudyError(f"experiment {name!r} of study {study.name} cannot run: {e}"
                             + ("\n(a study's overrides apply to every run: a setting one experiment's optimizer needs "
                                "belongs in that experiment's file)" if "would be ignored" in str(e) else "")) from None
    by_name = {}
    for name, run in first.items():
        by_name.setdefault(run.experiment.name, []).append(name)
    clashes = [names for names in by_name.values() if len(names) > 1]
    if clashes:
        raise StudyError("two experiments of the study have one name, so their runs would share a directory: " +
                         "; ".join(" and ".join(names) for names in clashes) + "; rename one of the files")
    base = first[study.baseline]
    unfair = {name: [f for f in unfair_fields(run, base) if f not in study.budget_fields] for name, run in first.items()}
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
    same = [name for name, run in first.items()
            if name != study.baseline and not differences(run, base) and not unfair[name]]
    if same:
        lines = [f"{first[name].experiment.name}{_replaced(first[name], study.preset)}" for name in same]
        raise StudyError(f"these experiments are the baseline's model once the preset {study.preset} and the "
                         "overrides are applied, so comparing them with it measures nothing but seed noise:\n  - " +
                         "\n  - ".join(lines) + "\ngive a field they need as an override for every run "
                         "(model.FIELD=VALUE), or leave them out of the study. Nothing was trained")
    return first


def _replaced(run: Run, preset: str) -> str:
    """What the preset or the overrides replaced of the experiment file's own MODEL_CONFIG."""
    own, default = run.experiment.model_config, GPTConfig()
    lost = [f"{f.name}={getattr(own, f.name)!r} (now {getattr(run.model_config, f.name)!r})"
            for f in dataclasses.fields(own)
            if getattr(own, f.name) != getattr(default, f.name) and getattr(run.model_config, f.name) != getattr(own, f.name)]
    return f": its MODEL_CONFIG's {', '.join(lost)} replaced by the preset {preset} or an override" if lost else \
        ": it changes nothing the baseline has"


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
        was = {**{f"model.{k}": v for k, v in dataclasses.asdict(GPTConfig()).items()},  # a field added since: its default
               **{f"model.{k}": v for k, v in record["model_config"].items()},
               **{f"train.{k}": (record.get("training_config") or {}).get(k, getattr(TrainingConfig(), k))
                  for k in FAIR_FIELDS + ("seed",)},
               **recorded_classes(record.get("classes") or {})}
        changed = [f"{k} {was.get(k)!r} -> {v!r}" for k, v in now.items() if was.get(k) != v]
        if changed:
            problems.append(f"{planned.log_dir} holds a run of other settings: {', '.join(changed[:6])}"
                            + (f" and {len(changed) - 6} more" if len(changed) > 6 else ""))
    if problems:
        raise StudyError("the study's directory already holds runs that are not of this study:\n  - " +
                         "\n  - ".join(problems) + "\ngive this study its own --out (or move those runs away). "
                         "Nothing was trained")


def unfair_fields(run: Run, base: Run) -> list[str]:
    """Fair fields the run changes from the baseline's; an optimizer's own settings (Muon's muon_lr,
    ...) are part of choosing that optimizer, a declared difference like a component's."""
    own = set(optimizer_class(run.experiment.optimizer_class).config_fields)
    return [f for f in FAIR_FIELDS if f not in own and getattr(run.train_config, f) != getattr(base.train_config, f)]


def differences(run: Run, base: Run) -> dict:
    """What this run changes from the baseline's: model fields and component classes."""
    differs = {f"model.{f.name}": [getattr(base.model_config, f.name), getattr(run.model_config, f.name)]
               for f in dataclasses.fields(run.model_config)
               if getattr(run.model_config, f.name) != getattr(base.model_config, f.name)}
    mine, theirs = run.experiment.class_names(), base.experiment.class_names()
    differs.update({slot: [theirs[slot], mine[slot]] for slot in mine if mine[slot] != theirs[slot]})
    for f in optimizer_class(run.experiment.optimizer_class).config_fields:  # the optimizer's own settings
        if getattr(run.train_config, f) != getattr(base.train_config, f):
            differs[f"train.{f}"] = [getattr(base.train_config, f), getattr(run.train_config, f)]
    return differs
