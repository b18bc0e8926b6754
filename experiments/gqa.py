"""Grouped-query attention (Ainslie et al. 2023): 12 query heads in 4 groups."""
from gptlab import GPTConfig
from gptlab.modules import GQAAttention

ATTENTION_CLASS = GQAAttention
MODEL_CONFIG = GPTConfig(n_kv_head=4)
