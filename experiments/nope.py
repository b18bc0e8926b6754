"""No position encoding (NoPE, Kazemnejad et al. 2023): causal attention alone; the learned
position table is gone (its 786k parameters with it) and nothing is added or rotated."""
from gptlab.modules import NoPE

POSITION_ENCODING_CLASS = NoPE
