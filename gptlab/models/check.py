"""The check a component that is not gptlab's own must pass before a run trains with it:
built as the framework builds it, called as the framework calls it, on a tiny input, it
must give logits of the right shape, be causal, and give the same logits with the KV cache
as without. Run by train.py before anything is written, and by `gptlab check EXPERIMENT`."""

from __future__ import annotations

import dataclasses

import torch

from gptlab.core.config import GPTConfig
from gptlab.core.experiment import Experiment
from gptlab.models.gpt import build_gpt, check_components

INTERFACE = ("the interface: attention cls(config), forward(x, pos_enc, pos, cache=None) -> (B, T, C); position "
             "encoding cls(config, rotary_dim) with forward(x, pos), rotate(t, pos), score_bias(q_pos, k_pos); "
             "MLP cls(config) and norm cls(n_embd), forward(x) -> same shape (see the README)")


def user_components(experiment: Experiment) -> dict[str, type]:
    return {slot: cls for slot, cls in experiment.components().items()
            if not cls.__module__.startswith(("gptlab.", "torch."))}


def check_experiment(experiment: Experiment, model_config: GPTConfig | None = None) -> list[str]:
    """Every problem of the experiment's components on a tiny model of its config (widths kept,
    two layers, 16 positions, a 64-token vocabulary), one sentence each."""
    config = model_config or experiment.model_config
    config = dataclasses.replace(config, n_layer=min(2, config.n_layer), block_size=16, vocab_size=64, dropout=0.0)
    names = ", ".join(f"{slot.upper()} = {cls.__name__}" for slot, cls in user_components(experiment).items())
    check_components(config, **experiment.components())  # a config problem is the config's error, not the class's
    torch.manual_seed(0)
    try:
        model = build_gpt(experiment, config).double().eval()
    except Exception as e:
        return [f"the model with {names or 'its components'} cannot be built: {type(e).__name__}: {e}; {INTERFACE}"]
    idx = torch.randint(0, 64, (2, 12))
    try:
        with torch.no_grad():
            logits = model(idx).logits
            changed = idx.clone()
            changed[:, 7] = (changed[:, 7] + 1) % 64
            later = model(changed).logits
            caches = model.new_caches()
            cached = torch.cat([model(idx[:, :5], caches=caches).logits] +
                               [model(idx[:, t:t + 1], caches=caches).logits for t in range(5, 12)], dim=1)
    except Exception as e:
        return [f"a forward pass with {names or 'its components'} fails: {type(e).__name__}: {e}; {INTERFACE}"]
    problems = []
    if logits.shape != (2, 12, 64):
        problems.append(f"logits have shape {tuple(logits.shape)}, not (batch, time, vocab) = (2, 12, 64)")
    elif not torch.allclose(logits[:, :7], later[:, :7], atol=1e-8):
        problems.append("it is not causal: changing token 7 changed the logits of earlier positions")
    elif not torch.allclose(cached, logits, atol=1e-6, rtol=1e-5):
        worst = (cached - logits).abs().max().item()
        problems.append(f"generation with the KV cache gives other logits than the full sequence (by up to {worst:.3g}): "
                        f"an attention must store its keys and values with cache.append(...) and attend over all of "
                        f"them, and a position encoding must use the absolute positions `pos` it is given")
    return [f"{names}: {p}" for p in problems]
