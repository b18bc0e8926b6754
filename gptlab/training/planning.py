"""Planning a run: an experiment, a preset and overrides resolved into a checked `Run`, nothing
written. What train.py starts from, and what a study plans each of its runs with."""

from __future__ import annotations

from pathlib import Path

from gptlab.core.config import GPTConfig, TrainingConfig, parse_overrides, replace_config
from gptlab.core.experiment import ExperimentError, load_experiment
from gptlab.models.check import check_experiment, optimizer_step_problems, user_components
from gptlab.optim import AdamW, Muon, optimizer_class
from gptlab.paths import LOG_ROOT
from gptlab.training.presets import PRESETS
from gptlab.training.run import Run, check_run
from gptlab.training.trackers import check_installed


def plan_run(experiment: str, preset: str, overrides: list[str], seed: int | None = None,
             max_steps: int | None = None, log_dir: Path | None = None, world_size: int = 1,
             quiet: bool = False) -> Run:
    """A run resolved and checked, nothing written: the experiment file, then the preset, then the
    overrides (then seed and max_steps); its log directory log_train/<experiment>/log, or
    .../seed<N> when a seed is given. quiet: no note of preset fields replacing the file's."""
    exp = load_experiment(experiment)
    parsed = parse_overrides(overrides)
    preset_model, preset_train = PRESETS[preset]
    for flag, value in (("max_steps", max_steps), ("seed", seed)):
        if value is not None:
            parsed["train"][flag] = value
    model_config = replace_config(exp.model_config, **{**preset_model, **parsed["model"]})
    train_config = replace_config(exp.training_config, **{**preset_train, **parsed["train"]})
    for label, own, default, preset_values in (("MODEL_CONFIG", exp.model_config, GPTConfig(), preset_model),
                                               ("TRAINING_CONFIG", exp.training_config, TrainingConfig(),
                                                preset_train)):
        hidden = [f"{name}={getattr(own, name)!r} (the preset's {value!r})" for name, value in preset_values.items()
                  if getattr(own, name) != getattr(default, name) and getattr(own, name) != value]
        if hidden and not quiet:
            print(f"note: the preset {preset} replaces what {exp.path.name}'s {label} sets: {', '.join(hidden)}; "
                  f"give them as overrides to keep them")
    log_dir = log_dir or default_log_dir(exp.name, seed)
    run = Run(exp, model_config, train_config, Path(log_dir).expanduser().resolve(), preset=preset)
    check_run(run, world_size)
    run.warnings = optimizer_class(exp.optimizer_class).warnings(train_config)
    for warning in run.warnings if not quiet else []:
        print(f"warning: {warning}")
    check_installed(train_config)  # a tracker asked for but not installed
    if user_components(exp) or exp.optimizer_class not in (AdamW, Muon):  # not gptlab's own: it proves itself
        problems = (check_experiment(exp, model_config, train_config) if user_components(exp) else
                    optimizer_step_problems(exp, model_config, train_config))
        if problems:
            raise ExperimentError(f"experiment {exp.path} fails the component check (`gptlab check "
                                  f"{experiment}` runs it alone):\n  - " + "\n  - ".join(problems))
    return run


def default_log_dir(experiment_name: str, seed: int | None = None) -> Path:
    """Where a run lives unless --log-dir says otherwise: log_train/<experiment>/log, or .../seed<N>."""
    return LOG_ROOT / experiment_name / ("log" if seed is None else seed_dir_name(seed))


def seed_dir_name(seed: int) -> str:
    """The log directory of one seed's run, beside the experiment's others: seed1337."""
    return f"seed{seed}"
