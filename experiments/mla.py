"""Multi-head latent attention (DeepSeek-V2). Its decoupled rotary key is part of MLA,
so this pairs it with RoPE: compare it with the `rope` experiment for the attention alone.
Latent sizes follow the paper (d_c = 4 d_h = 256, d_h^R = d_h / 2 = 32): see GPTConfig."""
from gptlab.modules import MLAAttention, RoPE

ATTENTION_CLASS = MLAAttention
POSITION_ENCODING_CLASS = RoPE
