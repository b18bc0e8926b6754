"""Mixture of experts in the MLP slot (Switch Transformer, Fedus et al. 2021; GShard's top-2
routing): 8 GELU experts of GPT-2's MLP size, each token routed to 2, capacity factor 1.25,
the load-balancing loss at weight 0.01. Parameters grow with the experts; the active
parameters per token (and FLOPs, counted from them) are the router plus two MLPs. Every
routing field is a model.FIELD override: n_experts, moe_top_k, moe_capacity_factor,
moe_jitter, moe_balance_weight, moe_z_weight (ST-MoE's router z-loss, off by default).

The balance weight 0.01 in other conventions. Here f_i is the fraction of the step's token-to-
expert assignments (summing to 1 over the experts), so the loss is 0.01 when balanced. With
top-1 routing that is the Switch Transformer's loss (eq. 4) at its alpha = 0.01 exactly.
Mixtral's (Hugging Face's load_balancing_loss_func) counts each token once per chosen expert,
so its f_i sum to top_k and its loss is top_k times ours: 0.01 here at top-2 is Mixtral's
router_aux_loss_coef = 0.005 (its config's default 0.001 would be 0.002 here)."""
from gptlab.modules import MoE

MLP_CLASS = MoE
