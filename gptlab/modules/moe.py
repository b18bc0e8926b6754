"""Mixture of experts: an MLP slot filled by `n_experts` MLPs and a router that sends each
token to `moe_top_k` of them (Shazeer et al. 2017; GShard, Lepikhin et al. 2020; Switch
Transformer, Fedus et al. 2021).

Routing, per token x (the router in float32 at least, as the Switch Transformer's selective
precision keeps it under bf16):
    p = softmax(x W_r)                       over the experts
    the top_k experts by p; gates = p of the chosen ones, renormalised to sum to 1 when
    top_k > 1 (GShard, Mixtral); top_k = 1 keeps the raw p (Switch), so the router learns.
    y = sum over the chosen experts e of gate_e * expert_e(x)
In training each expert takes at most capacity = ceil(moe_capacity_factor * tokens *
top_k / n_experts) assignments a step; first choices are served before second choices,
and within a choice, earlier tokens first (GShard's priority). An assignment past capacity
is dropped: the token gets nothing from that expert (the residual carries it). Capacity
depends on the other tokens of the batch, so in training a token's output can depend on
later tokens; in evaluation and generation no token is dropped and the layer is causal,
and cached generation equals recomputation.

Losses, reported through `Extras` and added to the training loss by the model:
- `moe_balance`: the load-balancing loss (Switch Transformer, eq. 4) times
  moe_balance_weight: N * sum_i f_i * P_i, with f_i the fraction of the step's token-to-
  expert assignments (before capacity) that went to expert i and P_i the mean router
  probability of expert i; 1 when perfectly balanced. Switch's at top-1; Mixtral's (whose f_i
  count a token once per chosen expert, summing to top_k) divided by top_k.
- `moe_z`: the router z-loss (ST-MoE, Zoph et al. 2022, eq. 5) times moe_z_weight: the
  mean over tokens of logsumexp(router logits)^2; only when moe_z_weight > 0.
Metrics: `moe_dropped` (the fraction of assignments dropped by capacity) and
`moe_load_<i>` (the fraction of assignments routed to expert i), averaged over layers.

Dispatch is batched: the assignments are sorted by expert and each expert runs once on
its tokens (a loop over experts, none over tokens). An expert that receives no token still
runs on an empty batch, so its parameters get a zero gradient and DDP needs no
`find_unused_parameters`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gptlab.core.config import GPTConfig
from gptlab.modules.block import Extras
from gptlab.modules.mlp import MLP, SwiGLU


class MoE(nn.Module):
    """Top-k routed experts in the MLP slot; each expert is an `expert_class` (GPT-2's
    GELU MLP here; a subclass may choose another, e.g. SwiGLU)."""

    expert_class: type[nn.Module] = MLP
    config_fields = ("mlp_hidden", "n_experts", "moe_top_k", "moe_capacity_factor", "moe_jitter",
                     "moe_balance_weight", "moe_z_weight")
    adamw_params = ("router.weight",)  # under Muon: a router's few outputs are a softmax's logits, not hidden states

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_experts, self.top_k = config.n_experts, config.moe_top_k
        self.capacity_factor, self.jitter = config.moe_capacity_factor, config.moe_jitter
        self.balance_weight, self.z_weight = config.moe_balance_weight, config.moe_z_weight
        self.router = nn.Linear(config.n_embd, config.n_experts, bias=False)
        self.experts = nn.ModuleList(self.expert_class(config) for _ in range(config.n_experts))

    def capacity(self, n_tokens: int) -> int | None:
        """Assignments an expert takes in a training step of n_tokens; None: no limit."""
        if not self.training or self.capacity_factor == 0:
            return None
        return math.ceil(self.capacity_factor * n_tokens * self.top_k / self.n_experts)

    def route(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """x (N, C) -> router logits and probabilities (N, E) in float32, chosen experts (N, k), gates (N, k)."""
        if self.training and self.jitter > 0:
            x = x * torch.empty_like(x).uniform_(1.0 - self.jitter, 1.0 + self.jitter)
        dtype = torch.promote_types(x.dtype, torch.float32)  # float32 under bf16 autocast
        with torch.autocast(device_type=x.device.type, enabled=False):
            logits = F.linear(x.to(dtype), self.router.weight.to(dtype))
        probs = logits.softmax(dim=-1)
        gates, experts = probs.topk(self.top_k, dim=-1)
        if self.top_k > 1:
            gates = gates / gates.sum(dim=-1, keepdim=True)
        return logits, probs, experts, gates

    def forward(self, x: Tensor) -> tuple[Tensor, Extras]:
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        n = x.size(0)
        logits, probs, experts, gates = self.route(x)
        # assignments in priority order: every token's first choice, then every second choice, ...
        expert_of = experts.t().reshape(-1)  # (k*N,)
        token_of = torch.arange(n, device=x.device).repeat(self.top_k)
        gate_of = gates.t().reshape(-1)
        one_hot = F.one_hot(expert_of, self.n_experts)  # (k*N, E)
        routed = one_hot.sum(dim=0)  # assignments per expert, before capacity
        capacity = self.capacity(n)
        if capacity is None:
            kept = torch.ones_like(expert_of, dtype=torch.bool)
        else:  # an assignment's place in its expert's queue
            place = ((one_hot.cumsum(dim=0) - 1) * one_hot).sum(dim=-1)
            kept = place < capacity
        order = torch.argsort(expert_of.masked_fill(~kept, self.n_experts), stable=True)  # by expert, dropped last
        counts = torch.bincount(expert_of[kept], minlength=self.n_experts).tolist()
        served = order[:sum(counts)]  # the kept assignments, expert by expert
        tokens = token_of[served]
        out = torch.cat([expert(chunk) for expert, chunk in zip(self.experts, x[tokens].split(counts))])
        y = torch.zeros_like(x).index_add(0, tokens, (out * gate_of[served, None].to(out.dtype)).to(x.dtype))
        return y.view(shape), self.extras(logits, probs, routed, kept)

    def extras(self, logits: Tensor, probs: Tensor, routed: Tensor, kept: Tensor) -> Extras:
        load = routed.float() / routed.sum()  # f_i
        losses = {"moe_balance": self.balance_weight * self.n_experts * (load * probs.mean(dim=0)).sum()}
        if self.z_weight > 0:
            losses["moe_z"] = self.z_weight * torch.logsumexp(logits, dim=-1).square().mean()
        metrics = {"moe_dropped": 1.0 - kept.float().mean(), **{f"moe_load_{i}": load[i] for i in range(self.n_experts)}}
        return Extras(losses=losses, metrics=metrics)

    def forward_flops(self, seq_len: int) -> int:
        """Forward FLOPs per token: the router, and top_k experts (the active parameters;
        capacity drops aside)."""
        expert = sum(2 * m.in_features * m.out_features for m in self.experts[0].modules() if isinstance(m, nn.Linear))
        return 2 * self.router.in_features * self.n_experts + self.top_k * expert

    def inactive_params(self) -> int:
        """Parameters a token does not use: the experts it is not routed to."""
        return (self.n_experts - self.top_k) * sum(p.numel() for p in self.experts[0].parameters())


class SwiGLUMoE(MoE):
    """Experts with SwiGLU MLPs (hidden 8/3 n_embd), the shape of Mixtral's experts; with GPT-2's
    biases under the default model.bias=true (Mixtral's have none: model.bias=false)."""

    expert_class = SwiGLU
