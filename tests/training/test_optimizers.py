"""The optimizer as a component: AdamW as the recipe's, Muon's update against the Newton-Schulz
iteration written out here, which parameter each takes for every experiment, the FLOPs it costs
against PyTorch's own counter, and every way an experiment can get it wrong."""

import textwrap

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from gptlab import ConfigError, TrainingConfig
from gptlab.core.experiment import ExperimentError, available_experiments
from gptlab.optim import AdamW, Muon, optimizer_class
from gptlab.optim.muon import newton_schulz_flops
from gptlab.training.planning import plan_run
from gptlab.training.run import TrainingError
from tests.conftest import tiny_model

# Keller Jordan's quintic coefficients, as torch.optim.Muon uses them
A, B, C = 3.4445, -4.7750, 2.0315


def newton_schulz64(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """The orthogonalisation written out, in float64: X <- a X + (b X X^T + c (X X^T)^2) X, from X = G / |G|_F
    (on the wide side)."""
    x = g.double()
    tall = x.shape[0] > x.shape[1]
    x = x.T if tall else x
    x = x / x.norm()
    for _ in range(steps):
        gram = x @ x.T
        x = A * x + (B * gram + C * gram @ gram) @ x
    return x.T if tall else x


@pytest.mark.parametrize("shape", [(16, 48), (48, 16)])
def test_a_muon_step_moves_a_matrix_by_its_orthogonalised_gradient(shape):
    """One step from rest (momentum buffer empty, Nesterov): the update is NS(g) (the momentum terms
    only scale g, which NS divides out), times lr and Keller Jordan's sqrt(max(1, rows/cols))."""
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(*shape))
    before = w.detach().clone()
    w.grad = torch.randn(*shape) * torch.logspace(-1, 1, shape[1])  # directions of very different sizes
    optimizer = torch.optim.Muon([w], lr=0.02, weight_decay=0.0, momentum=0.95, nesterov=True,
                                 adjust_lr_fn="original")
    optimizer.step()
    scale = 0.02 * max(1, shape[0] / shape[1]) ** 0.5
    update = (before - w.detach()).double() / scale
    expected = newton_schulz64(w.grad)
    assert torch.allclose(update, expected, atol=0.02, rtol=0.05)  # torch iterates in bfloat16
    singular = torch.linalg.svdvals(expected)
    assert singular.min() > 0.5 and singular.max() < 1.5  # orthogonalised: no direction much larger than another
    raw = torch.linalg.svdvals(w.grad.double())
    assert raw.max() / raw.min() > 10  # while the gradient's were spread


def test_muon_takes_the_blocks_matrices_and_adamw_the_rest_in_every_experiment():
    for name in available_experiments():
        model = tiny_model(name)
        optimizer = Muon(model, TrainingConfig())
        ids = {id(p): n for n, p in model.named_parameters()}
        groups = {k: {ids[id(p)] for p in ps} for k, ps in optimizer.groups().items()}
        assert groups["muon"].isdisjoint(groups["adamw"])
        assert groups["muon"] | groups["adamw"] == set(ids.values()), name  # each distinct parameter once
        for n in groups["muon"]:
            assert n.startswith("transformer.h.") and model.get_parameter(n).dim() == 2, (name, n)
        assert "transformer.wte.weight" in groups["adamw"] and not any(".ln_" in n for n in groups["muon"])
        assert not any(n.endswith(".bias") for n in groups["muon"])
        named = {"mla": ["transformer.h.0.attn.wkv_a.weight", "transformer.h.0.attn.wkv_b.weight"],
                 "moe": ["transformer.h.0.mlp.experts.3.c_fc.weight"],
                 "qknorm": ["transformer.h.0.attn.c_attn.weight"]}.get(name, ["transformer.h.1.attn.c_proj.weight"])
        assert set(named) <= groups["muon"], (name, sorted(groups["muon"]))
    moe = Muon(tiny_model("moe"), TrainingConfig())
    assert not any("router" in n for n, p in tiny_model("moe").named_parameters()
                   if id(p) in {id(q) for q in moe.groups()["muon"]})
    qk = tiny_model("qknorm")
    gains = [n for n, p in qk.named_parameters() if "norm" in n and "attn" in n]
    assert gains and set(gains) <= {n for n, p in qk.named_parameters()
                                    if id(p) in {id(q) for q in Muon(qk, TrainingConfig()).groups()["adamw"]}}


def test_adamw_is_the_recipes_and_muon_clips_only_what_adamw_updates():
    model = tiny_model("baseline")
    adamw = AdamW(model, TrainingConfig())
    decayed, plain = adamw.param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0 and decayed["betas"] == (0.9, 0.95)
    assert {names[id(p)] for p in decayed["params"]} == {n for n, p in model.named_parameters() if p.dim() == 2}
    assert adamw.clipped_parameters() is None
    muon = Muon(model, TrainingConfig())
    assert {id(p) for p in muon.clipped_parameters()} == {id(p) for p in muon.groups()["adamw"]}


def test_the_newton_schulz_flops_are_what_pytorch_counts():
    """A Muon step's matmuls counted by torch.utils.flop_counter, against the formula."""
    torch.manual_seed(0)
    model = tiny_model("baseline")
    optimizer = Muon(model, TrainingConfig(muon_ns_steps=5))
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    with FlopCounterMode(display=False) as counter:
        optimizer.optimizers["muon"].step()
    assert counter.get_total_flops() == optimizer.flops_per_step()
    assert newton_schulz_flops(32, 96) == 4 * 32 * 32 * 96 + 2 * 32 ** 3


def test_a_plain_torch_optimizer_class_works_with_the_recipes_groups():
    optimizer = optimizer_class(torch.optim.SGD)(tiny_model("baseline"), TrainingConfig(max_lr=0.1))
    groups = optimizer.param_groups
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0] and all(g["lr"] == 0.1 for g in groups)


def write(tmp_path, body: str, name: str = "opt.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return str(path)


@pytest.mark.parametrize("body, overrides, phrase", [
    ("from gptlab.optim import Muon\nOPTIMIZER_CLASS = Muon\n", ["train.muon_lrr=0.01"],
     "TrainingConfig has no field 'muon_lrr'; did you mean muon_lr"),
    ("from gptlab.modules import MLP\nOPTIMIZER_CLASS = MLP\n", [],
     "OPTIMIZER_CLASS = MLP is an MLP class, not an optimizer"),
    ("from torch import nn\nOPTIMIZER_CLASS = nn.Linear\n", [], "OPTIMIZER_CLASS = Linear is not an optimizer"),
    ("OPTIMIZER_CLASS = 'Muon'\n", [], "OPTIMIZER_CLASS must be a class"),
    ("from gptlab.optim import Muon\nOPTIMIZER = Muon\n", [], "OPTIMIZER is not a setting"),
    ("", ["train.muon_lr=0.01"], "train.muon_lr=0.01 would be ignored: the optimizer AdamW does not read it"),
    ("from gptlab.optim import Muon\nOPTIMIZER_CLASS = Muon\n", ["train.muon_adjust_lr_fn=moonshot"],
     "muon_adjust_lr_fn='moonshot' must be one of 'original', 'match_rms_adamw'"),
    ("from gptlab.optim import Muon\nOPTIMIZER_CLASS = Muon\n", ["train.muon_adjust_lr_fn=match_rms_adamw"],
     "muon_lr=0.02 is 7x max_lr=0.003: give an AdamW-like rate (train.muon_lr=0.003"),
    ("""
     from gptlab.modules import MLP, BaseAttention
     from gptlab.optim import Muon

     class KeptAttention(BaseAttention):  # keeps its matrices for AdamW
         adamw_params = ("c_attn.weight", "c_proj.weight")

     class KeptMLP(MLP):
         adamw_params = ("c_fc.weight", "c_proj.weight")

     ATTENTION_CLASS = KeptAttention
     MLP_CLASS = KeptMLP
     OPTIMIZER_CLASS = Muon
     """, [], "Muon has no matrix to update"),
])
def test_an_optimizer_mistake_is_refused_naming_it(tmp_path, body, overrides, phrase):
    path = write(tmp_path, body)
    if "match_rms_adamw" in " ".join(overrides):  # with an AdamW-like rate it trains
        plan_run(path, "smoke", [*overrides, "train.muon_lr=6e-4", "train.max_lr=6e-4"])
    with pytest.raises((ExperimentError, TrainingError, ConfigError)) as error:
        plan_run(path, "smoke", overrides)
    assert phrase in str(error.value), str(error.value)
