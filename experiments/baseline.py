"""GPT-2 124M as published: learned positions, MHA, GELU MLP, LayerNorm. Every default."""
