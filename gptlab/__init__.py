"""gptlab: a modular GPT-2 pretraining framework for architecture ablations.

    from gptlab import load_experiment, build_model
    exp = load_experiment("rope")
    model = build_model(exp, n_layer=2, n_head=4, n_embd=64, block_size=64)
    model = load_model("log_train/rope/log/model_00050.pt")
"""

from gptlab.core.config import ConfigError, GPTConfig, TrainingConfig, replace_config
from gptlab.core.experiment import Experiment, ExperimentError, load_experiment
from gptlab.models.gpt import GPT, ModelOutput, build_gpt


def build_model(experiment: Experiment, **overrides) -> GPT:
    """The experiment's GPT, with keyword overrides of its MODEL_CONFIG fields."""
    return build_gpt(experiment, replace_config(experiment.model_config, **overrides))


def load_model(path) -> GPT:
    """The GPT a checkpoint describes, with its weights, on the CPU, in eval mode. Its
    component classes are found again by the dotted names the checkpoint records."""
    from gptlab.training.checkpoint import load_model as load
    return load(path)


__all__ = ["load_experiment", "build_model", "load_model", "Experiment", "ExperimentError", "GPT", "ModelOutput",
           "GPTConfig", "TrainingConfig", "ConfigError"]
