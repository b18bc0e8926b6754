"""Initialisation schemes, chosen by `GPTConfig.init`, so that "does the init matter?" is a
study like any other. Each scheme draws every Linear and Embedding weight (and a learned
position table) from a normal distribution and zeroes the biases; the residual output
projections (`c_proj`, by name, in attention, MLPs and experts alike) get a scale of their
own. Norms keep their ones.

- `gpt2`: std 0.02, residual projections 0.02 / sqrt(2 * n_layer) (GPT-2 paper §2.3, as
  nanoGPT and build-nanogpt draw them).
- `small`: std sqrt(2 / (5 * n_embd)) ("small init", Nguyen & Salazar 2019, "Transformers
  without Tears" §2.2), residual projections 2 / (n_layer * sqrt(n_embd)) ("wang init",
  Wang & Komatsuzaki's GPT-J): GPT-NeoX's default pair. At n_embd=768, n_layer=12 these
  are 0.0228 and 0.0060, against GPT-2's 0.02 and 0.0041: "small" draws the weights larger
  than GPT-2 at this width (below n_embd=1000 it does) and the residual projections larger too.

A module that owns a table of its own (the learned position table) draws it in its
`init_weights(std)`; the scheme calls that rather than knowing the module.
"""

from __future__ import annotations

import difflib
import math

from torch import nn

from gptlab.core.config import GPTConfig

INIT_SCHEMES = ("gpt2", "small")


def check_init(config: GPTConfig) -> list[str]:
    """The problem with config.init, in words (none when it names a scheme)."""
    if config.init in INIT_SCHEMES:
        return []
    close = difflib.get_close_matches(str(config.init), INIT_SCHEMES, n=1)
    return [f"init={config.init!r} is not a scheme; {f'did you mean {close[0]!r}? ' if close else ''}"
            f"the schemes are {', '.join(INIT_SCHEMES)} (gptlab.models.init)"]


def scheme_stds(config: GPTConfig) -> tuple[float, float]:
    """(std of every weight, std of the residual output projections) of config.init, at the parametrization's base
    shape: under CompleteP the residual projections keep the base depth's std (the branch multiplier, not the init,
    follows the depth), under muP a width-dependent scheme ("small") is the base width's."""
    m_d, m_l = config.multipliers()  # under muP and CompleteP a scheme is the base shape's: the parametrization
    n_layer, n_embd = config.n_layer / m_l, config.n_embd / m_d  # scales it from there (gptlab.models.parametrization)
    if config.init == "small":
        return math.sqrt(2 / (5 * n_embd)), 2 / (n_layer * math.sqrt(n_embd))
    return 0.02, 0.02 / math.sqrt(2 * n_layer)


def is_residual_projection(name: str) -> bool:
    return name.endswith(("c_proj.weight", "c_proj_weight"))  # a Linear's, or a stack of experts' (MoE)


def init_weights(model: nn.Module, config: GPTConfig) -> None:
    """Draw the model's weights as config.init says. The order of draws is GPT-2's (every
    module, children first, then the residual projections again), so that a seed gives
    the same weights as it always has."""
    std, residual_std = scheme_stds(config)

    def draw(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        for name in getattr(module, "stacked_params", ()):  # a stack of Linear weights (MoE's experts): each alike
            nn.init.normal_(getattr(module, name), mean=0.0, std=std)
        if hasattr(module, "init_weights") and config.init != "gpt2":
            module.init_weights(std)  # gpt2: its table was drawn at 0.02 when it was built

    model.apply(draw)
    for name, p in model.named_parameters():
        if is_residual_projection(name):
            nn.init.normal_(p, mean=0.0, std=residual_std)
