"""A Llama-style GPT-2 (Touvron et al. 2023): rotary positions, SwiGLU MLP (8/3 n_embd),
RMSNorm, grouped-query attention with 4 K/V heads, and no biases. Each component is named
here; everything else (tied embeddings, GPT-2's init, the recipe) stays GPT-2's, so this
is the four changes together. Llama also unties the LM head from the embedding, and Llama 3
raises rope_theta to 500000: model.rope_theta=500000 does that here."""
from gptlab import GPTConfig
from gptlab.modules import GQAAttention, RMSNorm, RoPE, SwiGLU

MODEL_CONFIG = GPTConfig(n_kv_head=4, bias=False)
ATTENTION_CLASS = GQAAttention
POSITION_ENCODING_CLASS = RoPE
MLP_CLASS = SwiGLU
NORM_CLASS = RMSNorm
