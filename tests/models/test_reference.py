"""The whole model against an independent computation: a GPT forward pass written out here
with loops over heads, explicit softmax, and each paper's formula (RoPE's complex rotation,
ALiBi's slopes, the sinusoid table, MLA's latent up-projection), in float64, reading only the
model's weights. A component that is built but not wired in (RoPE skipped on k, the learned
position not added, MLA's rotary key unrotated, GQA's groups interleaved) fails here."""

import math
from types import SimpleNamespace

import pytest
import torch

from gptlab import GPTConfig, build_model, load_experiment
from gptlab.models.gpt import GPT
from gptlab.modules import (ALiBi, BaseAttention, GQAAttention, LearnedPositionEncoding, MLAAttention, MQAAttention,
                            PositionEncoding, RoPE, SinusoidalPositionalEncoding)
from tests.conftest import EXPERIMENTS

# six heads: ALiBi's slopes for a head count that is not a power of two; GQA in groups of three
SIZE = dict(n_layer=2, n_head=6, n_embd=48, block_size=24, vocab_size=61)
EXTRA = {"gqa": dict(n_kv_head=2), "llama": dict(n_kv_head=2), "llama_muon": dict(n_kv_head=2),
         "moe": dict(n_experts=4, moe_top_k=2)}
CLOSE = dict(atol=1e-4, rtol=1e-4)  # RoPE rotates in float32 (as under bf16), the rest is float64


def model_of(name: str, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    model = build_model(load_experiment(name), **SIZE, **EXTRA.get(name, {})).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:  # non-zero biases, gains away from one: a bias or gain left out shows
                p.add_(0.2 * torch.randn_like(p))
            else:  # weights of unit gain, so that scores are of order one and positions change them visibly
                p.normal_(0.0, 1.0 / math.sqrt(p.shape[1]))
    return model


def rotate(t, positions, theta=10000.0):
    """RoFormer eq. 34: row p's pair (t_2i, t_2i+1), read as a complex number, times
    exp(i * p * theta^(-2i/d))."""
    d = t.shape[-1]
    angles = torch.tensor([[p * theta ** (-2 * i / d) for i in range(d // 2)] for p in positions], dtype=torch.float64)
    pairs = torch.complex(t[:, 0::2], t[:, 1::2]) * torch.polar(torch.ones_like(angles), angles)
    return torch.stack([pairs.real, pairs.imag], dim=-1).flatten(-2)


def alibi_slope(h: int, n: int) -> float:
    """Press et al. 2022 §3 and their reference code: 2^(-8/n) ratio for n a power of two;
    otherwise the slopes of the largest power of two below n, then every other slope of 2x that."""
    p = 2 ** int(math.log2(n))
    if h < p:
        return 2 ** (-8 * (h + 1) / p)
    return 2 ** (-8 * (2 * (h - p) + 1) / (2 * p))


def layer_norm(x, norm):
    if hasattr(norm, "bias"):  # LayerNorm: centred, biased
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        out = (x - mu) / torch.sqrt(var + norm.eps) * norm.weight
        return out + norm.bias if norm.bias is not None else out
    return x / torch.sqrt((x ** 2).mean(-1, keepdim=True) + (norm.eps or 1e-5)) * norm.weight  # RMSNorm


def linear(x, layer):
    out = x @ layer.weight.T
    return out + layer.bias if getattr(layer, "bias", None) is not None else out


def attend(q, k, v, position, head, n_head):
    """One head: q (T, d), k (T, d), v (T, dv), causal, with ALiBi's bias when asked."""
    T = q.shape[0]
    scores = q @ k.T / math.sqrt(q.shape[-1])
    if position == "ALiBi":
        slope = alibi_slope(head, n_head)
        scores = scores - slope * (torch.arange(T)[:, None] - torch.arange(T)[None, :]).double()
    scores = scores.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def mha(x, attn, position, n_head):
    T, C = x.shape
    D = C // n_head
    n_kv = attn.n_kv_head
    qkv = linear(x, attn.c_attn)
    q, k, v = qkv[:, :n_head * D], qkv[:, n_head * D:(n_head + n_kv) * D], qkv[:, (n_head + n_kv) * D:]
    heads = []
    for h in range(n_head):
        g = h // (n_head // n_kv)  # query heads h of one group share K/V head g (GQA, Ainslie et al. 2023)
        qh, kh, vh = q[:, h * D:(h + 1) * D], k[:, g * D:(g + 1) * D], v[:, g * D:(g + 1) * D]
        if hasattr(attn, "q_norm"):  # QK-norm: RMSNorm over each head's query and key, before RoPE
            qh, kh = layer_norm(qh, attn.q_norm), layer_norm(kh, attn.k_norm)
        if position == "RoPE":
            qh, kh = rotate(qh, range(T)), rotate(kh, range(T))
        heads.append(attend(qh, kh, vh, position, h, n_head))
    return linear(torch.cat(heads, dim=-1), attn.c_proj)


def mla(x, attn, position, n_head):
    """DeepSeek-V2 §2.1, eq. 9-19: K/V up-projected from the normalised latent c_kv; a decoupled
    rotary key shared by every head, concatenated to each head's key."""
    T = x.shape[0]
    nope, rope, dv = attn.qk_nope_head_dim, attn.qk_rope_head_dim, attn.v_head_dim
    q = linear(layer_norm(linear(x, attn.wq_a), attn.q_norm), attn.wq_b) if attn.q_lora_rank else linear(x, attn.wq)
    kv_a = linear(x, attn.wkv_a)
    c_kv, k_rope = layer_norm(kv_a[:, :attn.kv_lora_rank], attn.kv_norm), kv_a[:, attn.kv_lora_rank:]
    if position == "RoPE":
        k_rope = rotate(k_rope, range(T))
    kv = linear(c_kv, attn.wkv_b)
    heads = []
    for h in range(n_head):
        qh = q[:, h * (nope + rope):(h + 1) * (nope + rope)]
        q_nope, q_rope = qh[:, :nope], qh[:, nope:]
        if position == "RoPE":
            q_rope = rotate(q_rope, range(T))
        kvh = kv[:, h * (nope + dv):(h + 1) * (nope + dv)]
        k = torch.cat([kvh[:, :nope], k_rope], dim=-1)
        heads.append(attend(torch.cat([q_nope, q_rope], dim=-1), k, kvh[:, nope:], position, h, n_head))
    return linear(torch.cat(heads, dim=-1), attn.c_proj)


ACTIVATIONS = {  # each paper's formula
    "MLP": lambda a: 0.5 * a * (1 + torch.tanh(math.sqrt(2 / math.pi) * (a + 0.044715 * a ** 3))),
    "ReLUMLP": lambda a: a.clamp(min=0),
    "SiLUMLP": lambda a: a / (1 + torch.exp(-a)),
    "GEGLU": lambda a: 0.5 * a * (1 + torch.tanh(math.sqrt(2 / math.pi) * (a + 0.044715 * a ** 3))),  # GPT-2's GELU
    "SwiGLU": lambda a: a / (1 + torch.exp(-a)),
}


def moe(x, module):
    """Each token alone: softmax router probabilities, its top-k experts, their probabilities
    renormalised when k > 1 (GShard), the experts' outputs summed with those weights. Nothing
    is dropped outside training."""
    rows = []
    for token in x:
        probs = torch.softmax(token @ module.router.weight.T, dim=-1)
        chosen = sorted(range(len(probs)), key=lambda e: -probs[e])[:module.top_k]
        weights = [probs[e] / (sum(probs[c] for c in chosen) if module.top_k > 1 else 1.0) for e in chosen]
        rows.append(sum(w * mlp(token[None], expert(module, e))[0] for w, e in zip(weights, chosen)))
    return torch.stack(rows)


def expert(module, e):
    """Expert e of a mixture as an MLP of its own class: its slices of the stacked weights as c_fc and c_proj."""
    w = module.expert_parameters(e)
    mlp = object.__new__(type(module.template))  # the class alone (its activation's name, gated or not)
    for layer in ("c_fc", "c_proj"):
        mlp.__dict__[layer] = SimpleNamespace(weight=w[f"{layer}.weight"], bias=w.get(f"{layer}.bias"))
    return mlp


def mlp(x, module):
    if hasattr(module, "router"):
        return moe(x, module)
    h = linear(x, module.c_fc)
    act = ACTIVATIONS[type(module).__name__]
    if type(module).gated:
        gate, up = h.chunk(2, dim=-1)
        return linear(act(gate) * up, module.c_proj)
    return linear(act(h), module.c_proj)


def reference_logits(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """Logits (T, V) of one sequence, from the model's weights only."""
    config, T = model.config, idx.shape[0]
    position = type(model.transformer.wpe).__name__
    x = model.transformer.wte.weight[idx]
    if position == "LearnedPositionEncoding":
        x = x + model.transformer.wpe.weight[:T]
    if position == "SinusoidalPositionalEncoding":  # Vaswani et al. 2017
        table = torch.zeros(T, config.n_embd, dtype=torch.float64)
        for p in range(T):  # §3.5: PE(p, 2i) = sin(p / 10000^(2i/d_model)), PE(p, 2i+1) = cos(...)
            for i in range(0, config.n_embd, 2):
                table[p, i] = math.sin(p / 10000 ** (i / config.n_embd))
                table[p, i + 1] = math.cos(p / 10000 ** (i / config.n_embd))
        x = x * math.sqrt(config.n_embd) + table  # §3.4: "we multiply those weights by sqrt(d_model)"
    for block in model.transformer.h:
        attention = mla if type(block.attn).__name__ == "MLAAttention" else mha
        x = x + attention(layer_norm(x, block.ln_1), block.attn, position, config.n_head)
        x = x + mlp(layer_norm(x, block.ln_2), block.mlp)
    return layer_norm(x, model.transformer.ln_f) @ model.lm_head.weight.T


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_model_equals_the_reference_forward_pass(name):
    model = model_of(name)
    idx = torch.randint(0, SIZE["vocab_size"], (2, 20))
    logits = model(idx).logits
    for b in range(2):
        torch.testing.assert_close(logits[b], reference_logits(model, idx[b]), **CLOSE)


ATTENTIONS = {"mha": (BaseAttention, {}), "mqa": (MQAAttention, {}), "gqa": (GQAAttention, {"n_kv_head": 2}),
              "mla": (MLAAttention, {"q_lora_rank": 16})}
POSITIONS = {"learned": LearnedPositionEncoding, "sine": SinusoidalPositionalEncoding, "rope": RoPE, "alibi": ALiBi}


@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("attention", ATTENTIONS)
def test_every_attention_with_every_position_encoding_equals_the_reference(attention, position):
    cls, fields = ATTENTIONS[attention]
    torch.manual_seed(0)
    model = GPT(GPTConfig(**SIZE, **fields), cls, POSITIONS[position]).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 1.0 / math.sqrt(p.shape[1])) if p.dim() > 1 else p.add_(0.2 * torch.randn_like(p))
    idx = torch.randint(0, SIZE["vocab_size"], (1, 16))
    torch.testing.assert_close(model(idx).logits[0], reference_logits(model, idx[0]), **CLOSE)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_cached_generation_logits_equal_the_reference(name):
    model = model_of(name)
    idx = torch.randint(0, SIZE["vocab_size"], (1, 16))
    caches = model.new_caches()
    steps = [model(idx[:, :5], caches=caches).logits] + [model(idx[:, t:t + 1], caches=caches).logits
                                                          for t in range(5, 16)]
    torch.testing.assert_close(torch.cat(steps, dim=1)[0], reference_logits(model, idx[0]), **CLOSE)


UNBOUNDED = ["rope", "alibi", "sine"]  # the shipped encodings without a length limit (block_size is 24)


@pytest.mark.parametrize("name", UNBOUNDED)
def test_model_past_block_size_equals_the_reference_forward_pass(name):
    model = model_of(name)
    idx = torch.randint(0, SIZE["vocab_size"], (2, 3 * SIZE["block_size"]))
    logits = model(idx).logits
    for b in range(2):
        torch.testing.assert_close(logits[b], reference_logits(model, idx[b]), **CLOSE)


@pytest.mark.parametrize("name", UNBOUNDED)
def test_cached_generation_past_block_size_equals_the_reference(name):
    model = model_of(name)
    idx = torch.randint(0, SIZE["vocab_size"], (1, 2 * SIZE["block_size"] + 5))
    caches = model.new_caches()
    steps = [model(idx[:, :10], caches=caches).logits] + [model(idx[:, t:t + 1], caches=caches).logits
                                                           for t in range(10, idx.size(1))]
    torch.testing.assert_close(torch.cat(steps, dim=1)[0], reference_logits(model, idx[0]), **CLOSE)


def test_no_position_encoding_past_block_size_equals_the_reference():
    model = twin_without_positions(model_of("baseline"))
    idx = torch.randint(0, SIZE["vocab_size"], (1, 3 * SIZE["block_size"]))
    torch.testing.assert_close(model(idx).logits[0], reference_logits(model, idx[0]), **CLOSE)


def twin_without_positions(model: GPT) -> GPT:
    """The same weights, with the no-op PositionEncoding base class in place of the model's."""
    twin = GPT(model.config, type(model.transformer.h[0].attn), PositionEncoding, type(model.transformer.h[0].mlp),
               type(model.transformer.ln_f)).double().eval()
    twin.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("transformer.wpe")})
    return twin


@pytest.mark.parametrize("name", ["rope", "alibi", "mla"])
def test_score_position_encodings_matter_only_where_positions_can(name):
    model = model_of(name)
    twin = twin_without_positions(model)
    idx = torch.randint(0, SIZE["vocab_size"], (1, 20))
    a, b = model(idx).logits[0], twin(idx).logits[0]
    torch.testing.assert_close(a[0], b[0])  # the first token sees only itself, at offset 0
    assert all(not torch.allclose(a[t], b[t]) for t in range(1, 20))
    same = torch.full((1, 20), 7)  # identical tokens: every key and value alike, positions cannot change the mix
    torch.testing.assert_close(model(same).logits, twin(same).logits)


@pytest.mark.parametrize("name", ["baseline", "sine"])
def test_additive_position_encodings_change_every_position(name):
    model = model_of(name)
    twin = twin_without_positions(model)
    same = torch.full((1, 20), 7)
    a, b = model(same).logits[0], twin(same).logits[0]
    assert all(not torch.allclose(a[t], b[t]) for t in range(20))
    assert not torch.allclose(a[3], a[11])  # identical tokens are told apart by position alone
    if name == "baseline":  # a zero table is no position at all
        with torch.no_grad():
            model.transformer.wpe.weight.zero_()
        torch.testing.assert_close(model(same).logits, twin(same).logits)
