"""The pluggable components: one module per kind."""

from torch.nn import LayerNorm

from gptlab.modules.attention import (Attention, BaseAttention, GQAAttention, KVCache, MLAAttention, MQAAttention,
                                     QKNormAttention)
from gptlab.modules.block import Block, Extras
from gptlab.modules.mlp import GEGLU, MLP, ReLUMLP, SiLUMLP, SwiGLU
from gptlab.modules.moe import MoE, SwiGLUMoE
from gptlab.modules.norm import RMSNorm
from gptlab.modules.position import (ALiBi, LearnedPositionEncoding, NoPE, PositionEncoding, RoPE,
                                     SinusoidalPositionalEncoding)

__all__ = ["Attention", "BaseAttention", "GQAAttention", "MQAAttention", "MLAAttention", "QKNormAttention", "KVCache",
           "PositionEncoding", "LearnedPositionEncoding", "SinusoidalPositionalEncoding", "RoPE", "ALiBi", "NoPE",
           "MLP", "GEGLU", "SwiGLU", "SiLUMLP", "ReLUMLP", "MoE", "SwiGLUMoE", "LayerNorm", "RMSNorm", "Block", "Extras"]
