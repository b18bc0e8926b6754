"""Fixed sinusoidal positions (Vaswani et al. 2017) instead of learned ones."""
from gptlab.modules import SinusoidalPositionalEncoding

POSITION_ENCODING_CLASS = SinusoidalPositionalEncoding
