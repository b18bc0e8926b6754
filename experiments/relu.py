"""ReLU activation in the MLP instead of GELU."""
from gptlab.modules import ReLUMLP

MLP_CLASS = ReLUMLP
