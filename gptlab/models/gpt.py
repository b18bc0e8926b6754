"""The GPT: GPT-2's architecture with each component class injected.

    wte (+ position encoding) -> n_layer x Block -> ln_f -> lm_head (tied to wte)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gptlab.core.config import COMPONENT_FIELDS, GPT2_VOCAB, ConfigError, GPTConfig
from gptlab.models.init import check_init, init_weights
from gptlab.models.parametrization import check_parametrization, output_multiplier, roles, rules, scale_init
from gptlab.modules.attention import Attention, BaseAttention, KVCache
from gptlab.modules.block import Block, Extras
from gptlab.modules.mlp import MLP
from gptlab.modules.norm import build_norm
from gptlab.modules.position import LearnedPositionEncoding, PositionEncoding


@dataclass
class ModelOutput:
    """What a forward pass computed. It reads as the pair (logits, loss) too:
    `logits, loss = model(idx, targets)` and `model(idx)[0]` work as they always have."""
    logits: Tensor
    loss: Tensor | None = None  # what training minimises: ce plus every extra loss
    ce: Tensor | None = None  # the plain next-token cross-entropy, which validation reports
    losses: dict[str, Tensor] = field(default_factory=dict)  # the components' extra losses, by name
    metrics: dict[str, Tensor] = field(default_factory=dict)  # the components' metrics, by name

    def __iter__(self):
        return iter((self.logits, self.loss))

    def __getitem__(self, index):
        return (self.logits, self.loss)[index]


def check_components(config: GPTConfig, attention_class: type, position_encoding_class: type,
                     mlp_class: type, norm_class: type) -> None:
    """Every component checks the config it is given; all problems are raised at once."""
    problems = check_init(config) + check_parametrization(config)
    problems += attention_class.check_config(config)
    problems += position_encoding_class.check_config(config, attention_class.rotary_dim(config))
    for cls in (mlp_class, norm_class):
        if hasattr(cls, "check_config"):
            problems += cls.check_config(config)
    classes = (attention_class, position_encoding_class, mlp_class, norm_class)
    read = {name for cls in classes for name in getattr(cls, "config_fields", ())}
    default = GPTConfig()
    for name in COMPONENT_FIELDS:
        value = getattr(config, name)
        if value != getattr(default, name) and name not in read:
            problems.append(f"{name}={value} would be ignored: none of {', '.join(c.__name__ for c in classes)} "
                            f"reads it (a class that does names it in config_fields); leave it at its default "
                            f"{getattr(default, name)!r} or use a component that reads it")
    if problems:
        raise ConfigError("the model cannot be built from this config:\n  - " + "\n  - ".join(problems))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig, attention_class: type[Attention] = BaseAttention,
                 position_encoding_class: type[PositionEncoding] = LearnedPositionEncoding,
                 mlp_class: type[nn.Module] = MLP, norm_class: type[nn.Module] = nn.LayerNorm):
        super().__init__()
        check_components(config, attention_class, position_encoding_class, mlp_class, norm_class)
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=position_encoding_class(config, attention_class.rotary_dim(config)),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList(Block(config, attention_class, mlp_class, norm_class) for _ in range(config.n_layer)),
            ln_f=build_norm(norm_class, config),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying (Press & Wolf 2017)
        self.component_classes = dict(attention_class=attention_class, position_encoding_class=position_encoding_class,
                                      mlp_class=mlp_class, norm_class=norm_class)
        # muP's logit multiplier (1 in the standard parametrization) and each parameter's kind under it
        self.logit_scale = output_multiplier(config)
        self.param_roles = roles(self) if config.parametrization != "standard" else None
        init_weights(self, config)  # config.init: GPT-2's by default
        if self.param_roles is not None:
            scale_init(self)  # the parametrization's init multipliers, on the same draws

    def param_rules(self) -> dict | None:
        """{id(parameter): its parametrization Rule (init, lr, weight decay, eps multipliers)}, or None in the
        standard parametrization (every multiplier 1): what an optimizer builds its groups from."""
        return rules(self) if self.param_roles is not None else None

    def num_params(self, non_embedding: bool = False) -> int:
        """Every distinct parameter element: the tied wte/lm_head matrix once, learned
        position embeddings included, fixed tables (sinusoidal, RoPE) and buffers not.
        non_embedding: without the token and position embeddings (Kaplan et al. 2020's N)."""
        total = sum(p.numel() for p in self.parameters())  # parameters() yields a shared tensor once
        if non_embedding:
            total -= self.transformer.wte.weight.numel() + sum(p.numel() for p in self.transformer.wpe.parameters())
        return total

    def active_params(self) -> int:
        """Parameters one token's forward pass uses: num_params() less what its components
        leave unused (`inactive_params()`: a mixture of experts' unchosen experts)."""
        return self.num_params() - sum(m.inactive_params() for m in self.modules() if hasattr(m, "inactive_params"))

    def flops_per_token(self, seq_len: int) -> int:
        """Training FLOPs per token, forward and backward, component by component (see
        gptlab.models.flops for what is counted)."""
        return sum(self.flops_breakdown(seq_len).values())

    def flops_breakdown(self, seq_len: int) -> dict[str, int]:
        """Training FLOPs per token of attention, mlp, lm_head and other parts."""
        from gptlab.models.flops import training_flops_breakdown
        return training_flops_breakdown(self, seq_len)

    def forward(self, idx: Tensor, targets: Tensor | None = None,
                caches: list[KVCache] | None = None) -> ModelOutput:
        """idx, targets: (B, T) token ids; targets -1 are ignored. With `caches` (one per
        layer), idx continues the cached sequence at its absolute positions. A sequence may be
        longer than block_size where the position encoding is defined for it (not learned)."""
        x, extras = self.features(idx, caches)
        logits = self.readout(x)
        losses, metrics = combine_extras(extras)
        if targets is None:
            return ModelOutput(logits, losses=losses, metrics=metrics)
        ce = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=-1)
        return ModelOutput(logits, ce + sum(losses.values()) if losses else ce, ce, losses, metrics)

    def readout(self, x: Tensor) -> Tensor:
        """The logits of hidden states: the LM head, times muP's output multiplier where it applies."""
        logits = self.lm_head(x)
        return logits * self.logit_scale if self.logit_scale != 1.0 else logits

    def features(self, idx: Tensor, caches: list[KVCache] | None = None) -> tuple[Tensor, list[Extras]]:
        """The final-norm hidden states (B, T, C) that lm_head turns into logits, and what the
        components reported; for callers that need the logits of a few positions only."""
        T = idx.size(1)
        start = caches[0].length if caches else 0
        pos_enc = self.transformer.wpe
        problem = pos_enc.length_problem(self.config, start + T)
        if problem:
            raise ValueError(f"a sequence of {start + T} tokens: {problem}")
        pos_enc.extend(start + T)
        pos = torch.arange(start, start + T, device=idx.device)
        x = self.transformer.drop(pos_enc(self.transformer.wte(idx), pos))
        extras: list[Extras] = []
        for i, block in enumerate(self.transformer.h):
            x, block_extras = block(x, pos_enc, pos, caches[i] if caches else None)
            extras += block_extras
        return self.transformer.ln_f(x), extras

    def new_caches(self, capacity: int | None = None) -> list[KVCache]:
        """One empty KVCache per layer, for `capacity` positions (default block_size); they grow when full."""
        return [KVCache(capacity or self.config.block_size) for _ in self.transformer.h]

    @torch.no_grad()
    def generate(self, idx: Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 generator: torch.Generator | None = None, n_vocab: int | None = None,
                 stop_token: int | None = None) -> Tensor:
        """Continue idx (B, T) by max_new_tokens tokens with the KV cache; temperature 0 is
        greedy. Only the last position's logits are computed, and only the first n_vocab rows
        are ever chosen (default: GPT-2's 50257 real tokens, not the padding up to vocab_size).
        With stop_token, generation ends early once every row has produced it (the tokens a row
        drew before are the same as without it; what follows its stop token is the caller's to cut).
        Past block_size, an encoding without a length limit (sinusoidal, RoPE, ALiBi, none)
        keeps going: the cache grows and every new token attends over the whole context,
        longer than any seen in training (no sliding window, no truncation). Learned positions
        are not defined there: such a request is refused."""
        tokens = list(self.stream(idx, max_new_tokens, temperature, top_k, generator, n_vocab, stop_token))
        return torch.cat([idx, *tokens], dim=1)

    @torch.no_grad()
    def stream(self, idx: Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
               generator: torch.Generator | None = None, n_vocab: int | None = None,
               stop_token: int | None = None) -> Iterator[Tensor]:
        """`generate`, one new token (B, 1) at a time, as each is drawn. The caches start at
        block_size (or the prompt) and double when full: a long request costs memory as it
        goes, never all of it up front."""
        total = idx.size(1) + max_new_tokens
        problem = self.transformer.wpe.length_problem(self.config, total)
        if problem:
            raise ValueError(f"prompt ({idx.size(1)} tokens) + max_new_tokens ({max_new_tokens}) = {total} tokens: "
                             f"{problem}; shorten one of them")
        n_vocab = min(n_vocab or GPT2_VOCAB, self.config.vocab_size)
        was_training = self.training
        self.eval()
        caches = self.new_caches(min(total, max(self.config.block_size, idx.size(1))))
        next_input, stopped = idx, torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
        try:
            for _ in range(max_new_tokens):
                x, _ = self.features(next_input, caches)
                logits = self.readout(x[:, -1, :])[:, :n_vocab]
                next_input = sample_next(logits, temperature, top_k, generator)
                yield next_input
                if stop_token is not None:
                    stopped |= next_input[:, 0] == stop_token
                    if stopped.all():  # one sync a token, only when asked to stop
                        break
        finally:
            self.train(was_training)

    def kv_cache_bytes_per_token(self, dtype: torch.dtype = torch.bfloat16) -> int:
        """Bytes of KV cache one token costs across all layers, measured on a real cache."""
        caches, param, was_training = self.new_caches(), next(self.parameters()), self.training
        with torch.no_grad():
            self.eval()  # no dropout: measuring must not draw from the RNG
            self(torch.zeros(1, 1, dtype=torch.long, device=param.device), caches=caches)
            self.train(was_training)
        return sum(c.bytes_per_token() for c in caches) * dtype.itemsize // param.element_size()


def combine_extras(extras: list[Extras]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Each named loss summed over the layers that report it; each metric averaged."""
    losses: dict[str, Tensor] = {}
    metrics: dict[str, list[Tensor]] = {}
    for e in extras:
        for name, value in e.losses.items():
            losses[name] = losses[name] + value if name in losses else value
        for name, value in e.metrics.items():
            metrics.setdefault(name, []).append(value.detach().float())
    return losses, {name: torch.stack(values).mean() for name, values in metrics.items()}


def sample_next(logits: Tensor, temperature: float, top_k: int | None,
                generator: torch.Generator | None = None) -> Tensor:
    """One token per row from logits (B, V): argmax at temperature 0, else softmax sampling
    of logits / temperature restricted to the top_k most likely."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = F.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)


def build_gpt(experiment, model_config: GPTConfig | None = None) -> GPT:
    """The experiment's GPT (randomly initialised), with model_config in place of its own."""
    return GPT(model_config or experiment.model_config, **experiment.components())
