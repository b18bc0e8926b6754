"""Which transformers class computes a gptlab model exactly, and its config and weights there.

A family is one transformers causal-LM class with the component classes it expresses
exactly: the same function, weight for weight, up to float rounding. A family is chosen by
the model's component classes themselves (`type(...) is`, not a subclass: a subclass may
compute something else), so a model no family matches is refused, never approximated.

Four things differ between gptlab and transformers besides the names:
- the vocabulary: gptlab pads GPT-2's 50257 tokens to 50304 rows for fast matmuls; the
  export keeps the 50257 real rows (the padded ones are never a token), so every logit of a
  real token is unchanged;
- RoPE's pair layout: gptlab rotates interleaved pairs (x_2i, x_2i+1), as RoFormer and
  DeepSeek-V2 do; GPT-NeoX and Llama rotate halves (x_i, x_i+d/2). Permuting each head's
  query and key rows (evens first, then odds) makes the halves the same pairs, and q.k is
  unchanged because queries and keys are permuted alike;
- GPT-2's Conv1D stores weights (in, out), the transpose of nn.Linear's;
- a missing bias is a zero bias where the class always has one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from gptlab.core.config import GPT2_VOCAB
from gptlab.data.tokenizer import EOT
from gptlab.modules import (BaseAttention, GQAAttention, LearnedPositionEncoding, MLAAttention, MLP, MQAAttention, NoPE,
                            ReLUMLP, RMSNorm, RoPE, SiLUMLP, SinusoidalPositionalEncoding, SwiGLU, SwiGLUMoE)

SLOTS = {"attention": "attention", "position": "position encoding", "mlp": "MLP", "norm": "norm"}
# ungated MLPs by transformers' name of their activation (ACT2FN); gelu_pytorch_tanh is
# F.gelu(approximate="tanh") itself, what gptlab's MLP computes (gelu_new is a formula of it)
ACTIVATIONS = {MLP: "gelu_pytorch_tanh", ReLUMLP: "relu", SiLUMLP: "silu"}
TOKENS = dict(vocab_size=GPT2_VOCAB, bos_token_id=EOT, eos_token_id=EOT)


def components(model) -> dict[str, type]:
    """The model's component classes by slot, read from the modules it is made of."""
    block = model.transformer.h[0]
    return {"attention": type(block.attn), "position": type(model.transformer.wpe), "mlp": type(block.mlp),
            "norm": type(block.ln_1)}


@dataclass(frozen=True)
class Family:
    """One transformers class: the components it takes (by slot, a tuple of classes), what it
    is, and how to write a model's config and weights for it."""
    hf_class: str
    takes: dict[str, tuple[type, ...]]
    shape: str  # in words, for the list of families
    config: Callable[[nn.Module], dict]
    weights: Callable[[nn.Module], dict[str, Tensor]]
    limits: Callable[[nn.Module], list[str]] = lambda model: []  # what else of the model's the class cannot express

    def mismatches(self, model) -> list[str]:
        """Every component of the model this class does not compute, one sentence each."""
        problems = []
        for slot, cls in components(model).items():
            if cls not in self.takes[slot]:
                names = ", ".join(c.__name__ for c in self.takes[slot])
                problems.append(f"{SLOTS[slot]} {cls.__name__} ({self.hf_class} takes {names})")
        return problems

    def problems(self, model) -> list[str]:
        """What keeps this class from computing the model: its components, else its settings."""
        return self.mismatches(model) or self.limits(model)


# weights shared by every family

def real_rows(weight: Tensor) -> Tensor:
    """The rows of the real GPT-2 tokens of a (vocab_size, C) embedding or LM head."""
    return weight[:GPT2_VOCAB]


def bias(module: nn.Module) -> Tensor:
    """A linear layer's or LayerNorm's bias, zeros where it has none."""
    if module.bias is not None:
        return module.bias
    return torch.zeros(module.weight.size(0), dtype=module.weight.dtype)


def halves(rows: Tensor, n_heads: int, head_dim: int) -> Tensor:
    """Each head's rows (weight rows or bias entries, head-major) from gptlab's interleaved
    RoPE pairs to the halves layout: dimensions 0, 2, 4, ... then 1, 3, 5, ..."""
    order = torch.cat([torch.arange(0, head_dim, 2), torch.arange(1, head_dim, 2)])
    return rows.reshape(n_heads, head_dim, *rows.shape[1:])[:, order].reshape(rows.shape)


def mlp_hidden(model) -> int:
    """An MLP's hidden size (an expert's in a mixture)."""
    mlp = model.transformer.h[0].mlp
    return mlp.c_proj_weight.size(-1) if isinstance(mlp, SwiGLUMoE) else mlp.c_proj.weight.size(1)


def norm_eps(model) -> float:
    return model.transformer.ln_f.eps


def layer_norm(prefix: str, norm: nn.LayerNorm) -> dict[str, Tensor]:
    return {f"{prefix}.weight": norm.weight, f"{prefix}.bias": bias(norm)}


def linear(prefix: str, layer: nn.Linear, with_bias: bool = True) -> dict[str, Tensor]:
    return {f"{prefix}.weight": layer.weight, **({f"{prefix}.bias": bias(layer)} if with_bias else {})}


def gated(prefix: str, mlp: SwiGLU, with_bias: bool) -> dict[str, Tensor]:
    """A gated MLP's c_fc (gate rows, then up rows) as Llama's gate_proj and up_proj."""
    gate, up = mlp.c_fc.weight.chunk(2)
    out = {f"{prefix}.gate_proj.weight": gate, f"{prefix}.up_proj.weight": up,
           f"{prefix}.down_proj.weight": mlp.c_proj.weight}
    if with_bias:
        gate_bias, up_bias = bias(mlp.c_fc).chunk(2)
        out.update({f"{prefix}.gate_proj.bias": gate_bias, f"{prefix}.up_proj.bias": up_bias,
                    f"{prefix}.down_proj.bias": bias(mlp.c_proj)})
    return out


def rope_parameters(model) -> dict:
    return {"rope_type": "default", "rope_theta": model.config.rope_theta}


# GPT-2: learned, fixed or no absolute positions, LayerNorm, an ungated MLP

def position_table(model) -> Tensor:
    """The (block_size, C) vectors added to the token embeddings: learned, the sinusoid
    table (its first block_size rows), or zeros for no position encoding."""
    wpe, config = model.transformer.wpe, model.config
    if isinstance(wpe, LearnedPositionEncoding):
        return wpe.weight
    if isinstance(wpe, SinusoidalPositionalEncoding):
        wpe.extend(config.block_size)
        return wpe.table[:config.block_size]
    return torch.zeros(config.block_size, config.n_embd)


def embeddings(model) -> tuple[Tensor, Tensor]:
    """(token embedding, LM head) of the real tokens. The sinusoidal encoding scales the token
    embeddings by sqrt(n_embd) (Vaswani et al. §3.4) but not the tied LM head: the export
    stores the scaled embedding and the unscaled head, untied."""
    wte = real_rows(model.transformer.wte.weight)
    if isinstance(model.transformer.wpe, SinusoidalPositionalEncoding):
        return wte * model.transformer.wpe.scale, wte
    return wte, wte


def tied(model) -> bool:
    return not isinstance(model.transformer.wpe, SinusoidalPositionalEncoding)


def gpt2_config(model) -> dict:
    c = model.config
    return dict(model_type="gpt2", n_positions=c.block_size, n_embd=c.n_embd, n_layer=c.n_layer, n_head=c.n_head,
                n_inner=mlp_hidden(model), activation_function=ACTIVATIONS[components(model)["mlp"]],
                layer_norm_epsilon=norm_eps(model), tie_word_embeddings=tied(model), resid_pdrop=0.0,
                embd_pdrop=0.0, attn_pdrop=0.0, **TOKENS)


def gpt2_weights(model) -> dict[str, Tensor]:
    wte, head = embeddings(model)
    out = {"transformer.wte.weight": wte, "transformer.wpe.weight": position_table(model), "lm_head.weight": head}
    for i, block in enumerate(model.transformer.h):
        p = f"transformer.h.{i}"
        out.update(layer_norm(f"{p}.ln_1", block.ln_1) | layer_norm(f"{p}.ln_2", block.ln_2))
        for name, layer in (("attn.c_attn", block.attn.c_attn), ("attn.c_proj", block.attn.c_proj),
                            ("mlp.c_fc", block.mlp.c_fc), ("mlp.c_proj", block.mlp.c_proj)):
            out[f"{p}.{name}.weight"] = layer.weight.t()  # Conv1D: (in, out)
            out[f"{p}.{name}.bias"] = bias(layer)
    return out | layer_norm("transformer.ln_f", model.transformer.ln_f)


# GPT-BigCode: GPT-2 with multi-query attention; nn.Linear, and c_attn's rows are gptlab's [q, k, v]

def bigcode_config(model) -> dict:
    return gpt2_config(model) | dict(model_type="gpt_bigcode", multi_query=True)


def bigcode_weights(model) -> dict[str, Tensor]:
    wte, head = embeddings(model)
    out = {"transformer.wte.weight": wte, "transformer.wpe.weight": position_table(model), "lm_head.weight": head}
    for i, block in enumerate(model.transformer.h):
        p = f"transformer.h.{i}"
        out.update(layer_norm(f"{p}.ln_1", block.ln_1) | layer_norm(f"{p}.ln_2", block.ln_2))
        out.update(linear(f"{p}.attn.c_attn", block.attn.c_attn) | linear(f"{p}.attn.c_proj", block.attn.c_proj))
        out.update(linear(f"{p}.mlp.c_fc", block.mlp.c_fc) | linear(f"{p}.mlp.c_proj", block.mlp.c_proj))
    return out | layer_norm("transformer.ln_f", model.transformer.ln_f)


# GPT-NeoX: RoPE over the whole head, LayerNorm, an ungated MLP, the sequential residual of GPT-2

def neox_config(model) -> dict:
    c = model.config
    return dict(model_type="gpt_neox", hidden_size=c.n_embd, num_hidden_layers=c.n_layer,
                num_attention_heads=c.n_head, intermediate_size=mlp_hidden(model),
                hidden_act=ACTIVATIONS[components(model)["mlp"]], max_position_embeddings=c.block_size,
                rope_parameters=rope_parameters(model) | {"partial_rotary_factor": 1.0},
                layer_norm_eps=norm_eps(model), use_parallel_residual=False, attention_bias=True,
                tie_word_embeddings=True, hidden_dropout=0.0, attention_dropout=0.0, **TOKENS)


def neox_weights(model) -> dict[str, Tensor]:
    c = model.config
    wte = real_rows(model.transformer.wte.weight)
    out = {"gpt_neox.embed_in.weight": wte, "lm_head.weight": wte}
    for i, block in enumerate(model.transformer.h):
        p, attn = f"gpt_neox.layers.{i}", block.attn
        out.update(layer_norm(f"{p}.input_layernorm", block.ln_1)
                   | layer_norm(f"{p}.post_attention_layernorm", block.ln_2))
        # gptlab's c_attn rows are [q of every head, k of every head, v ...]; NeoX's are head by
        # head [q_h, k_h, v_h], with q and k in the halves layout
        for key, rows in (("weight", attn.c_attn.weight), ("bias", bias(attn.c_attn))):
            q, k, v = rows.chunk(3)
            q, k = halves(q, c.n_head, c.head_dim), halves(k, c.n_head, c.head_dim)
            per_head = [t.reshape(c.n_head, c.head_dim, *t.shape[1:]) for t in (q, k, v)]
            out[f"{p}.attention.query_key_value.{key}"] = torch.stack(per_head, dim=1).reshape(rows.shape)
        out.update(linear(f"{p}.attention.dense", attn.c_proj) | linear(f"{p}.mlp.dense_h_to_4h", block.mlp.c_fc)
                   | linear(f"{p}.mlp.dense_4h_to_h", block.mlp.c_proj))
    return out | layer_norm("gpt_neox.final_layer_norm", model.transformer.ln_f)


# Llama: RoPE, RMSNorm, SwiGLU, multi-head, grouped- or multi-query attention

def llama_config(model) -> dict:
    c, attn = model.config, model.transformer.h[0].attn
    return dict(model_type="llama", hidden_size=c.n_embd, intermediate_size=mlp_hidden(model),
                num_hidden_layers=c.n_layer, num_attention_heads=c.n_head, num_key_value_heads=attn.n_kv_head,
                head_dim=c.head_dim, hidden_act="silu", max_position_embeddings=c.block_size,
                rms_norm_eps=norm_eps(model), rope_parameters=rope_parameters(model), attention_bias=c.bias,
                mlp_bias=c.bias, tie_word_embeddings=True, attention_dropout=0.0, **TOKENS)


def llama_shell(model) -> dict[str, Tensor]:
    """What Llama, Mixtral and DeepSeek-V2 name alike: the tied embedding and the norms; each adds its attention
    and its MLPs."""
    wte = real_rows(model.transformer.wte.weight)
    out = {"model.embed_tokens.weight": wte, "lm_head.weight": wte, "model.norm.weight": model.transformer.ln_f.weight}
    for i, block in enumerate(model.transformer.h):
        out[f"model.layers.{i}.input_layernorm.weight"] = block.ln_1.weight
        out[f"model.layers.{i}.post_attention_layernorm.weight"] = block.ln_2.weight
    return out


def dense_mlps(model) -> dict[str, Tensor]:
    return {k: v for i, block in enumerate(model.transformer.h)
            for k, v in gated(f"model.layers.{i}.mlp", block.mlp, model.config.bias).items()}


def llama_attention(model) -> dict[str, Tensor]:
    """Multi-head, grouped- or multi-query attention as Llama's (and Mixtral's) q, k, v and o projections, q and
    k in the halves layout."""
    c, out = model.config, {}
    for i, block in enumerate(model.transformer.h):
        p, attn = f"model.layers.{i}.self_attn", block.attn
        sizes = [c.n_head * c.head_dim, attn.n_kv_head * c.head_dim, attn.n_kv_head * c.head_dim]
        q, k, v = attn.c_attn.weight.split(sizes)
        out[f"{p}.q_proj.weight"] = halves(q, c.n_head, c.head_dim)
        out[f"{p}.k_proj.weight"] = halves(k, attn.n_kv_head, c.head_dim)
        out[f"{p}.v_proj.weight"] = v
        out.update(linear(f"{p}.o_proj", attn.c_proj, c.bias))
        if c.bias:
            q, k, v = attn.c_attn.bias.split(sizes)
            out[f"{p}.q_proj.bias"] = halves(q, c.n_head, c.head_dim)
            out[f"{p}.k_proj.bias"] = halves(k, attn.n_kv_head, c.head_dim)
            out[f"{p}.v_proj.bias"] = v
    return out


def llama_weights(model) -> dict[str, Tensor]:
    return llama_shell(model) | llama_attention(model) | dense_mlps(model)


# Mixtral: Llama's attention and norms, SwiGLU experts routed top-k (softmax, the chosen gates renormalised), no
# biases. transformers stores the experts stacked as gptlab does: gate_up_proj (E, 2 hidden, C), the gate rows
# first, is c_fc_weight; down_proj (E, C, hidden) is c_proj_weight

def mixtral_config(model) -> dict:
    c, attn, moe = model.config, model.transformer.h[0].attn, model.transformer.h[0].mlp
    return dict(model_type="mixtral", hidden_size=c.n_embd, intermediate_size=mlp_hidden(model),
                num_hidden_layers=c.n_layer, num_attention_heads=c.n_head, num_key_value_heads=attn.n_kv_head,
                head_dim=c.head_dim, hidden_act="silu", max_position_embeddings=c.block_size,
                rms_norm_eps=norm_eps(model), rope_parameters=rope_parameters(model), sliding_window=None,
                num_local_experts=moe.n_experts, num_experts_per_tok=moe.top_k, router_jitter_noise=moe.jitter,
                # Mixtral's balance loss counts a token once per chosen expert: top_k times gptlab's (moe.py)
                router_aux_loss_coef=moe.balance_weight / moe.top_k, tie_word_embeddings=True,
                attention_dropout=0.0, **TOKENS, **experts_implementation(model))


def experts_implementation(model) -> dict:
    """transformers runs stacked experts through torch's grouped matmul, which takes rows of 16-byte multiples only
    (8 values in half precision); at other sizes it fails, so config.json names its loop over experts instead."""
    if all(n % 8 == 0 for n in (model.config.n_embd, mlp_hidden(model))):
        return {}
    return {"experts_implementation": "eager"}


def mixtral_weights(model) -> dict[str, Tensor]:
    out = llama_shell(model) | llama_attention(model)
    for i, block in enumerate(model.transformer.h):
        p, moe = f"model.layers.{i}.mlp", block.mlp
        out[f"{p}.gate.weight"] = moe.router.weight
        out[f"{p}.experts.gate_up_proj"] = moe.c_fc_weight
        out[f"{p}.experts.down_proj"] = moe.c_proj_weight
    return out


def mixtral_limits(model) -> list[str]:
    moe, limits = model.transformer.h[0].mlp, []
    if model.config.bias:
        limits.append("biases (model.bias=true): Mixtral's attention and experts have none; train with "
                      "model.bias=false")
    if moe.top_k < 2:
        limits.append("top-1 routing: Mixtral renormalises the chosen gates to sum to 1, which makes a single "
                      "expert's gate 1, where gptlab keeps its probability (Switch's rule, so that the router learns)")
    return limits


# DeepSeek-V2 (dense): multi-head latent attention with its decoupled RoPE key, RMSNorm, SwiGLU.
# Its RoPE rotates interleaved pairs (as complex numbers), gptlab's layout: no permutation

def deepseek_v2_config(model) -> dict:
    c, attn = model.config, model.transformer.h[0].attn
    return dict(model_type="deepseek_v2", hidden_size=c.n_embd, intermediate_size=mlp_hidden(model),
                num_hidden_layers=c.n_layer, num_attention_heads=c.n_head, num_key_value_heads=c.n_head,
                kv_lora_rank=attn.kv_lora_rank, q_lora_rank=attn.q_lora_rank or None,
                qk_nope_head_dim=attn.qk_nope_head_dim, qk_rope_head_dim=attn.qk_rope_head_dim,
                v_head_dim=attn.v_head_dim, first_k_dense_replace=c.n_layer,  # every layer dense, no MoE
                hidden_act="silu", max_position_embeddings=c.block_size, rms_norm_eps=norm_eps(model),
                rope_parameters=rope_parameters(model), attention_bias=c.bias, mlp_bias=c.bias,
                tie_word_embeddings=True, attention_dropout=0.0, **TOKENS)


def deepseek_v2_weights(model) -> dict[str, Tensor]:
    c = model.config
    out = llama_shell(model) | dense_mlps(model)
    for i, block in enumerate(model.transformer.h):
        p, attn = f"model.layers.{i}.self_attn", block.attn
        if attn.q_lora_rank:
            out.update(linear(f"{p}.q_a_proj", attn.wq_a, c.bias) | linear(f"{p}.q_b_proj", attn.wq_b, False))
            out[f"{p}.q_a_layernorm.weight"] = attn.q_norm.weight
        else:
            out[f"{p}.q_proj.weight"] = attn.wq.weight
        out.update(linear(f"{p}.kv_a_proj_with_mqa", attn.wkv_a, c.bias) | linear(f"{p}.kv_b_proj", attn.wkv_b, False)
                   | linear(f"{p}.o_proj", attn.c_proj, c.bias))
        out[f"{p}.kv_a_layernorm.weight"] = attn.kv_norm.weight
    return out


ABSOLUTE = (LearnedPositionEncoding, SinusoidalPositionalEncoding, NoPE)
UNGATED = tuple(ACTIVATIONS)
FAMILIES = (
    Family("GPT2LMHeadModel", dict(attention=(BaseAttention,), position=ABSOLUTE, mlp=UNGATED, norm=(nn.LayerNorm,)),
           "GPT-2: multi-head attention, learned, sinusoidal or no positions, LayerNorm, GELU/ReLU/SiLU MLP",
           gpt2_config, gpt2_weights),
    Family("GPTBigCodeForCausalLM", dict(attention=(MQAAttention,), position=ABSOLUTE, mlp=UNGATED,
                                         norm=(nn.LayerNorm,)),
           "GPT-2 with multi-query attention", bigcode_config, bigcode_weights),
    Family("GPTNeoXForCausalLM", dict(attention=(BaseAttention,), position=(RoPE,), mlp=UNGATED, norm=(nn.LayerNorm,)),
           "GPT-2 with RoPE over the whole head (sequential residual)", neox_config, neox_weights),
    Family("LlamaForCausalLM", dict(attention=(BaseAttention, GQAAttention, MQAAttention), position=(RoPE,),
                                    mlp=(SwiGLU,), norm=(RMSNorm,)),
           "RoPE, RMSNorm, SwiGLU, multi-head, grouped- or multi-query attention", llama_config, llama_weights),
    Family("MixtralForCausalLM", dict(attention=(BaseAttention, GQAAttention, MQAAttention), position=(RoPE,),
                                      mlp=(SwiGLUMoE,), norm=(RMSNorm,)),
           "RoPE, RMSNorm, SwiGLU experts routed top-k (k >= 2), no biases, multi-head, grouped- or multi-query "
           "attention", mixtral_config, mixtral_weights, mixtral_limits),
    Family("DeepseekV2ForCausalLM", dict(attention=(MLAAttention,), position=(RoPE,), mlp=(SwiGLU,), norm=(RMSNorm,)),
           "multi-head latent attention with RoPE, RMSNorm, SwiGLU (dense layers)", deepseek_v2_config,
           deepseek_v2_weights),
)


def family_of(model) -> tuple[Family | None, list[str]]:
    """The family that computes the model exactly, or (None, why none does): the closest
    family's differences, and model-wide reasons (a vocabulary smaller than GPT-2's)."""
    if model.config.vocab_size < GPT2_VOCAB:
        return None, [f"vocab_size={model.config.vocab_size} is smaller than GPT-2's {GPT2_VOCAB} tokens, so the "
                      f"export could not use the GPT-2 tokenizer it ships with"]
    m_d, m_l = model.config.multipliers()
    if (m_d, m_l) != (1.0, 1.0) or model.config.attention_scale(model.config.head_dim) is not None:
        return None, [f"parametrization={model.config.parametrization} at {m_d:g}x the base width and {m_l:g}x the base "
                      f"depth multiplies the logits, the residual branches or the attention scores, which no "
                      f"transformers class expresses; at its base shape it is the standard model and exports"]
    # the closest: fewest components it lacks, then fewest settings; the first of equals in FAMILIES' order
    closest = min(FAMILIES, key=lambda f: (len(f.mismatches(model)), len(f.problems(model))))
    if not closest.problems(model):
        return closest, []
    why = [f"closest: {closest.hf_class}, which differs in {'; '.join(closest.problems(model))}"]
    for slot, cls in components(model).items():
        if cls not in closest.takes[slot]:
            homes = [f for f in FAMILIES if cls in f.takes[slot]]
            why += [f"{cls.__name__} exports as {f.hf_class} ({f.shape})" for f in homes]
    return None, why
