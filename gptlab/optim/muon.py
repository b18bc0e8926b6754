"""Muon (Keller Jordan 2024; torch.optim.Muon) for the blocks' matrices, AdamW for the rest.

Muon updates a weight matrix by its momentum orthogonalised with a few Newton-Schulz iterations,
which gives every direction of the update about the same size. Which parameters it takes, and
why (as modded-nanogpt, nanochat and Moonlight do):
- Muon: every 2-D weight inside the blocks (`transformer.h.*`): attention and MLP projections,
  MLA's latent projections, every expert's matrices. These are the hidden linear maps whose
  input and output are both hidden states; orthogonalising their updates is what Muon is for.
  A stack of matrices (a component's E x out x in expert weights, the layout torchtitan and
  transformers use) is E matrices: each is orthogonalised alone (`StackedMuon`, torch's own Muon
  update applied to each matrix of the stack), never sent to AdamW for being 3-D.
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
FLOPs per token (over the tokens of a step), so its MFU stays honest. Under DDP every rank
orthogonalises every matrix (the update is not sharded across ranks, as modded-nanogpt's is), so a
run of N processes counts N times these FLOPs: what runs, not what one update needs.

Rates: muon_lr is checked against the scale muon_adjust_lr_fn gives it, both ways: under
"match_rms_adamw" an update's RMS is AdamW's, so 'original''s 0.02 there is a step several times
AdamW's; under "original" an AdamW-like rate (about max_lr) is some thirty times smaller than the
known 0.02. Either is said before the run trains (a warning: a sweep or a study may mean it).
"""

from __future__ import annotations

import torch

from gptlab.optim.base import Optimizer, adamw_groups, marked_for_adamw, trainable

ADJUST_LR_FNS = ("original", "match_rms_adamw")


class Muon(Optimizer):
    config_fields = ("muon_lr", "muon_weight_decay", "muon_momentum", "muon_nesterov", "muon_ns_steps",
                     "muon_adjust_lr_fn")
    lr_fields = ("max_lr", "muon_lr")
    follows_parametrization = True

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
        return problems

    @classmethod
    def warnings(cls, train):
        if train.muon_adjust_lr_fn == "match_rms_adamw" and train.muon_lr > 3 * train.max_lr > 0:
            # Moonshot's scale makes Muon's update the size of AdamW's: 'original''s 0.02 is a step several times
            # AdamW's, on every matrix of the blocks
            return [f"muon_adjust_lr_fn='match_rms_adamw' sizes Muon's update like AdamW's, so muon_lr="
                    f"{train.muon_lr:g} is {train.muon_lr / train.max_lr:.0f}x max_lr={train.max_lr:g}: an AdamW-like "
                    f"rate (train.muon_lr={train.max_lr:g}, as Moonshot's Moonlight does) is the known one; or keep "
                    "muon_adjust_lr_fn='original', for which 0.02 is"]
        if train.muon_adjust_lr_fn == "original" and 0 < train.muon_lr < 0.1 * 0.02 and train.muon_lr <= 3 * train.max_lr:
            return [f"muon_adjust_lr_fn='original' (Keller Jordan's scale) wants a muon_lr about 0.02; muon_lr="
                    f"{train.muon_lr:g} is {0.02 / train.muon_lr:.0f}x smaller, an AdamW-like rate: with it, give "
                    "muon_adjust_lr_fn='match_rms_adamw' (Moonshot's scale, sized like AdamW's update)"]
        return []

    @staticmethod
    def routes_to_muon(model) -> set[int]:
        """The ids of the parameters Muon updates: the blocks' matrices (2-D) and stacks of matrices (3-D and
        up: each matrix of the stack), less what components mark."""
        marked = marked_for_adamw(model)
        return {id(p) for name, p in trainable(model)
                if name.startswith("transformer.h.") and p.dim() >= 2 and id(p) not in marked}

    def build(self, model, train, device_type):
        muon_ids = self.routes_to_muon(model)
        matrices = [p for _, p in trainable(model) if id(p) in muon_ids and p.dim() == 2]
        stacks = [p for _, p in trainable(model) if id(p) in muon_ids and p.dim() > 2]
        rest = [p for _, p in trainable(model) if id(p) not in muon_ids]
        if not matrices and not stacks:
            raise ValueError("Muon has no matrix to update: no 2-D weight inside the blocks that a component "
                             "does not keep for AdamW (adamw_params); use AdamW for this model")
        self._shapes = [tuple(p.shape) for p in matrices] + [tuple(p.shape[-2:]) for p in stacks
                                                             for _ in range(p[..., 0, 0].numel())]
        self._clipped = rest
        settings = dict(lr=train.muon_lr, weight_decay=train.muon_weight_decay, momentum=train.muon_momentum,
                        nesterov=train.muon_nesterov, ns_steps=train.muon_ns_steps, adjust_lr_fn=train.muon_adjust_lr_fn)
        if train.muon_adjust_lr_fn == "match_rms_adamw" and getattr(model, "param_roles", None) is not None:
            # Moonshot's scale sizes the update like AdamW's: under muP it shrinks with the width as a hidden AdamW
            # weight's does ('original''s orthogonalised update already meets muP's spectral condition)
            settings["lr"] = train.muon_lr / model.config.multipliers()[0]
        built = {"muon": torch.optim.Muon(matrices, **settings)} if matrices else {}
        if stacks:
            built["muon_stacked"] = StackedMuon(stacks, **settings)
        built["adamw"] = torch.optim.AdamW(adamw_groups(model, rest, train.max_lr, train.weight_decay), lr=train.max_lr,
                                           betas=(train.beta1, train.beta2), eps=1e-8, fused=device_type == "cuda")
        return built

    def clipped_parameters(self):
        return self._clipped

    def flops_per_step(self) -> int:
        return sum(self.train.muon_ns_steps * newton_schulz_flops(*shape) for shape in self._shapes)


class StackedMuon(torch.optim.Optimizer):
    """torch.optim.Muon's update for stacks of matrices (E x out x in, and any leading dimensions): the momentum
    of the whole stack, then each matrix of it orthogonalised and scaled alone, by torch's own Muon function
    (torch.optim.Muon takes 2-D parameters only). A matrix of a stack moves as torch.optim.Muon moves it alone."""

    def __init__(self, params, lr: float, weight_decay: float, momentum: float, nesterov: bool, ns_steps: int,
                 adjust_lr_fn: str):
        reference = torch.optim.Muon([torch.nn.Parameter(torch.zeros(1, 1))], lr=lr, weight_decay=weight_decay,
                                     momentum=momentum, nesterov=nesterov, ns_steps=ns_steps,
                                     adjust_lr_fn=adjust_lr_fn)  # torch's defaults and checks of the settings
        super().__init__(params, dict(reference.defaults))

    @torch.no_grad()
    def step(self, closure=None):
        from torch.optim._muon import muon  # torch.optim.Muon's update, the one function it calls per step
        for group in self.param_groups:
            params, grads, buffers = [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad, memory_format=torch.preserve_format)
                # each matrix of the stack, as a view: the update writes through to the parameter and the buffer
                params += list(p.view(-1, *p.shape[-2:]).unbind(0))
                grads += list(p.grad.reshape(-1, *p.shape[-2:]).unbind(0))
                buffers += list(state["momentum_buffer"].view(-1, *p.shape[-2:]).unbind(0))
            muon(params, grads, buffers, lr=group["lr"], weight_decay=group["weight_decay"],
                 momentum=group["momentum"], nesterov=group["nesterov"], ns_coefficients=group["ns_coefficients"],
                 ns_steps=group["ns_steps"], eps=group["eps"], adjust_lr_fn=group["adjust_lr_fn"], has_complex=False)


def newton_schulz_flops(rows: int, cols: int) -> int:
    """Matmul FLOPs of one Newton-Schulz iteration on a rows x cols matrix (see the module's docstring)."""
    a, b = min(rows, cols), max(rows, cols)
    return 4 * a * a * b + 2 * a ** 3
