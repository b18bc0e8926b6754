"""gptlab: a modular GPT-2 pretraining framework for architecture ablations.

    from gptlab import load_experiment, build_model
    exp = load_experiment("rope")
    model = build_model(exp, n_layer=2, n_head=4, n_embd=64, block_size=64)
"""

from gptlab.core.config import ConfigError, GPTConfig, TrainingConfig, replace_config
from gptlab.core.experiment import Experiment, ExperimentError, load_experiment
from gptlab.models.gpt import GPT


def build_model(experiment: Experiment, **overrides) -> GPT:
    """The experiment's GPT, with keyword overrides of its MODEL_CONFIG fields."""
    return experiment.build(replace_config(experiment.model_config, **overrides))


__all__ = ["load_experiment", "build_model", "Experiment", "ExperimentError", "GPT", "GPTConfig",
           "TrainingConfig", "ConfigError"]
