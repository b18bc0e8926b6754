"""The Llama-style stack (experiments/llama.py: RoPE, SwiGLU, RMSNorm, GQA with 4 K/V heads, no
biases) trained with Muon (experiments/muon.py): the combination modded-nanogpt and nanochat
train, in one file."""
from gptlab import GPTConfig
from gptlab.modules import GQAAttention, RMSNorm, RoPE, SwiGLU
from gptlab.optim import Muon

MODEL_CONFIG = GPTConfig(n_kv_head=4, bias=False)
ATTENTION_CLASS = GQAAttention
POSITION_ENCODING_CLASS = RoPE
MLP_CLASS = SwiGLU
NORM_CLASS = RMSNorm
OPTIMIZER_CLASS = Muon
