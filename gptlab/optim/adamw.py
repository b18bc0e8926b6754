"""AdamW as the GPT-2 recipe uses it (build-nanogpt): betas 0.9/0.95, eps 1e-8, weight decay on
the matrices (weights and embeddings) only, not on biases and norm gains; the fused kernel on CUDA.
Under muP or CompleteP each parameter's rate, decay and epsilon follow its kind (gptlab.models.parametrization)."""

from __future__ import annotations

import torch

from gptlab.optim.base import Optimizer, adamw_groups, trainable


class AdamW(Optimizer):
    """Every parameter: lr train.max_lr, weight decay train.weight_decay on matrices, betas train.beta1/beta2."""

    follows_parametrization = True

    def build(self, model, train, device_type):
        params = [p for _, p in trainable(model)]
        return {"adamw": torch.optim.AdamW(adamw_groups(model, params, train.max_lr, train.weight_decay), lr=train.max_lr,
                                           betas=(train.beta1, train.beta2), eps=1e-8, fused=device_type == "cuda")}
