"""Multi-query attention (Shazeer 2019): one K/V head for all 12 query heads."""
from gptlab.modules import MQAAttention

ATTENTION_CLASS = MQAAttention
