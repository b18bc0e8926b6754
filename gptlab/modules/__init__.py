"""The pluggable components: one module per kind."""

from torch.nn import LayerNorm

from gptlab.modules.attention import Attention, BaseAttention, GQAAttention, KVCache, MLAAttention, MQAAttention
from gptlab.modules.block import Block, Extras
from gptlab.modules.mlp import GEGLU, MLP, ReLUMLP, SiLUMLP, SwiGLU
from gptlab.modules.norm import RMSNorm
from gptlab.modules.position import (ALiBi, LearnedPositionEncoding, PositionEncoding, RoPE,
                                     SinusoidalPositionalEncoding)

__all__ = ["Attention", "BaseAttention", "GQAAttention", "MQAAttention", "MLAAttention", "KVCache",
           "PositionEncoding", "LearnedPositionEncoding", "SinusoidalPositionalEncoding", "RoPE", "ALiBi",
           "MLP", "GEGLU", "SwiGLU", "SiLUMLP", "ReLUMLP", "LayerNorm", "RMSNorm", "Block", "Extras"]
