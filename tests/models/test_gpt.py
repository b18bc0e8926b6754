import math

import pytest
import torch

from gptlab import GPT, ConfigError, GPTConfig, build_model, load_experiment
from tests.conftest import EXPERIMENTS, TINY, tiny_model


def test_baseline_has_gpt2_124m_parameters_and_one_tied_tensor():
    model = build_model(load_experiment("baseline"))
    # GPT-2 124M: 124,439,808 with vocab 50257, plus 47 padded rows of 768
    assert model.num_params() == 124_439_808 + 47 * 768 == 124_475_904
    assert model.transformer.wte.weight is model.lm_head.weight
    assert model.transformer.wte.weight.data_ptr() == model.lm_head.weight.data_ptr()


def test_gpt2_medium_preset_has_the_published_size():
    from gptlab.training.presets import PRESETS
    model_fields, train_fields = PRESETS["gpt2-medium"]
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        model = build_model(load_experiment("baseline"), **model_fields)
    # GPT-2 medium: 354,823,168 with vocab 50257 (OpenAI's checkpoint), plus 47 padded rows of 1024
    assert model.num_params() == 354_823_168 + 47 * 1024
    assert train_fields == {"max_lr": 3e-4}


@pytest.mark.parametrize("n_layer", [6, 12])
def test_small_init_draws_the_gpt_neox_stds(n_layer):
    torch.manual_seed(0)
    C = 512
    model = build_model(load_experiment("small_init"), n_layer=n_layer, n_embd=C, n_head=8, vocab_size=4096)
    std, residual = math.sqrt(2 / (5 * C)), 2 / (n_layer * math.sqrt(C))  # Nguyen & Salazar 2019; Wang (GPT-J)
    blocks = model.transformer.h
    for weight in (model.lm_head.weight, model.transformer.wpe.weight, blocks[0].attn.c_attn.weight,
                   blocks[-1].mlp.c_fc.weight):
        assert weight.std().item() == pytest.approx(std, rel=0.02)
    for weight in (blocks[0].attn.c_proj.weight, blocks[-1].mlp.c_proj.weight):
        assert weight.std().item() == pytest.approx(residual, rel=0.02)
    assert torch.all(blocks[0].attn.c_attn.bias == 0) and torch.all(blocks[0].ln_1.weight == 1)


def test_the_init_scheme_is_checked_when_the_model_is_built():
    with pytest.raises(ConfigError, match="init='smal' is not a scheme; did you mean 'small'"):
        build_model(load_experiment("baseline"), init="smal", n_layer=1, n_embd=32, n_head=2, vocab_size=64)


def test_llama_composes_four_components_without_biases():
    exp = load_experiment("llama")
    names = {slot: cls.__name__ for slot, cls in exp.components().items()}
    assert names == {"attention_class": "GQAAttention", "position_encoding_class": "RoPE",
                     "mlp_class": "SwiGLU", "norm_class": "RMSNorm"}
    model = build_model(exp, n_layer=2, n_head=8, n_embd=64, vocab_size=128)
    assert model.transformer.h[0].attn.n_kv_head == 4
    assert not any(name.endswith("bias") for name, _ in model.named_parameters())


def test_deepseek_v2_composes_latent_attention_rope_swiglu_rmsnorm_without_biases():
    exp = load_experiment("deepseek_v2")
    names = {slot: cls.__name__ for slot, cls in exp.components().items()}
    assert names == {"attention_class": "MLAAttention", "position_encoding_class": "RoPE",
                     "mlp_class": "SwiGLU", "norm_class": "RMSNorm"}
    model = build_model(exp, n_layer=2, n_head=8, n_embd=64, vocab_size=128)
    assert not any(name.endswith("bias") for name, _ in model.named_parameters())


def test_gpt2_initialisation():
    torch.manual_seed(0)
    model = build_model(load_experiment("baseline"), n_layer=6)
    blocks = model.transformer.h
    assert abs(model.lm_head.weight.std().item() - 0.02) < 0.0005
    assert abs(blocks[0].attn.c_attn.weight.std().item() - 0.02) < 0.0005
    assert abs(blocks[0].mlp.c_fc.weight.std().item() - 0.02) < 0.0005
    for residual in (blocks[0].attn.c_proj.weight, blocks[3].mlp.c_proj.weight):
        assert abs(residual.std().item() - 0.02 / math.sqrt(2 * 6)) < 0.0003
    assert torch.all(blocks[0].attn.c_attn.bias == 0)
    assert abs(model.transformer.wpe.weight.std().item() - 0.02) < 0.0005


def test_changing_token_t_changes_no_earlier_logit(experiment_name):
    model = tiny_model(experiment_name).eval()
    idx = torch.randint(0, 97, (1, 24))
    logits, _ = model(idx)
    t = 13
    changed = idx.clone()
    changed[0, t] = (idx[0, t] + 1) % 97
    logits2, _ = model(changed)
    torch.testing.assert_close(logits2[:, :t], logits[:, :t])
    assert not torch.allclose(logits2[:, t:], logits[:, t:])


def test_generation_ends_once_every_row_has_its_stop_token_and_draws_the_same_tokens_before():
    model = tiny_model("baseline", vocab_size=50304)
    idx = torch.randint(0, 50257, (3, 4), generator=torch.Generator().manual_seed(0))

    def generate(rows, stop=None):
        return model.generate(idx[:rows], 24, generator=torch.Generator().manual_seed(1), stop_token=stop)

    one = generate(1)
    stop = one[0, 4 + 2].item()  # the third token the row draws
    assert torch.equal(generate(1, stop), one[:, :4 + 3])  # it ends with its stop token
    three = generate(3)
    assert stop not in three[1:, 4:].flatten().tolist()
    assert torch.equal(generate(3, stop), three)  # rows that never draw it go on to max_new_tokens


def test_cached_greedy_generation_equals_recomputing_the_sequence(experiment_name):
    model = tiny_model(experiment_name).eval()
    prompt = torch.randint(0, 97, (2, 5))
    out = model.generate(prompt, max_new_tokens=20, temperature=0)
    idx = prompt
    for _ in range(20):  # no cache: the whole sequence through the model at every step
        logits, _ = model(idx)
        idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, idx)


def test_cached_logits_equal_full_forward_logits(experiment_name):
    model = tiny_model(experiment_name).eval()
    idx = torch.randint(0, 97, (2, 20))
    full, _ = model(idx)
    caches = model.new_caches()
    steps = [model(idx[:, :7], caches=caches)[0]] + [model(idx[:, t:t + 1], caches=caches)[0] for t in range(7, 20)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-4)


def test_generation_computes_the_logits_of_the_last_position_only():
    model = tiny_model("baseline")
    widths = []
    model.lm_head.register_forward_hook(lambda module, args, out: widths.append(tuple(args[0].shape[:-1])))
    model.generate(torch.randint(0, 97, (2, 7)), max_new_tokens=4)
    assert widths == [(2,)] * 4  # one row per sequence, the prompt's included


def test_generation_never_samples_the_padded_vocabulary_rows():
    """GPT-2's 50257 tokens padded to 50304: the 47 padding rows are no token. Their logits
    are made the largest here, and neither greedy nor sampling may pick them."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**TINY, "vocab_size": 50304})).eval()
    with torch.no_grad():
        model.transformer.ln_f.bias.fill_(1.0)  # every hidden state gets a positive part...
        model.lm_head.weight[50257:, :] = 10.0  # ...that gives every padded row a large logit
    assert model(torch.zeros(1, 1, dtype=torch.long)).logits[0, -1].argmax() >= 50257
    for temperature in (0, 1.0):
        out = model.generate(torch.zeros(3, 2, dtype=torch.long), 8, temperature=temperature)
        assert out.max() < 50257
    small = tiny_model("baseline")
    assert small.generate(torch.zeros(4, 1, dtype=torch.long), 10, n_vocab=5).max() < 5


def test_learned_positions_refuse_sequences_past_block_size():
    model = tiny_model("baseline")
    with pytest.raises(ValueError, match="learned positions are not defined past block_size=32"):
        model.generate(torch.zeros(1, 30, dtype=torch.long), max_new_tokens=5)
    with pytest.raises(ValueError, match="a sequence of 33 tokens: learned positions are not defined past "
                                         "block_size=32"):
        model(torch.zeros(1, 33, dtype=torch.long))
    caches = model.new_caches()
    model(torch.zeros(1, 32, dtype=torch.long), caches=caches)
    with pytest.raises(ValueError, match="a sequence of 33 tokens"):
        model(torch.zeros(1, 1, dtype=torch.long), caches=caches)


UNBOUNDED = ["rope", "alibi", "sine", "mla", "nope"]  # every encoding without a length limit, and MLA's rotary key


def unbounded_model(name: str) -> GPT:
    return tiny_model(name).eval()


@pytest.mark.parametrize("name", UNBOUNDED)
def test_cached_logits_equal_full_forward_logits_past_block_size(name):
    model = unbounded_model(name)
    idx = torch.randint(0, 97, (2, 100))  # block_size is 32: the caches double twice
    full, _ = model(idx)
    caches = model.new_caches()
    steps = [model(idx[:, :20], caches=caches)[0], model(idx[:, 20:50], caches=caches)[0]]
    steps += [model(idx[:, t:t + 1], caches=caches)[0] for t in range(50, 100)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-4)
    assert caches[0].length == 100 and caches[0].capacity == 128


@pytest.mark.parametrize("name", UNBOUNDED)
def test_cached_greedy_generation_past_block_size_equals_recomputing_the_sequence(name):
    model = unbounded_model(name)
    prompt = torch.randint(0, 97, (2, 20))
    out = model.generate(prompt, max_new_tokens=30, temperature=0)
    idx = prompt
    for _ in range(30):
        logits, _ = model(idx)
        idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, idx)


@pytest.mark.parametrize("name", UNBOUNDED)
def test_logits_inside_block_size_do_not_depend_on_what_follows_past_it(name):
    model = unbounded_model(name)
    idx = torch.randint(0, 97, (1, 80))
    torch.testing.assert_close(model(idx).logits[:, :32], model(idx[:, :32]).logits, atol=1e-6, rtol=1e-5)


def test_sampling_respects_top_k_and_seed():
    model = tiny_model("rope").eval()
    prompt = torch.zeros(1, 3, dtype=torch.long)
    a = model.generate(prompt, 10, top_k=1)
    assert torch.equal(a, model.generate(prompt, 10, temperature=0))  # top_k=1 is greedy
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(model.generate(prompt, 10, generator=g1), model.generate(prompt, 10, generator=g2))


def test_loss_is_cross_entropy_ignoring_minus_one():
    model = tiny_model("baseline").eval()
    idx, targets = torch.randint(0, 97, (2, 8)), torch.randint(0, 97, (2, 8))
    targets[0, :3] = -1
    logits, loss = model(idx, targets)
    logp = torch.log_softmax(logits, -1)
    picked = [-logp[b, t, targets[b, t]] for b in range(2) for t in range(8) if targets[b, t] >= 0]
    torch.testing.assert_close(loss, torch.stack(picked).mean())
    assert model(idx)[1] is None


def test_every_experiment_halves_its_loss_on_one_batch(experiment_name):
    model = tiny_model(experiment_name)
    torch.manual_seed(0)
    idx = torch.randint(0, 97, (4, 32))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(50):
        _, loss = model(idx[:, :-1], idx[:, 1:])
        first = first or loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < first / 2, (first, loss.item())


def test_kv_cache_bytes_per_token_reflect_the_attention():
    # per layer, bf16: MHA 2*H*D, MQA 2*D, GQA 2*n_kv*D, MLA d_c + d_h^R
    expected = {"baseline": 2 * 768, "mqa": 2 * 64, "gqa": 2 * 4 * 64, "mla": 256 + 32}
    for name, per_layer in expected.items():
        model = build_model(load_experiment(name), n_layer=2)
        assert model.kv_cache_bytes_per_token() == 2 * per_layer * 2, name


def test_all_twelve_shipped_experiments_are_present():
    assert set(EXPERIMENTS) >= {"baseline", "alibi", "rope", "sine", "mqa", "gqa", "mla", "rmsnorm",
                                "geglu", "swiglu", "silu", "relu"}


def last_logits_shuffle_delta(name: str, T: int = 64) -> float:
    """rms change of a fresh 1-layer GPT-2-width model's last-position logits when the tokens
    before the last are shuffled, over 8 random sequences (a smaller vocabulary: only faster)."""
    torch.manual_seed(0)
    model = build_model(load_experiment(name), n_layer=1, vocab_size=8192).eval()
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, model.config.vocab_size, (8, T), generator=g)
    shuffled = torch.cat([idx[:, :-1][:, torch.randperm(T - 1, generator=g)], idx[:, -1:]], dim=1)
    with torch.no_grad():
        delta = model(idx).logits[:, -1] - model(shuffled).logits[:, -1]
    return delta.pow(2).mean(-1).sqrt().mean().item()


def test_nope_sees_its_prefix_as_a_set():
    # Kazemnejad et al. 2023: without an encoding, causal attention is a function of the set of
    # earlier tokens (and the current one); shuffling the prefix leaves the last logits as they
    # were, which the learned-position baseline does not
    assert last_logits_shuffle_delta("nope") < 1e-5
    assert last_logits_shuffle_delta("baseline") > 1e-3


def test_nope_has_no_position_parameters():
    nope, baseline = tiny_model("nope"), tiny_model("baseline")
    assert baseline.num_params() - nope.num_params() == TINY["block_size"] * TINY["n_embd"]


def test_a_fresh_sine_model_sees_the_order_of_its_tokens():
    # Unscaled, the sinusoid table (entries ~1) drowns GPT-2's embeddings (std 0.02): shuffling the
    # prefix moved sine's last logits ~320x less than baseline's. With the embeddings scaled by
    # sqrt(n_embd) (Vaswani et al. §3.4) it is ~30x less: tokens now enter at the table's size, but
    # the residual stream is ~30x larger than baseline's against blocks initialised alike.
    sine, baseline = last_logits_shuffle_delta("sine"), last_logits_shuffle_delta("baseline")
    assert sine > baseline / 100, (sine, baseline)
