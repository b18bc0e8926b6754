"""Experiments: `experiments/NAME.py` files that name the components they change.

An experiment file may set MODEL_CONFIG, ATTENTION_CLASS, POSITION_ENCODING_CLASS,
MLP_CLASS, NORM_CLASS, OPTIMIZER_CLASS and TRAINING_CONFIG; each absent name takes the
baseline's value.
`load_experiment` checks everything before anything is built and raises one
`ExperimentError` that lists every problem.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from gptlab.core.config import ConfigError, GPTConfig, TrainingConfig, unknown_field_error
from gptlab.modules.attention import Attention, BaseAttention
from gptlab.modules.mlp import MLP
from gptlab.modules.position import LearnedPositionEncoding, PositionEncoding
from gptlab.optim import AdamW, Optimizer
from gptlab.paths import EXPERIMENTS_DIR, missing


DEFAULTS = {
    "MODEL_CONFIG": GPTConfig(),
    "ATTENTION_CLASS": BaseAttention,
    "POSITION_ENCODING_CLASS": LearnedPositionEncoding,
    "MLP_CLASS": MLP,
    "NORM_CLASS": nn.LayerNorm,
    "OPTIMIZER_CLASS": AdamW,
    "TRAINING_CONFIG": TrainingConfig(),
}

# what each class slot accepts: (base class a class must derive from, what it is called)
_KINDS = {
    "ATTENTION_CLASS": (Attention, "an attention class (a subclass of gptlab.modules.Attention)"),
    "POSITION_ENCODING_CLASS": (PositionEncoding, "a position encoding (a subclass of gptlab.modules.PositionEncoding)"),
    "MLP_CLASS": (nn.Module, "an MLP class (an nn.Module built as cls(config))"),
    "NORM_CLASS": (nn.Module, "a norm class (an nn.Module built as cls(n_embd))"),
    "OPTIMIZER_CLASS": ((Optimizer, torch.optim.Optimizer), "an optimizer (a subclass of gptlab.optim.Optimizer, "
                        "such as AdamW or Muon, or of torch.optim.Optimizer)"),
}
# the framework's own kinds, so that a class given to the wrong slot is named as such
_KNOWN_KINDS = [(Attention, "ATTENTION_CLASS", "an attention class"),
                (PositionEncoding, "POSITION_ENCODING_CLASS", "a position encoding"),
                (MLP, "MLP_CLASS", "an MLP class"),
                ((nn.LayerNorm, nn.RMSNorm), "NORM_CLASS", "a norm class"),
                ((Optimizer, torch.optim.Optimizer), "OPTIMIZER_CLASS", "an optimizer")]


class ExperimentError(ValueError):
    """An experiment cannot be loaded; the message says what is wrong and what to do."""


# the component slots of an experiment, as GPT takes them; and the optimizer's
SLOTS = ("attention_class", "position_encoding_class", "mlp_class", "norm_class")
OPTIMIZER_SLOT = "optimizer_class"


@dataclass
class Experiment:
    name: str
    path: Path
    model_config: GPTConfig
    attention_class: type
    position_encoding_class: type
    mlp_class: type
    norm_class: type
    training_config: TrainingConfig
    optimizer_class: type = AdamW

    def components(self) -> dict[str, type]:
        """The model's component classes, as GPT takes them."""
        return {slot: getattr(self, slot) for slot in SLOTS}

    def class_names(self) -> dict[str, str]:
        """Each component's full dotted name, the optimizer's too, as logs and checkpoints record them."""
        return {slot: class_path(cls) for slot, cls in {**self.components(), OPTIMIZER_SLOT: self.optimizer_class}.items()}


def class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def find_class(dotted: str, experiment_path: Path | str) -> type:
    """The class a checkpoint recorded by its dotted name. A class defined in the experiment
    file is found by executing that file (and only then); any other is imported."""
    module_name, _, qualname = dotted.rpartition(".")
    path = Path(experiment_path)
    if module_name == _module_name(path):
        if not path.is_file():
            raise ExperimentError(f"{qualname} was defined in the experiment file {path}, which no longer exists; "
                                  f"restore the file to use this checkpoint")
        namespace = _execute(path)
    else:
        try:
            namespace = vars(importlib.import_module(module_name))
        except ImportError as e:
            raise ExperimentError(f"cannot import {module_name} for the component {dotted} ({e}); "
                                  f"install it or put it on PYTHONPATH") from None
    found = namespace.get(qualname.split(".")[0])
    for part in qualname.split(".")[1:]:
        found = getattr(found, part, None)
    if not isinstance(found, type):
        raise ExperimentError(f"the component {dotted} no longer exists: {module_name} has no class {qualname}")
    return found


def recorded_classes(record: dict) -> dict[str, str]:
    """The class names a log or checkpoint recorded of an experiment; the optimizer's is AdamW's
    where it was recorded before the optimizer became a component."""
    names = {slot: record.get(slot) for slot in (*SLOTS, OPTIMIZER_SLOT)}
    names[OPTIMIZER_SLOT] = names[OPTIMIZER_SLOT] or class_path(AdamW)
    return names


def experiment_from_record(record: dict, model_config: GPTConfig, training_config: TrainingConfig) -> Experiment:
    """The experiment a log or checkpoint recorded, its classes found again by name."""
    classes = {slot: find_class(record[slot], record["path"]) for slot in SLOTS}
    if record.get(OPTIMIZER_SLOT):  # recorded since the optimizer became a component; AdamW before
        classes[OPTIMIZER_SLOT] = find_class(record[OPTIMIZER_SLOT], record["path"])
    return Experiment(name=record["name"], path=Path(record["path"]), model_config=model_config,
                      training_config=training_config, **classes)


def available_experiments() -> list[str]:
    return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.py") if not p.stem.startswith("_"))


def resolve_experiment_path(name_or_path: str | Path) -> Path:
    """`rope` -> experiments/rope.py; a path ending in .py is taken as it is."""
    text = str(name_or_path)
    if text.endswith(".py"):
        path = Path(text).expanduser().resolve()
        if not path.is_file():
            raise ExperimentError(f"experiment file {missing(text)}")
        return path
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", text):
        raise ExperimentError(f"experiment name {text!r} is not a plain name: names are files in "
                              f"{EXPERIMENTS_DIR} (letters, digits, _); pass a path ending in .py "
                              f"to load a file from elsewhere")
    path = EXPERIMENTS_DIR / f"{text}.py"
    if not path.is_file():
        names = available_experiments()
        close = difflib.get_close_matches(text, names, n=3, cutoff=0.5)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise ExperimentError(f"no experiment named {text!r}; {hint}available: {', '.join(names)}")
    return path


def load_experiment(name_or_path: str | Path) -> Experiment:
    path = resolve_experiment_path(name_or_path)
    namespace = _execute(path)
    problems = [_not_a_setting(name, value) for name, value in namespace.items() if name not in DEFAULTS]
    problems = [p for p in problems if p]
    values = {name: namespace.get(name, default) for name, default in DEFAULTS.items()}
    for name, config_cls in (("MODEL_CONFIG", GPTConfig), ("TRAINING_CONFIG", TrainingConfig)):
        if not isinstance(values[name], config_cls):
            problems.append(f"{name} must be a {config_cls.__name__}(...), got {values[name]!r}")
    for slot, (base, description) in _KINDS.items():
        problem = _check_class(slot, values[slot], base, description)
        if problem:
            problems.append(problem)
    if problems:
        raise ExperimentError(f"experiment {path} has problems:\n  - " + "\n  - ".join(problems))
    return Experiment(name=path.stem, path=path, model_config=values["MODEL_CONFIG"],
                      attention_class=values["ATTENTION_CLASS"],
                      position_encoding_class=values["POSITION_ENCODING_CLASS"],
                      mlp_class=values["MLP_CLASS"], norm_class=values["NORM_CLASS"],
                      training_config=values["TRAINING_CONFIG"], optimizer_class=values["OPTIMIZER_CLASS"])


def _module_name(path: Path) -> str:
    return f"gptlab_experiment_{path.stem}"


def _execute(path: Path) -> dict:
    module_name = _module_name(path)
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # lets classes defined in the file be found by name
    try:
        spec.loader.exec_module(module)
    except TypeError as e:
        match = re.search(r"(\w+)\.__init__\(\) got an unexpected keyword argument '(\w+)'", str(e))
        configs = {"GPTConfig": GPTConfig, "TrainingConfig": TrainingConfig}
        if match and match.group(1) in configs:
            raise ExperimentError(f"experiment {path}: {unknown_field_error(configs[match.group(1)], match.group(2))}") from None
        raise ExperimentError(f"experiment {path} failed to run: {e}") from e
    except ConfigError as e:
        raise ExperimentError(f"experiment {path}: {e}") from None
    except Exception as e:
        raise ExperimentError(f"experiment {path} failed to run: {type(e).__name__}: {e}") from e
    return vars(module)


def _not_a_setting(name: str, value) -> str | None:
    """The problem with a top-level name that looks meant as a setting but is not one: a config,
    or a component class bound under a name other than its own (`MLP = SwiGLU`), or an
    upper-case name close to a setting's. Imports and helpers (`_private`) pass."""
    if name.startswith("_"):
        return None
    is_config = isinstance(value, (GPTConfig, TrainingConfig))
    is_component = (isinstance(value, type) and issubclass(value, (nn.Module, Optimizer, torch.optim.Optimizer))
                    and value.__name__ != name)
    close = difflib.get_close_matches(name.upper(), DEFAULTS, n=1, cutoff=0.75)
    if not (is_config or is_component or (name.isupper() and close)):
        return None
    if is_config:  # the setting its kind fits, else the closest name
        close = ["MODEL_CONFIG" if isinstance(value, GPTConfig) else "TRAINING_CONFIG"]
    elif is_component:
        close = [slot for kind, slot, _ in _KNOWN_KINDS if issubclass(value, kind)][:1] or close
    hint = f"did you mean {close[0]}? " if close else ""
    return (f"{name} is not a setting an experiment reads, so it would be ignored; {hint}"
            f"the settings are: {', '.join(DEFAULTS)}")


def _check_class(slot: str, value, base: type, description: str) -> str | None:
    if not isinstance(value, type):
        return f"{slot} must be a class, got {value!r}; it should be {description}"
    for kind, kind_slot, what in _KNOWN_KINDS:
        if issubclass(value, kind) and kind_slot != slot:
            return f"{slot} = {value.__name__} is {what}, not {description}; did you mean {kind_slot}?"
    if not issubclass(value, base):
        return f"{slot} = {value.__name__} is not {description}"
    return None
