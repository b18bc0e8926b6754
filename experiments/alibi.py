"""ALiBi (Press et al. 2022): linear attention biases instead of position embeddings."""
from gptlab.modules import ALiBi

POSITION_ENCODING_CLASS = ALiBi
