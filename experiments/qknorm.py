"""QK-norm: RMSNorm on each head's queries and keys before the dot product (OLMo 2; per
head as Gemma 3 and Qwen3), with a learned gain of the head size; everything else GPT-2's."""
from gptlab.modules import QKNormAttention

ATTENTION_CLASS = QKNormAttention
