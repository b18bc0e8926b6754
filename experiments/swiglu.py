"""SwiGLU MLP (Shazeer 2020), hidden 8/3 n_embd so parameters match the GELU MLP."""
from gptlab.modules import SwiGLU

MLP_CLASS = SwiGLU
