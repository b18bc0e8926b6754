"""RoPE (Su et al. 2021) instead of learned absolute positions."""
from gptlab.modules import RoPE

POSITION_ENCODING_CLASS = RoPE
