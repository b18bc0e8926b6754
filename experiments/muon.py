"""Muon on the baseline: the blocks' matrices updated by Muon (Keller Jordan 2024, "Muon: An
optimizer for hidden layers in neural networks"; torch.optim.Muon), the embedding (tied to the
LM head), biases and norm gains by the recipe's AdamW; the model is GPT-2's. muon_lr 0.02,
momentum 0.95 with Nesterov, 5 Newton-Schulz steps, Keller Jordan's learning-rate scale: the
settings of his reference implementation and of modded-nanogpt. Tune them as train.muon_* fields;
a study's --lr-sweep multiplies muon_lr and max_lr together."""
from gptlab.optim import Muon

OPTIMIZER_CLASS = Muon
