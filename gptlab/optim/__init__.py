"""Optimizers an experiment can name as OPTIMIZER_CLASS: AdamW (the recipe's, the default) and
Muon (with AdamW for what is not a hidden matrix); see gptlab.optim.base for the interface."""

from gptlab.optim.adamw import AdamW
from gptlab.optim.base import OPTIMIZER_FIELDS, Optimizer, check_optimizer, optimizer_class
from gptlab.optim.muon import Muon

__all__ = ["AdamW", "Muon", "Optimizer", "OPTIMIZER_FIELDS", "check_optimizer", "optimizer_class"]
