"""DeepSeek-V2's dense shape (DeepSeek-AI 2024, arXiv:2405.04434): multi-head latent
attention with its decoupled rotary key, SwiGLU MLP (8/3 n_embd), RMSNorm, and no biases.
The routed experts of its MoE layers are left out: this is its attention and block design
at GPT-2's size. Each component is named here; tied embeddings, GPT-2's init and the recipe
stay GPT-2's. It exports as transformers' DeepseekV2ForCausalLM."""
from gptlab import GPTConfig
from gptlab.modules import MLAAttention, RMSNorm, RoPE, SwiGLU

MODEL_CONFIG = GPTConfig(bias=False)
ATTENTION_CLASS = MLAAttention
POSITION_ENCODING_CLASS = RoPE
MLP_CLASS = SwiGLU
NORM_CLASS = RMSNorm
