"""QK-norm: RMSNorm on each head's queries and keys before the dot product, with one learned
gain of the head size shared by the heads (Qwen3's and Gemma 3's; OLMo 2 normalises the whole
projection, all heads at once); everything else GPT-2's."""
from gptlab.modules import QKNormAttention

ATTENTION_CLASS = QKNormAttention
