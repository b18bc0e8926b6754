"""Warm starts: `--init-from SOURCE` begins a new run from another model's weights only
(a new optimizer, step 0, a new log whose header names the source).

SOURCE is a gptlab checkpoint (`model_NNNNN.pt`), or OpenAI's GPT-2 (`gpt2`, `gpt2-medium`,
`gpt2-large`, `gpt2-xl`, or a local Hugging Face GPT-2 directory: gptlab.models.pretrained).
Either way the weights must fit the model the run builds exactly: the same component
classes and the same architecture fields, every mismatch named. What does not shape the
weights may differ (dropout, the init scheme, the MoE routing's training knobs), and so may
the whole training recipe: that is what a warm start is for.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from gptlab.core.config import GPTConfig, replace_config
from gptlab.core.experiment import OPTIMIZER_SLOT, load_experiment
from gptlab.training import checkpoint as ckpt
from gptlab.training.run import TrainingError
from gptlab.training.state import plain_weights

# fields that do not shape the weights, so a warm start may change them
FREE_FIELDS = {"dropout", "init", "moe_capacity_factor", "moe_jitter", "moe_balance_weight", "moe_z_weight"}


def is_pretrained_source(source: str) -> bool:
    """A Hugging Face directory (it holds config.json), or a GPT-2 name that is not a path here."""
    from gptlab.models.pretrained import GPT2_SIZES
    path = Path(source).expanduser()
    return (path / "config.json").is_file() or (source in GPT2_SIZES and not path.exists())


def load_warm_start(source: str, run) -> None:
    """Read SOURCE's weights into run.init_weights and what it is into run.init_from, or raise
    one error naming every way its architecture differs from the run's. Nothing is written."""
    if is_pretrained_source(source):
        weights, record, config, classes = _from_gpt2(source, run)
    else:
        weights, record, config, classes = _from_checkpoint(Path(source).expanduser().resolve())
    problems = [f"{slot} is {theirs} there, {ours} here" for slot, ours in run.experiment.class_names().items()
                if slot != OPTIMIZER_SLOT and (theirs := classes.get(slot)) != ours]  # weights only: any optimizer
    for field in dataclasses.fields(GPTConfig):
        theirs, ours = getattr(config, field.name), getattr(run.model_config, field.name)
        if field.name not in FREE_FIELDS and theirs != ours:
            problems.append(f"model.{field.name} is {theirs!r} there, {ours!r} here")
    if problems:
        hint = ("run the experiment and preset the source was trained with, or give the differing fields as "
                "overrides" if not is_pretrained_source(source) else
                "GPT-2's weights fit the baseline experiment; use --preset gpt2 (or gpt2-medium for gpt2-medium) "
                "and give training fields only as overrides")
        raise TrainingError(f"--init-from {source}: its weights do not fit this run's model:\n  - " +
                            "\n  - ".join(problems) + f"\n{hint}. Nothing was written")
    run.init_weights, run.init_from = weights, record


def _from_checkpoint(path: Path) -> tuple[dict, dict, GPTConfig, dict]:
    state = ckpt.load_checkpoint(path)
    saved = state["experiment"]
    try:
        config = GPTConfig(**{k: v for k, v in state["model_config"].items()
                              if k in {f.name for f in dataclasses.fields(GPTConfig)}})
    except (TypeError, ValueError) as e:
        raise TrainingError(f"--init-from {path}: its model config does not fit this version of gptlab ({e})") from None
    marker = path.with_name(path.name + ".sha256")
    record = {"source": str(path), "kind": "checkpoint", "experiment": saved.get("name"), "step": state.get("step"),
              "sha256": marker.read_text().split()[0] if marker.is_file() else None}
    return plain_weights(state["model"]), record, config, {k: v for k, v in saved.items() if k.endswith("_class")}


def _from_gpt2(source: str, run) -> tuple[dict, dict, GPTConfig, dict]:
    from gptlab.models.pretrained import PretrainedError, load_gpt2
    try:
        config, weights = load_gpt2(source)
    except PretrainedError as e:
        raise TrainingError(f"--init-from {source}: {e}") from None
    baseline = load_experiment("baseline")
    # GPT-2's vocabulary is 50257, unpadded (a zero row would give a logit of 0, far above GPT-2's
    # real logits); the run takes it, and every other field must be GPT-2's already
    if run.model_config.vocab_size != config.vocab_size:
        print(f"note: --init-from {source}: model.vocab_size={config.vocab_size} (GPT-2's own, not padded) in place "
              f"of {run.model_config.vocab_size}")
        run.model_config = replace_config(run.model_config, vocab_size=config.vocab_size)
    config = dataclasses.replace(config, **{name: getattr(run.model_config, name) for name in FREE_FIELDS})
    record = {"source": source, "kind": "gpt2", "experiment": "baseline"}
    return weights, record, config, baseline.class_names()
