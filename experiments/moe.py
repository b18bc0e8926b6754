"""Mixture of experts in the MLP slot (Switch Transformer, Fedus et al. 2021; GShard's top-2
routing): 8 GELU experts of GPT-2's MLP size, each token routed to 2, capacity factor 1.25,
the load-balancing loss at weight 0.01. Parameters grow with the experts; the active
parameters per token (and FLOPs, counted from them) are the router plus two MLPs. Every
routing field is a model.FIELD override: n_experts, moe_top_k, moe_capacity_factor,
moe_jitter, moe_balance_weight, moe_z_weight (ST-MoE's router z-loss, off by default)."""
from gptlab.modules import MoE

MLP_CLASS = MoE
