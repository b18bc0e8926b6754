"""Training FLOPs per token, counted component by component.

A matrix multiply costs 2 FLOPs per weight per token forward, and training (forward and
backward) costs 3 times the forward pass (Kaplan et al. 2020, §2.1). Counted:

- every `nn.Linear` at its real shape: GQA's and MQA's narrower K/V projections, MLA's
  latent down- and up-projections, the three matrices of a gated MLP, the LM head;
- attention's scores and weighted sum: 2 * seq_len * (d_qk + d_v) per query head per
  token forward, from the attention class's real widths (`Attention.score_flops`), over the
  full sequence as PaLM (Chowdhery et al. 2022, app. B) and nanoGPT count it, not the
  causal half.

Not counted: norms, activations, softmax, embedding lookups, biases, position encodings
(each well under 1% at GPT-2 scale). For the GPT-2 baseline this is 6 * (non-embedding
matmul weights + LM head) + 12 * n_layer * n_embd * seq_len. A component that multiplies
by its own parameters rather than through `nn.Linear` says what it costs by defining
`forward_flops(seq_len)`; the count then takes its word for the whole module.
"""

from __future__ import annotations

from torch import nn


def forward_flops(module: nn.Module, seq_len: int) -> int:
    """Forward FLOPs per token of `module` and everything in it."""
    if hasattr(module, "forward_flops"):
        return module.forward_flops(seq_len)
    if isinstance(module, nn.Linear):
        return 2 * module.in_features * module.out_features
    own = module.score_flops(seq_len) if hasattr(module, "score_flops") else 0
    return own + sum(forward_flops(child, seq_len) for child in module.children())


def training_flops_breakdown(model: nn.Module, seq_len: int) -> dict[str, int]:
    """Training FLOPs per token of a GPT by part: attention, mlp, lm_head (and other, for
    anything else that multiplies)."""
    parts = {"attention": 0, "mlp": 0, "lm_head": 0, "other": 0}
    for name, child in model.named_children():
        if name != "transformer":
            parts["lm_head" if name == "lm_head" else "other"] += 3 * forward_flops(child, seq_len)
    for name, child in model.transformer.named_children():
        if name != "h":
            parts["other"] += 3 * forward_flops(child, seq_len)
    for block in model.transformer.h:
        for name, child in block.named_children():
            part = {"attn": "attention", "mlp": "mlp"}.get(name, "other")
            parts[part] += 3 * forward_flops(child, seq_len)
    return parts
