"""Text samples from a fixed prompt and seed, so runs can be read side by side."""

from __future__ import annotations

import torch

from gptlab.data.tokenizer import gpt2_encoding


def generate_samples(model, prompt: str, num_samples: int, max_new_tokens: int, device: str,
                     seed: int = 42, temperature: float = 1.0, top_k: int | None = 50) -> list[str]:
    enc = gpt2_encoding()
    tokens = enc.encode(prompt, allowed_special={"<|endoftext|>"})
    idx = torch.tensor([tokens] * num_samples, dtype=torch.long, device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    out = model.generate(idx, max_new_tokens, temperature=temperature, top_k=top_k, generator=generator)
    return [enc.decode(row.tolist()) for row in out]
