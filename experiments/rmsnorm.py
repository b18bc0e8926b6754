"""RMSNorm (Zhang & Sennrich 2019) instead of LayerNorm."""
from gptlab.modules import RMSNorm

NORM_CLASS = RMSNorm
