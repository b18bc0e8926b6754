"""RMSNorm against its formula: the CPU path's forward is PyTorch's fused kernel (bitwise nn.RMSNorm's), its
written-out backward is checked by finite differences in float64 and against autograd through the formula."""

import pytest
import torch

from gptlab.modules.norm import RMSNorm


def formula(x, weight, eps):
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


@pytest.mark.parametrize("eps", [1e-5, 1e-6])
def test_the_cpu_path_is_pytorchs_forward_and_the_formulas_gradients(eps):
    torch.manual_seed(0)
    norm = RMSNorm(24, eps=eps)
    with torch.no_grad():
        norm.weight.normal_()
    x = torch.randn(3, 5, 24, requires_grad=True)
    y = norm(x)
    assert y.grad_fn is not None and "_RMSNormCPU" in type(y.grad_fn).__name__  # the written-out backward ran
    assert torch.equal(y, torch.nn.functional.rms_norm(x, (24,), norm.weight, eps))
    dy = torch.randn_like(y)
    dx, dw = torch.autograd.grad(y, (x, norm.weight), dy)
    x64, w64 = x.detach().double().requires_grad_(), norm.weight.detach().double().requires_grad_()
    want_dx, want_dw = torch.autograd.grad(formula(x64, w64, eps), (x64, w64), dy.double())
    torch.testing.assert_close(dx, want_dx.float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dw, want_dw.float(), rtol=1e-5, atol=1e-5)


def test_the_backward_passes_gradcheck_in_float64():
    torch.manual_seed(0)
    norm = RMSNorm(8).double()
    with torch.no_grad():
        norm.weight.normal_()
    x = torch.randn(2, 3, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w: norm(x), (x, norm.weight))  # w: the weight norm reads


def test_only_the_input_or_only_the_weight_may_need_a_gradient():
    norm = RMSNorm(8)
    x = torch.randn(4, 8, requires_grad=True)
    norm.weight.requires_grad_(False)
    norm(x).sum().backward()
    assert x.grad is not None and norm.weight.grad is None
    norm.weight.requires_grad_(True)
    norm(torch.randn(4, 8)).sum().backward()
    assert norm.weight.grad is not None
