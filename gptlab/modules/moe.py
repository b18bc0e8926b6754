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

Dispatch is one grouped matmul per expert layer (torch.nn.functional.grouped_mm): the
assignments are sorted by expert, every expert's c_fc runs on its rows in one call, the
activation on all rows at once, then every c_proj in one call; no loop over experts, and no
shape that depends on the routing (an assignment past capacity is computed with its expert's
and multiplied by 0), so the layer compiles to one graph. The experts' weights are stored
stacked, one (E, out, in) tensor per layer (c_fc_weight, c_proj_weight; biases flat, E * out),
the layout torchtitan and transformers use: nothing is copied per call. A checkpoint of the
earlier layout (an nn.ModuleList of MLPs, experts.<e>.c_fc.weight) is stacked when it loads.
An expert that receives no token gets a zero gradient, and DDP needs no
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
    """Top-k routed experts in the MLP slot; each expert is an `expert_class` MLP (GPT-2's GELU MLP here; a
    subclass may choose another, e.g. SwiGLU), its weights stored stacked: one (E, out, in) tensor per layer,
    the layout torchtitan and transformers use, called as one grouped matmul."""

    expert_class: type[nn.Module] = MLP
    config_fields = ("mlp_hidden", "n_experts", "moe_top_k", "moe_capacity_factor", "moe_jitter",
                     "moe_balance_weight", "moe_z_weight")
    # under Muon: a router's few outputs are a softmax's logits, not hidden states
    adamw_params = ("router.weight",)
    stacked_params = ("c_fc_weight", "c_proj_weight")  # E x out x in: each expert's Linear weight (init, muP, Muon)
    stacked_biases = ("c_fc_bias", "c_proj_bias")  # E * out, flat: a vector per expert (no decay, no Muon)

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_experts, self.top_k = config.n_experts, config.moe_top_k
        self.capacity_factor, self.jitter = config.moe_capacity_factor, config.moe_jitter
        self.balance_weight, self.z_weight = config.moe_balance_weight, config.moe_z_weight
        self.router = nn.Linear(config.n_embd, config.n_experts, bias=False)
        with torch.device("meta"):  # an expert's shape and activation, never its weights
            template = self.expert_class(config)
        object.__setattr__(self, "template", template)  # not a submodule: no parameters of its own
        fc, proj = template.c_fc, template.c_proj
        e = config.n_experts
        self.c_fc_weight = nn.Parameter(torch.empty(e, fc.out_features, fc.in_features))
        self.c_proj_weight = nn.Parameter(torch.empty(e, proj.out_features, proj.in_features))
        self.c_fc_bias = nn.Parameter(torch.zeros(e * fc.out_features)) if fc.bias is not None else None
        self.c_proj_bias = nn.Parameter(torch.zeros(e * proj.out_features)) if proj.bias is not None else None
        self.dropout = nn.Dropout(config.dropout)
        self.reset_parameters()
        self.register_load_state_dict_pre_hook(_stack_expert_modules)

    def reset_parameters(self) -> None:
        """Each expert's layers drawn as nn.Linear draws its own (uniform within 1/sqrt(fan_in)), so that the module
        built alone is an MLP mixture as it would be with nn.Linear experts; a model redraws them (init_weights)."""
        for weight, bias in ((self.c_fc_weight, self.c_fc_bias), (self.c_proj_weight, self.c_proj_bias)):
            bound = 1 / math.sqrt(weight.shape[-1])
            nn.init.uniform_(weight, -bound, bound)
            if bias is not None:
                nn.init.uniform_(bias, -bound, bound)

    @classmethod
    def rung_fields(cls, own: GPTConfig, rung: GPTConfig) -> dict:
        """For another size on a ladder: the experts keep their number and routing; an expert's hidden size the
        experiment sets scales with n_embd, as an MLP's does."""
        return MLP.rung_fields.__func__(cls, own, rung)

    def expert_parameters(self, e: int) -> dict[str, Tensor]:
        """Expert e's weights and biases as its own MLP names them (c_fc.weight, ...): views of the stacks."""
        out = {"c_fc.weight": self.c_fc_weight[e], "c_proj.weight": self.c_proj_weight[e]}
        for layer, bias in (("c_fc", self.c_fc_bias), ("c_proj", self.c_proj_bias)):
            if bias is not None:
                out[f"{layer}.bias"] = bias.view(self.n_experts, -1)[e]
        return out

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
        # every assignment, sorted by expert (stable: in priority order within one), a dropped one with the rest of
        # its expert's: computed and then multiplied by 0, so that every shape is known before the data is seen
        order = torch.argsort(expert_of, stable=True)
        offsets = routed.cumsum(0).to(torch.int32)
        tokens, experts_sorted = token_of[order], expert_of[order]
        weight = torch.where(kept, gate_of, torch.zeros_like(gate_of))[order]
        h = self.grouped_linear(x[tokens], self.c_fc_weight, self.c_fc_bias, experts_sorted, offsets)
        out = self.grouped_linear(self.template.hidden(h), self.c_proj_weight, self.c_proj_bias, experts_sorted,
                                  offsets)
        out = self.dropout(out)
        y = torch.zeros_like(x).index_add(0, tokens, (out * weight[:, None].to(out.dtype)).to(x.dtype))
        return y.view(shape), self.extras(logits, probs, routed, kept)

    def grouped_linear(self, x: Tensor, weight: Tensor, bias: Tensor | None, experts: Tensor,
                       offsets: Tensor) -> Tensor:
        """Each row of x (sorted by expert) through its expert's layer: the stack (E, out, in) in one grouped
        matmul (torch.nn.functional.grouped_mm), as F.linear under autocast; each row's expert's bias added."""
        dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
        out = grouped_mm(x.to(dtype), weight.to(dtype).transpose(1, 2), offsets)
        if bias is not None:
            out = out + bias.to(dtype).view(self.n_experts, -1)[experts]
        return out

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
        expert = 2 * (self.c_fc_weight[0].numel() + self.c_proj_weight[0].numel())
        return 2 * self.router.in_features * self.n_experts + self.top_k * expert

    def inactive_params(self) -> int:
        """Parameters a token does not use: the experts it is not routed to."""
        return (self.n_experts - self.top_k) * sum(v.numel() for v in self.expert_parameters(0).values())


def _stack_expert_modules(module: MoE, state_dict: dict, prefix: str, *args) -> None:
    """A checkpoint of the layout before the stacks (experts.<e>.c_fc.weight, ...): its experts' tensors stacked
    into this layout's, in place, before the state is loaded (the same weights, the same model)."""
    if f"{prefix}experts.0.c_fc.weight" not in state_dict:
        return
    for layer in ("c_fc", "c_proj"):
        weights = [state_dict.pop(f"{prefix}experts.{e}.{layer}.weight") for e in range(module.n_experts)]
        state_dict[f"{prefix}{layer}_weight"] = torch.stack(weights)
        if f"{prefix}experts.0.{layer}.bias" in state_dict:
            biases = [state_dict.pop(f"{prefix}experts.{e}.{layer}.bias") for e in range(module.n_experts)]
            state_dict[f"{prefix}{layer}_bias"] = torch.cat(biases)


def grouped_mm(x: Tensor, weight: Tensor, offsets: Tensor) -> Tensor:
    """Rows of x (M, K) in groups ending at offsets, each group times its weight (G, K, N): PyTorch's grouped
    matmul. Its bfloat16 path compiles as it is; in another dtype it goes through gptlab::grouped_mm (the
    same kernel behind a custom op, since the compiler's shape function of grouped_mm accepts bfloat16 only)."""
    if x.dtype == torch.bfloat16 and _kernel_takes(x, weight):
        return F.grouped_mm(x, weight, offs=offsets)
    return _grouped_mm(x, weight, offsets)


def _by_group(x: Tensor, y: Tensor, offsets: Tensor, fn) -> list[Tensor]:
    ends = offsets.tolist()
    return [fn(x[start:end], y[g] if y.dim() == 3 else y[start:end], g) for g, (start, end) in
            enumerate(zip([0, *ends[:-1]], ends))]


def _kernel_takes(x: Tensor, other: Tensor) -> bool:
    """Whether PyTorch's grouped kernel takes x times other: float32 or half precision on the CPU, bfloat16
    on CUDA, and rows whose lengths are multiples of 16 bytes (the kernel's alignment)."""
    if x.dtype not in ((torch.bfloat16,) if x.device.type == "cuda" else (torch.float32, torch.bfloat16, torch.float16)):
        return False
    return all(n * x.element_size() % 16 == 0 for n in (x.shape[-1], other.shape[-1]))


@torch.library.custom_op("gptlab::grouped_mm", mutates_args=())
def _grouped_mm(x: Tensor, weight: Tensor, offsets: Tensor) -> Tensor:
    if not _kernel_takes(x, weight):  # float32 on CUDA, float64 (gptlab check), odd widths: group by group
        return torch.cat(_by_group(x, weight, offsets, lambda rows, w, g: rows @ w))
    return F.grouped_mm(x, weight, offs=offsets)


@_grouped_mm.register_fake
def _(x: Tensor, weight: Tensor, offsets: Tensor) -> Tensor:
    return x.new_empty(x.shape[0], weight.shape[-1])


@torch.library.custom_op("gptlab::grouped_mm_weight_grad", mutates_args=())
def _grouped_weight_grad(x: Tensor, grad: Tensor, offsets: Tensor) -> Tensor:
    """(G, K, N): each group's x^T grad, the gradient of its weight."""
    if not _kernel_takes(x, grad):
        return torch.stack(_by_group(x, grad, offsets, lambda rows, g_rows, g: rows.t() @ g_rows))
    return F.grouped_mm(x.t(), grad, offs=offsets)


@_grouped_weight_grad.register_fake
def _(x: Tensor, grad: Tensor, offsets: Tensor) -> Tensor:
    return x.new_empty(offsets.shape[0], x.shape[1], grad.shape[1])


def _grouped_mm_setup(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs)


def _grouped_mm_backward(ctx, grad: Tensor):
    x, weight, offsets = ctx.saved_tensors
    return _grouped_mm(grad, weight.transpose(1, 2), offsets), _grouped_weight_grad(x, grad, offsets), None


_grouped_mm.register_autograd(_grouped_mm_backward, setup_context=_grouped_mm_setup)


class SwiGLUMoE(MoE):
    """Experts with SwiGLU MLPs (hidden 8/3 n_embd), the shape of Mixtral's experts; with GPT-2's
    biases under the default model.bias=true (Mixtral's have none: model.bias=false)."""

    expert_class = SwiGLU
