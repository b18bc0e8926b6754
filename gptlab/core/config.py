"""Typed configs: `GPTConfig` (the model) and `TrainingConfig` (the recipe).

Both are dataclasses validated in `__post_init__`; every problem is collected and raised
once, naming the field, its value and the fix. `GPTConfig` keeps only the rules that hold
for every model: a component checks the fields it reads when the model is built
(`check_config` in gptlab.modules), and a field in COMPONENT_FIELDS that no component of the
model reads is refused there rather than silently ignored. Fields whose default depends on
other fields use 0 for "the published rule", resolved by a method here so that overriding
`n_embd` or `n_head` rescales them (see `head_dim`, `mla_dims`).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, fields


GPT2_VOCAB = 50257  # tokens of the GPT-2 BPE; vocab_size pads it, and the padded rows are never real tokens


def autocasts_to_bf16(dtype: str, device_type: str) -> bool:
    """Whether TrainingConfig.dtype (`auto`, `bf16`, `fp32`) autocasts to bfloat16 on this
    kind of device: `bf16` everywhere, `auto` on CUDA only."""
    return dtype == "bf16" or (dtype == "auto" and device_type == "cuda")


class ConfigError(ValueError):
    """A config field has a value that cannot work; the message says which and why."""


def _non_finite(config) -> list[str]:
    """A float field that is NaN or infinite: no field of a config means anything at either."""
    return [f"{f.name}={getattr(config, f.name)} is not a finite number; give a number such as "
            f"{getattr(type(config)(), f.name)!r} (the default)"
            for f in fields(config) if isinstance(getattr(config, f.name), float)
            and not math.isfinite(getattr(config, f.name))]


def _raise_all(owner: str, problems: list[str]) -> None:
    if problems:
        raise ConfigError(f"{owner} is invalid:\n  - " + "\n  - ".join(problems))


@dataclass(frozen=True)
class GPTConfig:
    block_size: int = 1024  # longest sequence the model attends over
    vocab_size: int = 50304  # GPT2_VOCAB padded to a multiple of 128 for fast matmuls
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    n_kv_head: int = 0  # GQA key/value heads; 0 = n_head (MHA). MQA uses 1 whatever this says
    # MLA (DeepSeek-V2, arXiv:2405.04434 §2.1); 0 = the paper's rule from the head size d_h:
    kv_lora_rank: int = 0  # d_c, the joint KV latent; 0 = 4 * d_h
    q_lora_rank: int = 0  # d_c', the query latent; 0 = no query compression
    qk_rope_head_dim: int = 0  # d_h^R, the decoupled rotary part of q and k; 0 = d_h / 2
    qk_nope_head_dim: int = 0  # the non-rotary part of q and k; 0 = d_h
    v_head_dim: int = 0  # 0 = d_h
    rope_theta: float = 10000.0
    mlp_hidden: int = 0  # 0 = 4 * n_embd, or 8/3 * n_embd for gated MLPs (parameter-matched); per expert in MoE
    # mixture of experts (gptlab.modules.moe): routed experts, each an MLP of mlp_hidden
    n_experts: int = 8
    moe_top_k: int = 2  # experts per token; 1 is the Switch Transformer's routing
    moe_capacity_factor: float = 1.25  # tokens an expert takes per step in training, x (tokens * top_k / n_experts); 0 = no limit
    moe_jitter: float = 0.0  # router input noise in training, x ~ U(1 - eps, 1 + eps) (Switch used 0.01)
    moe_balance_weight: float = 0.01  # the load-balancing loss's weight (Switch Transformer's alpha)
    moe_z_weight: float = 0.0  # the router z-loss's weight (ST-MoE used 0.001); 0 = off
    init: str = "gpt2"  # initialisation scheme: "gpt2" or "small" (gptlab.models.init, checked when the model is built)
    # how init, learning rates and multipliers follow the size (gptlab.models.parametrization): "standard" (GPT-2's),
    # "mup" (width), "completep" (depth) or "mup+completep", relative to the base shape the rates were tuned at
    parametrization: str = "standard"
    base_width: int = 0  # the base shape's n_embd; 0 = this model's own
    base_depth: int = 0  # the base shape's n_layer; 0 = this model's own
    base_head_dim: int = 0  # the base shape's head size; 0 = this model's (heads keep their size as the width grows)
    bias: bool = True  # biases in Linear layers and LayerNorm, as GPT-2
    dropout: float = 0.0

    def __post_init__(self) -> None:
        problems = _non_finite(self)
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)} must be at least 1")
        for name in ("n_kv_head", "kv_lora_rank", "q_lora_rank", "qk_rope_head_dim",
                     "qk_nope_head_dim", "v_head_dim", "mlp_hidden", "base_width", "base_depth", "base_head_dim"):
            if getattr(self, name) < 0:
                problems.append(f"{name}={getattr(self, name)} must be 0 (the default rule) or positive")
        if self.n_head >= 1 and self.n_embd % self.n_head:
            problems.append(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}; "
                            f"choose n_head among {divisors(self.n_embd)}")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout={self.dropout} must be in [0, 1)")
        if self.n_experts < 1 or not 1 <= self.moe_top_k <= self.n_experts:
            problems.append(f"n_experts={self.n_experts}, moe_top_k={self.moe_top_k}: need at least one expert and "
                            f"1 <= moe_top_k <= n_experts")
        if not 0.0 <= self.moe_jitter < 1.0:
            problems.append(f"moe_jitter={self.moe_jitter} must be in [0, 1)")
        for name in ("moe_capacity_factor", "moe_balance_weight", "moe_z_weight"):
            if getattr(self, name) < 0:
                problems.append(f"{name}={getattr(self, name)} must be 0 or more")
        _raise_all("GPTConfig", problems)

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def multipliers(self) -> tuple[float, float]:
        """(m_d, m_L): the width and the depth over the parametrization's base shape, 1 where it does not scale
        with them (gptlab.models.parametrization)."""
        m_d = self.n_embd / (self.base_width or self.n_embd) if self.parametrization in ("mup", "mup+completep") else 1.0
        m_l = (self.n_layer / (self.base_depth or self.n_layer) if self.parametrization in ("completep", "mup+completep")
               else 1.0)
        return m_d, m_l

    def attention_scale(self, head_dim: int) -> float | None:
        """Attention scores' scale: None (SDPA's 1/sqrt(head_dim)) in the standard parametrization, and under muP
        where the head keeps its base size; sqrt(d_base) / head_dim where it grows (muP's 1/d, equal at the base)."""
        base = self.base_head_dim or head_dim
        if self.parametrization not in ("mup", "mup+completep") or base == head_dim:
            return None
        return math.sqrt(base) / head_dim

    def mla_dims(self) -> tuple[int, int, int, int]:
        """(kv_lora_rank, qk_nope_head_dim, qk_rope_head_dim, v_head_dim) with the paper's
        defaults (DeepSeek-V2 §3.1.2: d_c = 4 d_h, d_h^R = d_h / 2) filled in."""
        d_h = self.head_dim
        return (self.kv_lora_rank or 4 * d_h, self.qk_nope_head_dim or d_h,
                self.qk_rope_head_dim or d_h // 2, self.v_head_dim or d_h)


# fields only some components read; each such component names them in its `config_fields`
COMPONENT_FIELDS = ("n_kv_head", "kv_lora_rank", "q_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim",
                    "v_head_dim", "rope_theta", "mlp_hidden", "n_experts", "moe_top_k", "moe_capacity_factor",
                    "moe_jitter", "moe_balance_weight", "moe_z_weight")


@dataclass(frozen=True)
class TrainingConfig:
    """The build-nanogpt GPT-2 124M recipe (FineWeb-Edu 10B tokens, one epoch)."""
    total_batch_size: int = 524288  # tokens per optimizer step, reached by gradient accumulation
    micro_batch_size: int = 64  # B, sequences per forward pass on each rank
    sequence_length: int = 1024  # T, tokens per sequence (at most block_size)
    max_lr: float = 6e-4
    min_lr_ratio: float = 0.1  # cosine decay ends at max_lr * min_lr_ratio
    warmup_steps: int = 715
    max_steps: int = 19073  # the schedule's length
    stop_at: int = 0  # stop (with a checkpoint) after this many steps, schedule unchanged; 0 = max_steps
    weight_decay: float = 0.1  # applied to 2-D weights only
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # 0 disables clipping (of the parameters AdamW updates, under Muon)
    # Muon (gptlab.optim.Muon): read only when the experiment's OPTIMIZER_CLASS is Muon, which updates the blocks'
    # matrices with them and the rest with AdamW (max_lr, weight_decay, beta1, beta2)
    muon_lr: float = 0.02  # peak learning rate of the matrices (the schedule scales it as it scales max_lr)
    muon_weight_decay: float = 0.0  # decoupled: W -= lr * wd * W
    muon_momentum: float = 0.95
    muon_nesterov: bool = True
    muon_ns_steps: int = 5  # Newton-Schulz iterations
    muon_adjust_lr_fn: str = "original"  # "original" (Keller Jordan's) or "match_rms_adamw" (Moonshot's)
    eval_interval: int = 250  # validation, HellaSwag, samples and a checkpoint every this many steps
    val_interval: int = 0  # the validation loss alone, also every this many steps (curves of short runs); 0 = off
    # tokens of the validation split scored at each evaluation (whole sequences of sequence_length, from
    # its start): build-nanogpt's 20 batches of 64 x 1024 on each of 8 GPUs, the setting of the GPT-2
    # references; the same tokens whatever micro_batch_size and the number of processes
    val_tokens: int = 10_485_760
    hellaswag: bool = True
    hellaswag_limit: int = 0  # examples scored per evaluation; 0 = all 10,042
    hellaswag_file: str = ""  # a local HellaSwag .jsonl; "" = the official validation file, downloaded once
    num_samples: int = 4  # generated text samples per evaluation
    sample_length: int = 32
    sample_prompt: str = "Hello, I'm a language model,"
    keep_last: int = 0  # checkpoints kept; 0 = all
    max_bad_steps: int = 5  # consecutive non-finite steps before the run stops
    seed: int = 1337
    # what a seed varies: "fixed" (every seed reads the same batches in the same order: the seed changes the
    # initialisation and dropout only) or "seeded" (the seed also draws the order of the training batches)
    data_order: str = "fixed"
    compile: bool = True  # torch.compile on CUDA
    dtype: str = "auto"  # autocast: "auto" (bfloat16 on CUDA, float32 elsewhere), "bf16" (on any device), "fp32"
    data: str = "auto"  # "auto" (FineWeb-Edu shards if prepared, else embedded), "fineweb", "embedded"
    data_dir: str = ""  # token shards (FineWeb-Edu's, or `gptlab prepare`'s); set, it wins over `data`; "" = <repo>/data/edu_fineweb10B
    allow_data_change: bool = False  # resume on data other than the checkpoint's (the stream starts over)
    allow_source_change: bool = False  # resume although the experiment file or a user component changed
    # trackers (gptlab.training.trackers): bookkeeping, not recipe; off unless set; pip install -e ".[track]"
    wandb: str = ""  # a Weights & Biases project to log the run to; "" = off
    tensorboard: bool = False  # TensorBoard event files in <log_dir>/tensorboard

    def __post_init__(self) -> None:
        problems = _non_finite(self)
        for name in ("total_batch_size", "micro_batch_size", "sequence_length", "max_steps",
                     "eval_interval", "max_bad_steps"):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)} must be at least 1")
        for name in ("warmup_steps", "stop_at", "hellaswag_limit", "num_samples", "sample_length", "keep_last",
                     "val_interval"):
            if getattr(self, name) < 0:
                problems.append(f"{name}={getattr(self, name)} must be 0 or more")
        if self.val_tokens < self.sequence_length:
            problems.append(f"val_tokens={self.val_tokens} is less than one sequence of sequence_length="
                            f"{self.sequence_length}; validation scores whole sequences")
        if self.max_lr <= 0:
            problems.append(f"max_lr={self.max_lr} must be positive")
        if self.dtype not in ("auto", "bf16", "fp32"):
            problems.append(f"dtype={self.dtype!r} must be one of 'auto' (bfloat16 autocast on CUDA, float32 "
                            f"elsewhere), 'bf16', 'fp32'")
        if not 0 <= self.min_lr_ratio <= 1:
            problems.append(f"min_lr_ratio={self.min_lr_ratio} must be in [0, 1]")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)} must be in [0, 1)")
        if self.weight_decay < 0 or self.grad_clip < 0:
            problems.append("weight_decay and grad_clip must be 0 or more")
        if self.data_order not in ("fixed", "seeded"):
            problems.append(f"data_order={self.data_order!r} must be 'fixed' (every seed reads the same batches in the "
                            f"same order) or 'seeded' (the seed also orders the training batches)")
        if self.data not in ("auto", "fineweb", "embedded"):
            problems.append(f"data={self.data!r} must be one of 'auto', 'fineweb', 'embedded'")
        _raise_all("TrainingConfig", problems)


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def field_names(config_cls) -> list[str]:
    return [f.name for f in fields(config_cls)]


def unknown_field_error(config_cls, name: str) -> ConfigError:
    """The error for a field `config_cls` does not have, with the closest names suggested."""
    names = field_names(config_cls)
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    return ConfigError(f"{config_cls.__name__} has no field {name!r}; {hint}"
                       f"the fields are: {', '.join(names)}")


def replace_config(config, **overrides):
    """`dataclasses.replace` that names an unknown field and its closest matches."""
    for name in overrides:
        if name not in field_names(type(config)):
            raise unknown_field_error(type(config), name)
    return dataclasses.replace(config, **overrides)


# the sections of a `key=value` override and the config each one sets
OVERRIDE_SECTIONS = {"model": GPTConfig, "train": TrainingConfig}


def parse_overrides(items: list[str]) -> dict[str, dict]:
    """["model.n_layer=4", "train.max_lr=1e-3"] -> {"model": {"n_layer": 4}, "train": {"max_lr": 0.001}},
    each value converted to its field's type; the one parser of command-line overrides."""
    parsed = {section: {} for section in OVERRIDE_SECTIONS}
    for item in items:
        key, eq, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not eq or not dot or section not in OVERRIDE_SECTIONS:
            raise ConfigError(f"override {item!r} is not of the form model.FIELD=VALUE or train.FIELD=VALUE")
        parsed[section][name] = parse_value(OVERRIDE_SECTIONS[section], name, value)
    return parsed


def parse_value(config_cls, name: str, text: str):
    """Convert command-line text to the type of `config_cls.name` (bool, int, float or str)."""
    if name not in field_names(config_cls):
        raise unknown_field_error(config_cls, name)
    kind = type(getattr(config_cls(), name))
    try:
        if kind is bool:
            lowered = text.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if kind is int:
            return int(text.replace("_", ""))
        value = kind(text)
    except ValueError:
        words = {int: "a whole number", float: "a number", bool: "true or false"}
        raise ConfigError(f"{config_cls.__name__}.{name} takes {words.get(kind, f'a {kind.__name__}')}, "
                          f"got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise ConfigError(f"{config_cls.__name__}.{name}={text} is not a finite number; give a number such as "
                          f"{getattr(config_cls(), name)!r} (the default)")
    return value
