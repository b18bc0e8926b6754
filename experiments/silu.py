"""SiLU activation in the MLP instead of GELU."""
from gptlab.modules import SiLUMLP

MLP_CLASS = SiLUMLP
