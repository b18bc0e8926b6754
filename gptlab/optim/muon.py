"""Muon (Keller Jordan 2024; torch.optim.Muon) for the blocks' matrices, AdamW for the rest.

Muon updates a weight matrix by its momentum orthogonalised with a few Newton-Schulz iterations,
which gives every direction of the update about the same size. Which parameters it takes, and
why (as modded-nanogpt, nanochat and Moonlight do):
- Muon: every 2-D weight inside the blocks (`transformer.h.*`): attention and MLP projections,
  MLA's latent projections, every expert's matrices. These are the hidden linear maps whose
  input and output are both hidden states; orthogonalising their updates is what Muon is for.
- AdamW: the token embedding (and the LM head tied to it: an embedding is a lookup, not a linear
  map of hidden states, and its rows see very different gradient scales), a learned position
  table, norm gains, QK-norm gains, biases, any other parameter that is not a matrix, and what a
  component names in `adamw_params` (MoE's router: its few outputs are logits for a softmax).
  AdamW here is the recipe's: train.max_lr, train.weight_decay on matrices, train.beta1/beta2.

Settings (train.* fields, read only when the experiment's optimizer is Muon): muon_lr (0.02),
muon_momentum (0.95, Nesterov with muon_nesterov), muon_ns_steps (5), muon_weight_decay (0.0;
decoupled, as torch applies it: W -= lr * wd * W), muon_adjust_lr_fn: "original" (Keller Jordan's
scale sqrt(max(1, rows/cols)), for which muon_lr about 0.02 works) or "match_rms_adamw"
(Moonshot's 0.2 sqrt(max(rows, cols)), which makes an update's RMS that of AdamW's, so muon_lr
can be AdamW's rate: Liu et al. 2025, "Muon is Scalable for LLM Training"). The schedule (warm-up,
cosine) scales muon_lr and max_lr alike.

Gradient clipping (train.grad_clip) applies to the AdamW parameters only. Orthogonalisation
normalises the update: a clipped gradient would not shrink Muon's step but would quietly change
how much the newest gradient weighs against the momentum (deepspeedai/DeepSpeed #7713), so Muon's
matrices are not clipped, as in Keller Jordan's Muon and modded-nanogpt. The logged gradient norm
is still that of every parameter.

Cost: each step runs muon_ns_steps Newton-Schulz iterations per matrix; for an m x n matrix
(a = min(m, n), b = max(m, n)) one iteration is X X^T (2 a^2 b FLOPs), B = b A + c A A (2 a^3) and
B X (2 a^2 b): 4 a^2 b + 2 a^3 FLOPs. `flops_per_step` sums them; a run counts them in its
FLOPs per token (over the tokens of a step), so its MFU stays honest.
"""

from __future__ import annotations

import torch

from gptlab.optim.base import Optimizer, decay_groups, marked_for_adamw, trainable

ADJUST_LR_FNS = ("original", "match_rms_adamw")


class Muon(Optimizer):
    config_fields = ("muon_lr", "muon_weight_decay", "muon_momentum", "muon_nesterov", "muon_ns_steps",
                     "muon_adjust_lr_fn")
    lr_fields = ("max_lr", "muon_lr")

    @classmethod
    def check_config(cls, train):
        problems = []
        if not train.muon_lr > 0:
            problems.append(f"muon_lr={train.muon_lr} must be positive")
        if train.muon_weight_decay < 0:
            problems.append(f"muon_weight_decay={train.muon_weight_decay} must be 0 or more")
        if not 0 <= train.muon_momentum < 1:
            problems.append(f"muon_momentum={train.muon_momentum} must be in [0, 1)")
        if not 1 <= train.muon_ns_steps < 100:
            problems.append(f"muon_ns_steps={train.muon_ns_steps} must be from 1 to 99")
        if train.muon_adjust_lr_fn not in ADJUST_LR_FNS:
            problems.append(f"muon_adjust_lr_fn={train.muon_adjust_lr_fn!r} must be one of "
                            f"{', '.join(map(repr, ADJUST_LR_FNS))}")
        elif train.muon_adjust_lr_fn == "match_rms_adamw" and train.muon_lr > 3 * train.max_lr > 0:
            # Moonshot's scale makes Muon's update the size of AdamW's: 'original''s 0.02 would be a step tens of
            # times AdamW's, on every matrix of the blocks
            problems.append(f"muon_adjust_lr_fn='match_rms_adamw' sizes Muon's update like AdamW's, so "
                            f"muon_lr={train.muon_lr:g} is {train.muon_lr / train.max_lr:.0f}x max_lr="
                            f"{train.max_lr:g}: give an AdamW-like rate (train.muon_lr={train.max_lr:g}, as "
                            "Moonshot's Moonlight does), or keep muon_adjust_lr_fn='original', for which 0.02 is the "
                            "known rate")
        return problems

    @staticmethod
    def routes_to_muon(model) -> set[int]:
        """The ids of the parameters Muon updates: the blocks' 2-D weights, less what components mark."""
        marked = marked_for_adamw(model)
        return {id(p) for name, p in trainable(model)
                if name.startswith("transformer.h.") and p.dim() == 2 and id(p) not in marked}

    def build(self, model, train, device_type):
        muon_ids = self.routes_to_muon(model)
        matrices = [p for _, p in trainable(model) if id(p) in muon_ids]
        rest = [p for _, p in trainable(model) if id(p) not in muon_ids]
        if not matrices:
            raise ValueError("Muon has no matrix to update: no 2-D weight inside the blocks that a component "
                             "does not keep for AdamW (adamw_params); use AdamW for this model")
        self._shapes = [tuple(p.shape) for p in matrices]
        self._clipped = rest
        return {"muon": torch.optim.Muon(matrices, lr=train.muon_lr, weight_decay=train.muon_weight_decay,
                                         momentum=train.muon_momentum, nesterov=train.muon_nesterov,
                                         ns_steps=train.muon_ns_steps, adjust_lr_fn=train.muon_adjust_lr_fn),
                "adamw": torch.optim.AdamW(decay_groups(rest, train.weight_decay), lr=train.max_lr,
                                           betas=(train.beta1, train.beta2), eps=1e-8, fused=device_type == "cuda")}

    def clipped_parameters(self):
        return self._clipped

    def flops_per_step(self) -> int:
        return sum(self.train.muon_ns_steps * newton_schulz_flops(*shape) for shape in self._shapes)


def newton_schulz_flops(rows: int, cols: int) -> int:
    """Matmul FLOPs of one Newton-Schulz iteration on a rows x cols matrix (see the module's docstring)."""
    a, b = min(rows, cols), max(rows, cols)
    return 4 * a * a * b + 2 * a ** 3
