"""Generation throughput: tokens/s of greedy decoding with the KV cache and without it
(the whole sequence recomputed for every new token), and the cache's bytes per token."""

from __future__ import annotations

import time

import torch

from gptlab.bench.peak import synchronize
from gptlab.core.config import GPT2_VOCAB
from gptlab.models.gpt import GPT


@torch.no_grad()
def uncached_generate(model: GPT, idx: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    """Greedy decoding without a cache: every step runs the whole sequence so far."""
    for _ in range(max_new_tokens):
        logits = model.lm_head(model.features(idx)[0][:, -1])
        idx = torch.cat([idx, logits.argmax(-1, keepdim=True)], dim=1)
    return idx


def timed(fn, device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def measure_generation(model: GPT, device: torch.device, autocast, prompt_len: int, new_tokens: int,
                       dtype: torch.dtype) -> dict:
    """Tokens/s of cached and uncached greedy generation of one sequence, after a warm-up of
    each; the KV cache's bytes per token in `dtype` (all layers)."""
    model.eval()
    prompt = torch.randint(0, min(model.config.vocab_size, GPT2_VOCAB), (1, prompt_len),
                           generator=torch.Generator().manual_seed(0)).to(device)
    with autocast:
        model.generate(prompt, 2, temperature=0)
        uncached_generate(model, prompt, 2)
        cached = timed(lambda: model.generate(prompt, new_tokens, temperature=0), device)
        uncached = timed(lambda: uncached_generate(model, prompt, new_tokens), device)
    model.train()
    return {"cached_tokens_per_second": new_tokens / cached, "uncached_tokens_per_second": new_tokens / uncached,
            "kv_bytes_per_token": model.kv_cache_bytes_per_token(dtype), "kv_dtype": str(dtype).removeprefix("torch."),
            "prompt_tokens": prompt_len,
            "new_tokens": new_tokens}
