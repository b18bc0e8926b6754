"""The mixture of experts against computations written out here: routing token by token,
capacity served in GShard's priority order by a plain loop, the Switch Transformer's
balance loss and ST-MoE's z-loss from their formulas, the active-parameter and FLOP counts
from the expert's shape."""

import math

import pytest
import torch
import torch.nn.functional as F

from gptlab import GPTConfig, build_model, load_experiment
from gptlab.modules import MoE, SwiGLUMoE
from tests.conftest import TINY

C, E = 16, 4


def moe(top_k=2, capacity=1.25, seed=0, cls=MoE, **fields) -> MoE:
    torch.manual_seed(seed)
    config = GPTConfig(n_embd=C, n_head=2, n_experts=E, moe_top_k=top_k, moe_capacity_factor=capacity, **fields)
    module = cls(config).double()
    with torch.no_grad():  # a router with opinions, so that loads are uneven and capacity bites
        module.router.weight.normal_(0.0, 1.0)
    return module


def reference(module: MoE, x: torch.Tensor, capacity: int | None) -> torch.Tensor:
    """Route every token, then serve the assignments in priority order (every token's first
    choice, earliest token first, then every second choice, ...), each expert up to capacity;
    every expert is computed on every token (dense) and the kept ones are summed."""
    tokens = x.reshape(-1, C)
    probs = torch.softmax(tokens @ module.router.weight.T, dim=-1)
    choices = [sorted(range(E), key=lambda e: -p[e])[:module.top_k] for p in probs]
    dense = [expert(module, e, tokens) for e in range(E)]  # (N, C) each
    served, out = [0] * E, torch.zeros_like(tokens)
    for rank in range(module.top_k):
        for t, chosen in enumerate(choices):
            e = chosen[rank]
            if capacity is not None and served[e] >= capacity:
                continue
            served[e] += 1
            gate = probs[t, e] / (sum(probs[t, c] for c in chosen) if module.top_k > 1 else 1.0)
            out[t] += gate * dense[e][t]
    return out.view_as(x)


def expert(module: MoE, e: int, x: torch.Tensor) -> torch.Tensor:
    """Expert e alone, as an MLP of its own: its slices of the stacks as c_fc and c_proj, its class's activation."""
    w = module.expert_parameters(e)
    h = F.linear(x, w["c_fc.weight"], w.get("c_fc.bias"))
    return F.linear(module.template.hidden(h), w["c_proj.weight"], w.get("c_proj.bias"))


def expert_grads(module: MoE, e: int) -> list[torch.Tensor]:
    """Expert e's slices of the stacks' gradients (weights, then biases)."""
    grads = [getattr(module, name).grad[e] for name in module.stacked_params]
    return grads + [getattr(module, name).grad.view(E, -1)[e] for name in module.stacked_biases
                    if getattr(module, name) is not None]


def stacks(module: MoE) -> list[torch.Tensor]:
    return [getattr(module, name) for name in (*module.stacked_params, *module.stacked_biases)
            if getattr(module, name) is not None]


@pytest.mark.parametrize("top_k", [1, 2])
def test_training_output_equals_the_dense_computation_with_capacity(top_k):
    module = moe(top_k=top_k, capacity=1.0).train()
    x = torch.randn(3, 10, C, dtype=torch.float64)
    y, extras = module(x)
    capacity = math.ceil(1.0 * 30 * top_k / E)
    torch.testing.assert_close(y, reference(module, x, capacity))
    assert extras.metrics["moe_dropped"] > 0  # the router's opinions overflowed some expert


def test_outside_training_no_token_is_dropped():
    module = moe(capacity=1.0).eval()
    x = torch.randn(2, 12, C, dtype=torch.float64)
    y, extras = module(x)
    torch.testing.assert_close(y, reference(module, x, None))
    assert extras.metrics["moe_dropped"] == 0


def test_a_capacity_factor_of_zero_drops_nothing_in_training():
    module = moe(capacity=0.0).train()
    x = torch.randn(2, 12, C, dtype=torch.float64)
    torch.testing.assert_close(module(x)[0], reference(module, x, None))


def test_balance_loss_and_load_follow_the_switch_transformer_formula():
    module = moe(top_k=2, moe_balance_weight=0.01).train()
    x = torch.randn(4, 8, C, dtype=torch.float64)
    _, extras = module(x)
    tokens = x.reshape(-1, C)
    probs = torch.softmax(tokens @ module.router.weight.T, dim=-1)
    counts = [0] * E
    for p in probs:
        for e in sorted(range(E), key=lambda e: -p[e])[:2]:
            counts[e] += 1
    f = [c / (len(tokens) * 2) for c in counts]  # fraction of assignments, before capacity
    P = probs.mean(dim=0)
    expected = 0.01 * E * sum(f[i] * P[i] for i in range(E))  # Fedus et al. 2021, eq. 4
    assert extras.losses["moe_balance"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert [extras.metrics[f"moe_load_{i}"].item() for i in range(E)] == pytest.approx(f)
    assert "moe_z" not in extras.losses  # off by default


def test_a_uniform_router_has_balance_loss_equal_to_its_weight():
    module = moe(moe_balance_weight=0.01)
    with torch.no_grad():
        module.router.weight.zero_()  # every probability 1/E: E * sum f_i / E = 1
    _, extras = module(torch.randn(2, 8, C, dtype=torch.float64))
    assert extras.losses["moe_balance"].item() == pytest.approx(0.01)


def test_router_z_loss_follows_st_moe():
    module = moe(moe_z_weight=0.001)
    x = torch.randn(2, 8, C, dtype=torch.float64)
    _, extras = module(x)
    logits = x.reshape(-1, C) @ module.router.weight.T
    expected = 0.001 * sum(math.log(sum(math.exp(v) for v in row)) ** 2 for row in logits.tolist()) / len(logits)
    assert extras.losses["moe_z"].item() == pytest.approx(expected, rel=1e-9)


def test_jitter_scales_the_router_input_in_training_only():
    module = moe(moe_jitter=0.5)
    x = torch.randn(2, 8, C, dtype=torch.float64)
    module.eval()
    assert torch.equal(module(x)[0], module(x)[0])
    module.train()
    torch.manual_seed(1)
    a = module.route(x.reshape(-1, C))[0]
    torch.manual_seed(2)
    b = module.route(x.reshape(-1, C))[0]
    assert not torch.equal(a, b)


def test_an_expert_that_receives_no_token_gets_a_zero_gradient():
    module = moe(top_k=2, capacity=0.0).train()
    with torch.no_grad():  # every token prefers experts 0 and 1
        module.router.weight.zero_()
        module.router.weight[0, 0] = module.router.weight[1, 0] = 50.0
    x = torch.randn(2, 8, C, dtype=torch.float64)
    x[..., 0] = x[..., 0].abs() + 1.0
    y, extras = module(x)
    (y.sum() + sum(extras.losses.values())).backward()
    assert extras.metrics["moe_load_2"] == 0 and extras.metrics["moe_load_3"] == 0
    assert all(p.grad is not None for p in stacks(module))  # a gradient, not None: DDP needs no find_unused_parameters
    for e in (2, 3):  # of zeros where no token went
        assert all(torch.count_nonzero(g) == 0 for g in expert_grads(module, e))
    assert all(torch.count_nonzero(g) > 0 for g in expert_grads(module, 0))


def test_gates_are_trained_through_the_router():
    for top_k in (1, 2):
        module = moe(top_k=top_k).train()
        y, _ = module(torch.randn(2, 8, C, dtype=torch.float64))
        y.square().sum().backward()
        assert torch.count_nonzero(module.router.weight.grad) > 0


def test_active_parameters_and_flops_count_top_k_experts():
    config = dict(TINY, n_experts=8, moe_top_k=2)
    model = build_model(load_experiment("moe"), **config)
    dense = build_model(load_experiment("baseline"), **TINY)
    C_, L, H = TINY["n_embd"], TINY["n_layer"], 4 * TINY["n_embd"]
    expert = C_ * H + H + H * C_ + C_  # c_fc and c_proj with biases
    router = C_ * 8
    assert model.num_params() == dense.num_params() + L * (7 * expert + router)
    assert model.active_params() == dense.num_params() + L * (expert + router)
    T = 32
    # forward per token: router 2*C*E, two experts of 2*(C*H + H*C) each; training is 3x forward
    assert model.flops_per_token(T) - dense.flops_per_token(T) == 3 * L * (2 * C_ * 8 + 2 * 4 * C_ * H - 4 * C_ * H)


def test_swiglu_experts():
    module = moe(cls=SwiGLUMoE).eval()
    assert type(module.template).__name__ == "SwiGLU"
    assert module.c_fc_weight.shape == (E, 2 * round(8 * C / 3), C)
    x = torch.randn(2, 6, C, dtype=torch.float64)
    torch.testing.assert_close(module(x)[0], reference(module, x, None))


def test_the_model_adds_the_balance_loss_to_cross_entropy_and_reports_the_load():
    torch.manual_seed(0)
    model = build_model(load_experiment("moe"), **TINY).train()
    idx = torch.randint(0, TINY["vocab_size"], (2, 16))
    out = model(idx, idx)
    assert set(out.losses) == {"moe_balance"}
    torch.testing.assert_close(out.loss, out.ce + out.losses["moe_balance"])
    loads = [out.metrics[f"moe_load_{i}"] for i in range(8)]
    assert sum(loads).item() == pytest.approx(1.0) and "moe_dropped" in out.metrics


def test_cached_generation_equals_recomputation():
    torch.manual_seed(0)
    model = build_model(load_experiment("moe"), **TINY).eval()
    idx = torch.randint(0, TINY["vocab_size"], (1, 6))
    generated = model.generate(idx, 10, temperature=0, n_vocab=TINY["vocab_size"])
    recomputed = idx
    for _ in range(10):
        logits = model(recomputed).logits[:, -1]
        recomputed = torch.cat([recomputed, logits.argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(generated, recomputed)


def test_routing_fields_are_refused_without_moe():
    with pytest.raises(Exception, match="n_experts=4 would be ignored"):
        build_model(load_experiment("baseline"), **TINY, n_experts=4)
    with pytest.raises(Exception, match="moe_top_k"):
        GPTConfig(n_experts=2, moe_top_k=3)


@pytest.mark.parametrize("cls", [MoE, SwiGLUMoE])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_grouped_dispatch_equals_the_dense_computation_and_its_gradients(cls, dtype):
    """One grouped matmul per expert layer (float32 through PyTorch's grouped kernel, float64 group by
    group inside the op) against every expert computed on every token: outputs and weight gradients."""
    module = moe(top_k=2, capacity=1.0, cls=cls).to(dtype).train()
    x = torch.randn(3, 10, C, dtype=dtype)
    y, _ = module(x)
    expected = reference(module, x, math.ceil(1.0 * 30 * 2 / E))
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else {}
    torch.testing.assert_close(y, expected, **tol)
    grad = torch.randn_like(y)
    got = torch.autograd.grad(y, stacks(module), grad)
    want = torch.autograd.grad(expected, stacks(module), grad)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **tol)


@pytest.mark.long  # the default tier's budget: one of its slowest
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_moe_compiles_to_one_graph(training, dtype):
    """No graph break (the per-expert .tolist() and the loop over experts are gone), in training (with
    capacity) and evaluation, in float32 and under bfloat16 autocast; and the compiled model computes the
    eager one's loss."""
    import contextlib

    import torch._dynamo
    torch.manual_seed(0)
    model = build_model(load_experiment("moe"), **TINY).train(training)
    x, y = torch.randint(0, TINY["vocab_size"], (2, 2, 32))
    autocast = torch.autocast("cpu", dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
    torch._dynamo.reset()
    with autocast:
        explained = torch._dynamo.explain(model)(x, y)
        assert explained.graph_break_count == 0, explained.break_reasons
        assert explained.graph_count == 1
        if dtype == torch.float32:
            torch.testing.assert_close(torch.compile(model, fullgraph=True)(x, y).loss, model(x, y).loss)


def test_a_checkpoint_of_the_per_expert_layout_loads_into_the_stacks():
    """Before the stacks, each expert was an MLP of its own (mlp.experts.<e>.c_fc.weight, ...): such a state,
    written out here from a model's experts, loads into the stacked layout and gives the same logits."""
    torch.manual_seed(0)
    model = build_model(load_experiment("moe"), **TINY).eval()
    old = {}
    for name, value in model.state_dict().items():
        prefix, _, field = name.rpartition(".mlp.")
        if field not in ("c_fc_weight", "c_proj_weight", "c_fc_bias", "c_proj_bias"):
            old[name] = value
            continue
        layer, kind = field.rsplit("_", 1)
        for e, part in enumerate(value if kind == "weight" else value.view(8, -1)):
            old[f"{prefix}.mlp.experts.{e}.{layer}.{kind}"] = part.clone()
    assert "transformer.h.0.mlp.experts.7.c_proj.bias" in old and "transformer.h.0.mlp.c_fc_weight" not in old
    fresh = build_model(load_experiment("moe"), **TINY).eval()
    fresh.load_state_dict(old)  # strict
    idx = torch.randint(0, TINY["vocab_size"], (2, 12))
    assert torch.equal(fresh(idx).logits, model(idx).logits)
