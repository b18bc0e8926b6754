import pytest
import torch
import torch.nn.functional as F

from gptlab import GPTConfig
from gptlab.modules.mlp import GEGLU, MLP, ReLUMLP, SiLUMLP, SwiGLU


def n_params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("n_embd", [64, 384, 768, 1024])
@pytest.mark.parametrize("gated", [GEGLU, SwiGLU])
def test_gated_mlps_match_gelu_mlp_parameters_within_one_percent(gated, n_embd):
    config = GPTConfig(n_embd=n_embd, n_head=4)
    assert abs(n_params(gated(config)) / n_params(MLP(config)) - 1) < 0.01


@pytest.mark.parametrize("cls, formula", [
    (MLP, lambda a, b: F.gelu(a, approximate="tanh")),
    (ReLUMLP, lambda a, b: torch.clamp(a, min=0)),
    (SiLUMLP, lambda a, b: a * torch.sigmoid(a)),
    (GEGLU, lambda a, b: F.gelu(a, approximate="tanh") * b),  # the baseline's GELU, gated
    (SwiGLU, lambda a, b: a * torch.sigmoid(a) * b),
])
def test_mlp_applies_its_published_activation(cls, formula):
    torch.manual_seed(0)
    config = GPTConfig(n_embd=16, n_head=2)
    mlp, x = cls(config), torch.randn(3, 16)
    h = x @ mlp.c_fc.weight.T + mlp.c_fc.bias
    a, b = h.chunk(2, dim=-1) if cls.gated else (h, None)
    expected = formula(a, b) @ mlp.c_proj.weight.T + mlp.c_proj.bias
    torch.testing.assert_close(mlp(x), expected, atol=1e-5, rtol=1e-5)
