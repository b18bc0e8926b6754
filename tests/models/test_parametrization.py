"""muP and CompleteP: each parameter's rules against the `mup` package's (MuAdamW, MuSharedReadout) and the papers'
formulas written out here; the standard model unchanged at the base shape."""

import math

import pytest
import torch

from gptlab import GPTConfig, TrainingConfig
from gptlab.core.experiment import load_experiment
from gptlab.models.gpt import build_gpt
from gptlab.optim import AdamW, Muon

SMALL = dict(n_layer=2, block_size=32, vocab_size=512)


def model(name="baseline", seed=0, **fields):
    torch.manual_seed(seed)
    return build_gpt(load_experiment(name), GPTConfig(**{**SMALL, **fields}))


def lr_of(optimizer, p):
    return next(g["lr"] for g in optimizer.param_groups if any(q is p for q in g["params"]))


def group_of(optimizer, p):
    return next(g for g in optimizer.param_groups if any(q is p for q in g["params"]))


def test_at_its_base_shape_mup_is_the_standard_model_bitwise():
    standard = model(n_embd=128, n_head=2)
    for parametrization in ("mup", "completep", "mup+completep"):
        same = model(n_embd=128, n_head=2, parametrization=parametrization, base_width=128, base_depth=2)
        assert all(torch.equal(a, b) for a, b in zip(standard.state_dict().values(), same.state_dict().values()))
        idx = torch.randint(0, 512, (2, 16))
        assert torch.equal(standard(idx, idx).loss, same(idx, idx).loss)
        a, b = AdamW(standard, TrainingConfig()), AdamW(same, TrainingConfig())
        assert [(g["lr"] if "lr" in g else a.optimizers["adamw"].defaults["lr"], g["weight_decay"]) for g in
                a.param_groups] == [(g["lr"], g["weight_decay"]) for g in b.param_groups]


def test_the_rules_are_the_mup_packages(tmp_path):
    """MuAdamW (mup 1.0.0): a matrix-like parameter (both sides infinite: ninf 2) gets lr / width_mult and weight
    decay x width_mult, everything else keeps both; mup's init scales a matrix-like weight's std by
    width_mult^-1/2; MuSharedReadout multiplies the logits by 1 / width_mult."""
    mup = pytest.importorskip("mup")
    width, base, delta = 256, 64, 128
    ours = model(n_embd=width, n_head=4, parametrization="mup", base_width=base)

    def shaped(w):  # the standard model of a width, its tied head a MuSharedReadout as mup requires
        m = model(n_embd=w, n_head=w // 64)
        m.lm_head = mup.MuSharedReadout(m.transformer.wte.weight, bias=False)
        return m

    target = shaped(width)
    mup.set_base_shapes(target, shaped(base), delta=shaped(delta), rescale_params=False)
    optimizer = AdamW(ours, TrainingConfig(max_lr=1e-3, weight_decay=0.1))
    theirs = dict(target.named_parameters())
    checked = 0
    for name, p in ours.named_parameters():
        infshape = theirs[name].infshape
        matrix = infshape.ninf() == 2
        m = infshape.width_mult() if matrix else 1.0
        group = group_of(optimizer, p)
        assert group["lr"] == pytest.approx(1e-3 / m), name
        if p.dim() >= 2:
            assert group["weight_decay"] == pytest.approx(0.1 * m), name
        assert ours.param_rules()[id(p)].init == pytest.approx(m ** -0.5), name
        checked += 1
    assert checked == len(list(ours.parameters())) and ours.logit_scale == pytest.approx(1 / target.lm_head.width_mult())
    assert theirs["transformer.h.0.attn.c_attn.weight"].infshape.width_mult() == 4.0


def test_the_logits_the_init_and_the_attention_follow_the_papers_formulas():
    m_d = 4
    wide = model(n_embd=256, n_head=4, parametrization="mup", base_width=64)
    standard = model(n_embd=256, n_head=4)
    for (name, p), (_, q) in zip(wide.named_parameters(), standard.named_parameters()):
        factor = {"hidden": m_d ** -0.5}.get(wide.param_roles[name], 1.0)
        assert torch.allclose(p, q * factor), name  # the standard draws, rescaled
    idx = torch.randint(0, 512, (1, 8))
    with torch.no_grad():
        assert torch.allclose(wide(idx).logits, wide.lm_head(wide.features(idx)[0]) / m_d)
    # heads that grow: scores scaled sqrt(d_base) / d (muP's 1/d, equal to 1/sqrt(d) at the base); heads of 64 keep SDPA's
    grown = GPTConfig(n_embd=256, n_head=2, parametrization="mup", base_width=64, base_head_dim=32)
    assert grown.attention_scale(128) == pytest.approx(math.sqrt(32) / 128)
    assert GPTConfig(n_embd=256, n_head=4, parametrization="mup", base_width=64).attention_scale(64) is None


def test_completep_scales_the_branches_the_epsilon_and_keeps_the_base_depths_init():
    """Dey et al. 2025, table 1 at alpha = 1: each block's outputs x 1/m_L; AdamW's epsilon of the blocks'
    parameters x 1/m_L; rates unchanged; GPT-2's residual std 0.02 / sqrt(2 L) keeps the base depth's L."""
    deep = model(n_embd=64, n_head=1, n_layer=8, parametrization="completep", base_depth=2)
    assert all(block.branch_scale == 0.25 for block in deep.transformer.h)
    optimizer = AdamW(deep, TrainingConfig())
    for name, p in deep.named_parameters():
        group = group_of(optimizer, p)
        assert group["eps"] == pytest.approx(1e-8 / 4 if name.startswith("transformer.h.") else 1e-8), name
        assert group["lr"] == pytest.approx(6e-4), name
    proj = torch.cat([b.attn.c_proj.weight.flatten() for b in deep.transformer.h])
    assert proj.std().item() == pytest.approx(0.02 / math.sqrt(2 * 2), rel=0.05)  # not 0.02 / sqrt(16)


def test_muons_matrices_keep_their_rate_under_original_and_scale_under_match_rms():
    wide = model(n_embd=256, n_head=4, parametrization="mup", base_width=64)
    muon = Muon(wide, TrainingConfig())
    assert muon.optimizers["muon"].param_groups[0]["lr"] == pytest.approx(0.02)
    moonshot = Muon(wide, TrainingConfig(muon_adjust_lr_fn="match_rms_adamw", muon_lr=6e-4))
    assert moonshot.optimizers["muon"].param_groups[0]["lr"] == pytest.approx(6e-4 / 4)
    # the AdamW part follows muP: the embedding's rate kept, a vector's kept
    assert lr_of(muon, wide.transformer.wte.weight) == pytest.approx(6e-4)


def test_every_component_gets_a_role_and_a_users_unplaceable_parameter_is_refused(tmp_path):
    from gptlab.core.experiment import available_experiments
    for name in available_experiments():
        exp = load_experiment(name)
        config = GPTConfig(**{**SMALL, **{k: getattr(exp.model_config, k) for k in ("n_kv_head", "bias")}},
                           n_embd=128, n_head=2, parametrization="mup", base_width=64)
        if exp.model_config.n_kv_head:
            config = GPTConfig(**{**SMALL, "bias": exp.model_config.bias}, n_embd=256, n_head=4, n_kv_head=2,
                               parametrization="mup", base_width=64)
        roles = build_gpt(exp, config).param_roles
        hidden = [n for n, r in roles.items() if r == "hidden"]
        assert hidden and all(n.startswith("transformer.h.") for n in hidden), name
        assert roles["transformer.wte.weight"] == "input", name
    moe = build_gpt(load_experiment("moe"), GPTConfig(**SMALL, n_embd=128, n_head=2, parametrization="mup",
                                                       base_width=64)).param_roles
    assert moe["transformer.h.0.mlp.router.weight"] == "output"  # a softmax's few logits: only its input grows
    path = tmp_path / "temp.py"
    path.write_text("import torch\nfrom torch import nn\nfrom gptlab.modules import BaseAttention\n\n\n"
                    "class Tempered(BaseAttention):\n    def __init__(self, config):\n        super().__init__(config)\n"
                    "        self.temperature = nn.Parameter(torch.ones(config.n_head, 1, 1))\n\n\n"
                    "ATTENTION_CLASS = Tempered\n")
    with pytest.raises(ValueError, match="temperature .* has a side that grows with the width.*mup_roles"):
        build_gpt(load_experiment(str(path)), GPTConfig(**SMALL, n_embd=128, n_head=2, parametrization="mup",
                                                         base_width=64))
    path.write_text(path.read_text().replace("class Tempered(BaseAttention):\n",
                                             "class Tempered(BaseAttention):\n    mup_roles = {'temperature': 'vector'}\n"))
    assert build_gpt(load_experiment(str(path)), GPTConfig(**SMALL, n_embd=128, n_head=2, parametrization="mup",
                                                            base_width=64)).param_roles["transformer.h.0.attn.temperature"] == "vector"
