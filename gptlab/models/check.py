"""The check a component that is not gptlab's own must pass before a run trains with it:
built as the framework builds it, called as the framework calls it, on a tiny input, it
must give logits of the right shape, be causal, and give the same logits with the KV cache
as without. Run by train.py before anything is written, and by `gptlab check EXPERIMENT`."""

from __future__ import annotations

import dataclasses

import torch

from gptlab.core.config import GPTConfig, TrainingConfig
from gptlab.core.experiment import Experiment
from gptlab.models.gpt import build_gpt, check_components
from gptlab.optim import AdamW, Muon, optimizer_class

INTERFACE = ("the interface: attention cls(config), forward(x, pos_enc, pos, cache=None) -> (B, T, C); position "
             "encoding cls(config, rotary_dim) with forward(x, pos), rotate(t, pos), score_bias(q_pos, k_pos); "
             "MLP cls(config) and norm cls(n_embd), forward(x) -> same shape (see the README)")


def user_components(experiment: Experiment) -> dict[str, type]:
    return {slot: cls for slot, cls in experiment.components().items()
            if not cls.__module__.startswith(("gptlab.", "torch."))}


def check_experiment(experiment: Experiment, model_config: GPTConfig | None = None,
                     train: TrainingConfig | None = None) -> list[str]:
    """Every problem of the experiment's components on a tiny model of its config (widths kept,
    two layers, 16 positions, a 64-token vocabulary), one sentence each. Causality is checked in
    evaluation and in training mode (each training pass from the same RNG state, so dropout or
    noise draws the same), and each sequence of a batch must be computed from itself alone. An
    optimizer that is not gptlab's own takes one step on it (a torch optimizer that cannot update
    dense gradients, SparseAdam, would otherwise fail at the run's first step)."""
    problems = user_component_problems(experiment, model_config)
    if not problems and experiment.optimizer_class not in (AdamW, Muon):
        problems += optimizer_step_problems(experiment, model_config, train or experiment.training_config)
    return problems


def optimizer_step_problems(experiment: Experiment, model_config: GPTConfig | None, train: TrainingConfig) -> list[str]:
    """The experiment's optimizer built on the tiny model and stepped once on a real gradient."""
    config = model_config or experiment.model_config
    config = dataclasses.replace(config, n_layer=min(2, config.n_layer), block_size=16, vocab_size=64, dropout=0.0)
    name = getattr(experiment.optimizer_class, "__name__", experiment.optimizer_class)
    torch.manual_seed(0)
    try:
        model = build_gpt(experiment, config)
        optimizer = optimizer_class(experiment.optimizer_class)(model, train, "cpu")
        idx = torch.randint(0, 64, (2, 12))
        model(idx, idx).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    except Exception as e:  # noqa: BLE001 - a user's optimizer: whatever it raises, said in words
        return [f"OPTIMIZER_CLASS = {name} fails its first step on a tiny model: {type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''}"]
    return []


def user_component_problems(experiment: Experiment, model_config: GPTConfig | None = None) -> list[str]:
    """check_experiment's part for the model's components."""
    config = model_config or experiment.model_config
    config = dataclasses.replace(config, n_layer=min(2, config.n_layer), block_size=16, vocab_size=64, dropout=0.0)
    if "moe_capacity_factor" in getattr(experiment.mlp_class, "config_fields", ()):
        config = dataclasses.replace(config, moe_capacity_factor=0.0)  # a capacity mixes a batch's tokens by design
    names = ", ".join(f"{slot.upper()} = {cls.__name__}" for slot, cls in user_components(experiment).items())
    check_components(config, **experiment.components())  # a config problem is the config's error, not the class's
    torch.manual_seed(0)
    try:
        model = build_gpt(experiment, config).double().eval()
    except Exception as e:
        return [f"the model with {names or 'its components'} cannot be built: {type(e).__name__}: {e}; {INTERFACE}"]
    idx = torch.randint(0, 64, (2, 12))
    later_token = idx.clone()
    later_token[:, 7] = (later_token[:, 7] + 1) % 64
    other_row = idx.clone()
    other_row[1] = (other_row[1] + 1 + torch.arange(12)) % 64

    def in_training(tokens):
        torch.manual_seed(1)  # the same draws (dropout, noise) for every pass
        return model(tokens).logits

    try:
        with torch.no_grad():
            logits, later, rows = (model(t).logits for t in (idx, later_token, other_row))
            caches = model.new_caches()
            cached = torch.cat([model(idx[:, :5], caches=caches).logits] +
                               [model(idx[:, t:t + 1], caches=caches).logits for t in range(5, 12)], dim=1)
            model.train()
            trained, trained_later, trained_rows = (in_training(t) for t in (idx, later_token, other_row))
            model.eval()
    except Exception as e:
        return [f"a forward pass with {names or 'its components'} fails: {type(e).__name__}: {e}; {INTERFACE}"]
    problems = []
    if logits.shape != (2, 12, 64):
        problems.append(f"logits have shape {tuple(logits.shape)}, not (batch, time, vocab) = (2, 12, 64)")
        return [f"{names}: {p}" for p in problems]
    if not torch.allclose(logits[:, :7], later[:, :7], atol=1e-8):
        problems.append("it is not causal: changing token 7 changed the logits of earlier positions")
    elif not torch.allclose(trained[:, :7], trained_later[:, :7], atol=1e-8):
        worst = (trained[:, :7] - trained_later[:, :7]).abs().max().item()
        problems.append(f"it is not causal in training mode: changing token 7 changed the logits of earlier positions "
                        f"by up to {worst:.3g} (a mask or a path that depends on self.training, or a norm over "
                        f"time such as BatchNorm, lets training see the future)")
    if not (torch.allclose(logits[0], rows[0], atol=1e-8) and torch.allclose(trained[0], trained_rows[0], atol=1e-8)):
        problems.append("the sequences of a batch are not computed apart: changing the second sequence changed the "
                        "first one's logits (a norm over the batch such as BatchNorm, or an attention across the "
                        "batch dimension)")
    if not torch.allclose(cached, logits, atol=1e-6, rtol=1e-5):
        worst = (cached - logits).abs().max().item()
        problems.append(f"generation with the KV cache gives other logits than the full sequence (by up to {worst:.3g}): "
                        f"an attention must store its keys and values with cache.append(...) and attend over all of "
                        f"them, and a position encoding must use the absolute positions `pos` it is given")
    return [f"{names}: {p}" for p in problems]
