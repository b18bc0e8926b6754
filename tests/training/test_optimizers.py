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
        groups["muon"] |= groups.pop("muon_stacked", set())  # a stack of matrices (MoE's experts): each one's Muon
        assert set(groups) == {"muon", "adamw"}
        assert groups["muon"].isdisjoint(groups["adamw"])
        assert groups["muon"] | groups["adamw"] == set(ids.values()), name  # each distinct parameter once
        for n in groups["muon"]:
            assert n.startswith("transformer.h.") and model.get_parameter(n).dim() >= 2, (name, n)
        assert "transformer.wte.weight" in groups["adamw"] and not any(".ln_" in n for n in groups["muon"])
        assert not any(n.endswith(".bias") for n in groups["muon"])
        named = {"mla": ["transformer.h.0.attn.wkv_a.weight", "transformer.h.0.attn.wkv_b.weight"],
                 "moe": ["transformer.h.0.mlp.c_fc_weight", "transformer.h.0.mlp.c_proj_weight"],
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
    with pytest.raises((ExperimentError, TrainingError, ConfigError)) as error:
        plan_run(path, "smoke", overrides)
    assert phrase in str(error.value), str(error.value)


@pytest.mark.parametrize("overrides, phrase", [
    (["train.muon_adjust_lr_fn=match_rms_adamw"], "muon_lr=0.02 is 7x max_lr=0.003: an AdamW-like rate"),
    (["train.muon_lr=6e-4", "train.max_lr=6e-4"], "muon_lr=0.0006 is 33x smaller, an AdamW-like rate"),
])
def test_a_muon_rate_that_fits_the_other_scale_is_warned_about_both_ways(tmp_path, capsys, overrides, phrase):
    """0.02 was refused under match_rms_adamw while 6e-4 under 'original' (thirty times too small) went unsaid."""
    path = write(tmp_path, "from gptlab.optim import Muon\nOPTIMIZER_CLASS = Muon\n")
    run = plan_run(path, "smoke", overrides)
    assert any(phrase in w for w in run.warnings) and phrase in capsys.readouterr().out
    fitting = plan_run(path, "smoke", ["train.muon_adjust_lr_fn=match_rms_adamw", "train.muon_lr=6e-4",
                                       "train.max_lr=6e-4"])
    assert fitting.warnings == [] and plan_run(path, "smoke", []).warnings == []


@pytest.mark.parametrize("body, phrase", [
    ("""
     import torch
     from gptlab.optim import Optimizer

     class OnlyBlocks(Optimizer):  # leaves the embeddings and norms out
         def build(self, model, train, device_type):
             return {"adamw": torch.optim.AdamW([p for n, p in model.named_parameters() if ".h." in n and p.dim() == 2],
                                                lr=train.max_lr)}
     OPTIMIZER_CLASS = OnlyBlocks
     """, "are in no group and would not train: transformer.wte.weight"),
    ("""
     import torch
     from gptlab.optim import Optimizer

     class Twice(Optimizer):
         def build(self, model, train, device_type):
             return {"a": torch.optim.SGD(list(model.parameters()), lr=0.1),
                     "b": torch.optim.SGD(list(model.parameters()), lr=0.1)}
     OPTIMIZER_CLASS = Twice
     """, "are in more than one group and would step once per group"),
    ("""
     import torch
     from gptlab.optim import Optimizer

     class Bare(Optimizer):
         def build(self, model, train, device_type):
             return torch.optim.AdamW(model.parameters(), lr=train.max_lr)
     OPTIMIZER_CLASS = Bare
     """, "Bare.build returned AdamW, not {name: torch optimizer}"),
    ("""
     from gptlab.optim import Optimizer

     class Broken(Optimizer):
         def build(self, model, train, device_type):
             raise RuntimeError("no such thing")
     OPTIMIZER_CLASS = Broken
     """, "building it failed: RuntimeError: no such thing"),
    ("""
     from gptlab.optim import Optimizer

     class Unwritten(Optimizer):
         pass
     OPTIMIZER_CLASS = Unwritten
     """, "Unwritten must implement build(model, train, device_type)"),
    ("""
     from gptlab.optim import AdamW

     class Mine(AdamW):
         config_fields = ("weight_decay", "max_steps")
     OPTIMIZER_CLASS = Mine
     """, "config_fields names weight_decay, max_steps, which the recipe reads too"),
    ("import torch\nOPTIMIZER_CLASS = torch.optim.SparseAdam\n", "fails its first step on a tiny model"),
])
def test_a_users_optimizer_is_checked_before_anything_trains(tmp_path, body, phrase):
    """An optimizer over the blocks only trained with the embeddings frozen ("optimizer OnlyBlocks", Δ +0.55, no
    warning); one listing every parameter twice stepped each twice; a bare torch optimizer, a build that raises or
    is missing were tracebacks; SparseAdam passed the check and failed at step 1; an AdamW subclass declaring
    recipe fields as its own changed them unmarked in a study."""
    path = write(tmp_path, body)
    with pytest.raises((ExperimentError, TrainingError)) as error:
        plan_run(path, "smoke", [])
    assert phrase in str(error.value), str(error.value)


def test_a_stack_of_matrices_is_orthogonalised_matrix_by_matrix():
    """A component's stacked expert weights (E x out x in) went to AdamW, with weight decay, for being 3-D. Each
    matrix of the stack moves as torch.optim.Muon moves that matrix alone."""
    from gptlab.optim.muon import StackedMuon
    torch.manual_seed(0)
    stack = torch.nn.Parameter(torch.randn(3, 16, 48))
    alone = [torch.nn.Parameter(stack.detach()[e].clone()) for e in range(3)]
    settings = dict(lr=0.02, weight_decay=0.01, momentum=0.95, nesterov=True, ns_steps=5, adjust_lr_fn="original")
    stacked, reference = StackedMuon([stack], **settings), torch.optim.Muon(alone, **settings)
    for _ in range(3):  # momentum carries over
        grad = torch.randn(3, 16, 48)
        stack.grad = grad.clone()
        for e, p in enumerate(alone):
            p.grad = grad[e].clone()
        stacked.step()
        reference.step()
    for e in range(3):
        assert torch.equal(stack.detach()[e], alone[e].detach())


def test_muon_routes_a_components_stacked_experts_to_its_matrices(tmp_path):
    path = write(tmp_path, """
        import torch
        from torch import nn
        from gptlab.modules import MLP
        from gptlab.optim import Muon

        class StackedMLP(MLP):  # the MLP's matrices stored as one stack of two (a stand-in for stacked experts)
            def __init__(self, config):
                super().__init__(config)
                self.extra = nn.Parameter(torch.randn(2, config.n_embd, config.n_embd) * 0.02)

            def forward(self, x):
                return super().forward(x) + x @ self.extra.sum(0)

        MLP_CLASS = StackedMLP
        OPTIMIZER_CLASS = Muon
        """)
    from gptlab.core.experiment import load_experiment
    from gptlab.models.gpt import build_gpt
    run = plan_run(path, "smoke", [])
    model = build_gpt(load_experiment(path), run.model_config)
    optimizer = Muon(model, run.train_config)
    stacks = {id(p) for p in optimizer.groups()["muon_stacked"]}
    assert {id(model.transformer.h[i].mlp.extra) for i in range(2)} == stacks
    assert not stacks & {id(p) for p in optimizer.groups()["adamw"]}
    assert optimizer.flops_per_step() == 5 * (sum(newton_schulz_flops(*p.shape) for p in optimizer.groups()["muon"])
                                              + 2 * 2 * newton_schulz_flops(64, 64))


def test_the_clipped_norm_is_logged_beside_every_gradients_norm():
    """Under Muon the logged norm was every parameter's, not the AdamW norm that clipping compared."""
    from gptlab.training.trainer import clip_gradients
    torch.manual_seed(0)
    model = tiny_model("baseline")
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    optimizer = Muon(model, TrainingConfig())
    adamw = [p.grad.clone() for p in optimizer.groups()["adamw"]]
    every = [p.grad.clone() for p in model.parameters()]
    norm, clipped = clip_gradients(model, optimizer, 1e9)
    assert norm.item() == pytest.approx(torch.cat([g.flatten() for g in every]).norm().item(), rel=1e-6)
    assert clipped.item() == pytest.approx(torch.cat([g.flatten() for g in adamw]).norm().item(), rel=1e-6)
    assert clip_gradients(model, AdamW(model, TrainingConfig()), 1e9)[1] is None  # AdamW clips them all: one norm


def test_under_ddp_every_process_orthogonalising_is_counted():
    """Every rank runs the whole Newton-Schulz; the MFU counted it once (at 8 GPUs, 2.6% of the work against 0.34%)."""
    from types import SimpleNamespace
    from gptlab.training.distributed import Dist
    from gptlab.training.run import describe
    path_run = plan_run("muon", "smoke", [])
    from gptlab.models.gpt import build_gpt
    model = build_gpt(path_run.experiment, path_run.model_config)
    optimizer = Muon(model, path_run.train_config)
    data = SimpleNamespace(description="x", fingerprint="f")
    one = describe(path_run, model, Dist(), 1, data, optimizer)
    eight = describe(path_run, model, Dist(rank=0, local_rank=0, world_size=8, device="cpu"), 1, data, optimizer)
    per_token = optimizer.flops_per_step() / path_run.train_config.total_batch_size
    assert one["flops_breakdown"]["optimizer"] == round(per_token)
    assert eight["flops_breakdown"]["optimizer"] == round(8 * per_token)
    assert eight["flops_per_token"] - one["flops_per_token"] == round(8 * per_token) - round(per_token)
