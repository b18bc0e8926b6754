"""How initialisation, learning rates and a few multipliers follow the model's size, so that a learning rate
tuned at a base shape holds at others: the standard parametrization (GPT-2's, the default), muP for width
(Yang et al. 2022, "Tensor Programs V", table 3 and the `mup` package's MuAdamW, MuSharedReadout), CompleteP
for depth (Dey et al. 2025, arXiv 2505.01618, table 1 with alpha = 1, as EleutherAI's nanoGPT-mup `completep`
branch applies it), or both ("mup+completep").

`GPTConfig.parametrization` chooses; `base_width` and `base_depth` are the shape the rates were tuned at
(0: the model's own, where every rule below is 1 and the parametrization is the standard one exactly).
With m_d = n_embd / base_width and m_L = n_layer / base_depth:

kind of weight (inferred from shapes, `roles`)  init std     AdamW lr   weight decay  AdamW eps
  input: the token and position embeddings      as standard  x 1        x 1           x 1
  hidden: both sides grow with the width        x 1/sqrt(m_d)  x 1/m_d  x m_d         x 1/m_d
  output: only its input grows (MoE's router)   x 1/m_d      x 1/m_d    x m_d         x 1/m_d
  vector: biases, norm gains                    as standard  x 1        (none)        x 1
  any parameter inside the blocks (CompleteP)   as at base   x 1        x 1           x 1/m_L

and, in the forward pass, muP multiplies the logits by 1/m_d (the tied LM head is the embedding, an input
weight: MuSharedReadout's output multiplier is the readout's whole width rule) and scales attention scores by
1/d_head where the head grows (sqrt(d_base) / d_head: 1/sqrt(d_head) at the base head size; gptlab's dN rungs
keep heads of 64, so there it stays GPT-2's); CompleteP multiplies each block's attention and MLP outputs by
1/m_L before they join the residual stream. Weight decay grows as the learning rate shrinks (MuAdamW's), so a
hidden weight's lr x wd, the decay a step applies, is the same at every width. GPT-2's residual projection std
0.02 / sqrt(2 n_layer) keeps the base depth's n_layer: CompleteP's branch multiplier, not the init, follows the
depth. Under Muon the blocks' matrices follow Muon's own scale: 'original' (Keller Jordan's sqrt(max(1,
rows/cols))) gives an orthogonalised update of spectral norm about sqrt(fan_out/fan_in), which is muP's
condition already (Bernstein and Newhouse's spectral condition), so their rate is left alone; under
'match_rms_adamw' the update is AdamW-sized and scales by 1/m_d like a hidden AdamW weight.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass

import torch
from torch import nn

PARAMETRIZATIONS = ("standard", "mup", "completep", "mup+completep")
ROLES = ("input", "hidden", "output", "vector")


def check_parametrization(config) -> list[str]:
    """The problems with the config's parametrization fields, in words."""
    problems = []
    if config.parametrization not in PARAMETRIZATIONS:
        close = difflib.get_close_matches(str(config.parametrization), PARAMETRIZATIONS, n=1)
        problems.append(f"parametrization={config.parametrization!r} is not one; "
                        f"{f'did you mean {close[0]!r}? ' if close else ''}the choices are {', '.join(PARAMETRIZATIONS)}")
    elif config.parametrization == "standard" and (config.base_width or config.base_depth or config.base_head_dim):
        problems.append("base_width, base_depth and base_head_dim are a muP or CompleteP base shape: the standard "
                        "parametrization would ignore them; set model.parametrization=mup (or completep)")
    return problems


def output_multiplier(config) -> float:
    """muP's logit multiplier: 1 / m_d."""
    return 1.0 / config.multipliers()[0]


def base_residual_layers(config) -> int:
    """The n_layer GPT-2's residual projection init 0.02 / sqrt(2 n_layer) reads: the base depth's under CompleteP."""
    return config.n_layer / config.multipliers()[1]


@dataclass(frozen=True)
class Rule:
    """What the parametrization does to one parameter: its init's, learning rate's, weight decay's and AdamW
    epsilon's multipliers."""
    role: str
    init: float = 1.0
    lr: float = 1.0
    weight_decay: float = 1.0
    eps: float = 1.0


def roles(model) -> dict[str, str]:
    """Each parameter's kind, by which of its dimensions grow with the width: the model built again (on the meta
    device) at twice its width, each component scaling its own sizes as it does on a ladder (`rung_fields`).
    Two sides that grow: hidden; only the input side (a Linear's last dimension): output; only the other side,
    or an embedding: input; a vector: vector. A parameter a component declares in `mup_roles` takes that; one
    whose growing sides the shapes cannot place (not a Linear's, an Embedding's or a norm's, with a side that
    grows) must be declared: ValueError, in words."""
    config = model.config
    wider = wider_config(config, model.component_classes, 2)
    with torch.device("meta"):  # the model's own class, at twice the width, in the standard parametrization
        probe = type(model)(dataclasses.replace(wider, parametrization="standard", base_width=0, base_depth=0,
                                                base_head_dim=0), **model.component_classes)
    grown = dict(probe.named_parameters())
    owners = {f"{prefix}.{name}" if prefix else name: module for prefix, module in model.named_modules()
              for name, _ in module.named_parameters(recurse=False)}
    declared = {}
    for prefix, module in model.named_modules():
        for name, role in getattr(module, "mup_roles", {}).items():
            declared[f"{prefix}.{name}" if prefix else name] = role
    found, problems = {}, []
    for name, p in model.named_parameters():
        other = grown[name].shape
        grows = [a != b for a, b in zip(p.shape, other)]
        if name in declared:
            if declared[name] not in ROLES:
                problems.append(f"{name}: mup_roles gives {declared[name]!r}; a role is one of {', '.join(ROLES)}")
            found[name] = declared[name]
        elif p.dim() < 2:
            found[name] = "vector"
        elif isinstance(owners.get(name), nn.Embedding) or name.endswith("wpe.weight"):
            found[name] = "input"
        elif isinstance(owners.get(name), nn.Linear) or p.dim() >= 2 and _stacked_linear(owners.get(name), name):
            out_grows, in_grows = grows[-2], grows[-1]
            found[name] = ("hidden" if out_grows and in_grows else "output" if in_grows else
                           "input" if out_grows else "vector")
        elif any(grows):
            problems.append(f"{name} ({' x '.join(map(str, p.shape))}, in {type(owners.get(name)).__name__}) has a side "
                            f"that grows with the width, and its shape does not say how muP should treat it: declare "
                            f"it in the class's mup_roles, e.g. mup_roles = {{{name.rsplit('.', 1)[-1]!r}: 'hidden'}} "
                            f"(one of {', '.join(ROLES)})")
        else:
            found[name] = "vector"
    if problems:
        raise ValueError("under muP every parameter needs a role:\n  - " + "\n  - ".join(problems))
    return found


def _stacked_linear(module, name: str) -> bool:
    """A stack of Linear weights (E x out x in) a component keeps as one parameter: it says so in stacked_params."""
    return module is not None and name.rsplit(".", 1)[-1] in getattr(module, "stacked_params", ())


def wider_config(config, classes: dict, factor: int):
    """The config at `factor` times the width (heads keep their size: n_head scales too)."""
    return resized(config, classes, n_embd=config.n_embd * factor, n_head=config.n_head * factor)


def resized(config, classes: dict, **shape):
    """The config at another shape (n_layer, n_embd, n_head), each component's own sizes following it by the
    component's rule (`rung_fields`: GQA's group, MLA's latent ranks, an MLP's hidden size), as on a ladder.
    ValueError, in words, where a component has no such size."""
    from gptlab.core.config import replace_config
    provisional = dataclasses.replace(config, **shape)
    fields = dict(shape)
    for cls in classes.values():
        rule = getattr(cls, "rung_fields", None)
        if rule is not None:
            fields.update(rule(config, provisional))
    return replace_config(config, **fields)


def rules(model) -> dict[int, Rule]:
    """{id(parameter): its Rule} under the model's parametrization (every multiplier 1 in the standard one)."""
    config = model.config
    m_d, m_l = config.multipliers()
    found = model.param_roles or {}
    out = {}
    for name, p in model.named_parameters():
        role = found.get(name, "vector")
        in_block = name.startswith("transformer.h.")
        eps = 1.0 / m_l if in_block else 1.0
        if role == "hidden":
            rule = Rule(role, 1 / math.sqrt(m_d), 1 / m_d, m_d, eps / m_d)
        elif role == "output":
            rule = Rule(role, 1 / m_d, 1 / m_d, m_d, eps / m_d)
        else:
            rule = Rule(role, eps=eps)
        out[id(p)] = rule
    return out


def scale_init(model) -> None:
    """Rescale the standard draws by each parameter's init multiplier (after GPT-2's init: the same draws, in the
    same order, so a seed gives the standard model's weights at the base shape)."""
    table = rules(model)
    with torch.no_grad():
        for p in model.parameters():
            if table[id(p)].init != 1.0:
                p.mul_(table[id(p)].init)
