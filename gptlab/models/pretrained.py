"""OpenAI's GPT-2 weights in gptlab's baseline model, read through Hugging Face transformers.

    config, state = load_gpt2("gpt2")          # a published size, or a directory saved by save_pretrained
    model = build_gpt(load_experiment("baseline"), config)
    model.load_state_dict(state)               # strict: every name matches
    model = gpt2_model("gpt2")                 # the same, in eval mode

gptlab's baseline uses the GPT-2 checkpoint's own names, as transformers' GPT2LMHeadModel does,
so the names carry over unchanged. HF's linear layers are Conv1D, whose weight is (in, out), the
transpose of nn.Linear's (out, in) (nanoGPT's `from_pretrained` transposes the same four).
transformers is optional: `pip install -e ".[hf]"`.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import Tensor

from gptlab.core.config import GPTConfig
from gptlab.core.experiment import load_experiment
from gptlab.models.gpt import GPT, build_gpt
from gptlab.network import HUB, hub_offline, said_offline

# (n_layer, n_head, n_embd) of OpenAI's published checkpoints, by their Hugging Face names
GPT2_SIZES = {
    "gpt2": (12, 12, 768),  # 124M
    "gpt2-medium": (24, 16, 1024),  # 355M
    "gpt2-large": (36, 20, 1280),  # 774M
    "gpt2-xl": (48, 25, 1600),  # 1558M
}
# the Conv1D weights, stored (in, out)
CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# GELU's tanh approximation under its transformers names: what gptlab's MLP computes
TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh")
LAYER_NORM_EPS = 1e-5  # nn.LayerNorm's default, which gptlab's norms use and GPT-2 was trained with
INSTALL = 'pip install -e ".[hf]"'


class PretrainedError(ValueError):
    """Weights cannot be imported; the message says what was wrong and what to do."""


def load_gpt2(source: str) -> tuple[GPTConfig, dict[str, Tensor]]:
    """The GPTConfig and the state dict, in gptlab's names, of a GPT-2 checkpoint. source: a
    directory written by `save_pretrained` (config.json and model.safetensors or
    pytorch_model.bin) or a published size (a key of GPT2_SIZES, read from the Hugging Face
    cache, or the hub where it is reachable). The state dict loads strictly into
    `build_gpt(load_experiment("baseline"), config)`. Raises PretrainedError for anything else."""
    transformers = _import_transformers()
    directory = Path(source).expanduser()
    is_directory = directory.is_dir()  # a directory first, as transformers does with a name that is both
    location = str(directory) if is_directory else source
    if is_directory:
        check_gpt2_directory(directory)
    elif source not in GPT2_SIZES:
        sizes = ", ".join(f"{name} ({n_layer} layers, {n_head} heads, {n_embd} wide)"
                          for name, (n_layer, n_head, n_embd) in GPT2_SIZES.items())
        raise PretrainedError(f"{source!r} is neither a published GPT-2 nor an existing directory; "
                              f"pass one of {sizes}, or a directory written by save_pretrained")
    offline = not is_directory and hub_offline()  # then the cache only: at once, not after a minute of retries
    try:
        hf_config = transformers.GPT2Config.from_pretrained(location, local_files_only=offline)
        problems = unsupported_features(hf_config)
        if problems:
            raise PretrainedError(f"{source} is a GPT-2 that gptlab's baseline cannot express exactly:\n  - "
                                  + "\n  - ".join(problems))
        hf_model = transformers.GPT2LMHeadModel.from_pretrained(location, config=hf_config, local_files_only=offline)
    except OSError as e:
        if is_directory:
            raise PretrainedError(f"cannot read the GPT-2 weights in {source} ({_first_line(e)}); a directory "
                                  f"needs model.safetensors or pytorch_model.bin next to config.json") from None
        raise PretrainedError(unreachable(source, e, offline)) from None
    # vocab_size stays the checkpoint's (50257), not padded to a multiple of 128: a padded row of
    # lm_head filled with zeros would score logit 0, far above GPT-2's real logits (tens below
    # zero), and take most of the softmax's mass, changing every loss and probability
    config = GPTConfig(block_size=hf_config.n_positions, vocab_size=hf_config.vocab_size,
                       n_layer=hf_config.n_layer, n_head=hf_config.n_head, n_embd=hf_config.n_embd,
                       bias=True, dropout=0.0)
    return config, gptlab_state_dict(hf_model.state_dict())


def gpt2_model(source: str) -> GPT:
    """gptlab's baseline GPT with the weights of `source` (as load_gpt2 takes it), in eval mode."""
    config, state = load_gpt2(source)
    model = build_gpt(load_experiment("baseline"), config)
    model.load_state_dict(state)
    return model.eval()


def gptlab_state_dict(hf_state: dict[str, Tensor]) -> dict[str, Tensor]:
    """GPT2LMHeadModel's state dict in gptlab's names: the same names, the Conv1D weights
    transposed to nn.Linear's layout, the causal-mask buffers of older transformers dropped."""
    state = {}
    for name, tensor in hf_state.items():
        if name.endswith((".attn.bias", ".attn.masked_bias")):  # buffers, not weights
            continue
        state[name] = tensor.t() if name.endswith(CONV1D_WEIGHTS) else tensor
    return state


def unsupported_features(hf_config) -> list[str]:
    """Every way a GPT2Config differs from what gptlab's baseline computes, one sentence each."""
    problems = []
    if hf_config.activation_function not in TANH_GELUS:
        problems.append(f"activation_function={hf_config.activation_function!r}: gptlab's MLP computes GELU's tanh "
                        f"approximation, which transformers calls {' or '.join(TANH_GELUS)}")
    if hf_config.n_inner not in (None, 4 * hf_config.n_embd):
        problems.append(f"n_inner={hf_config.n_inner}: the baseline's MLP is 4 * n_embd = {4 * hf_config.n_embd} wide")
    if hf_config.layer_norm_epsilon != LAYER_NORM_EPS:
        problems.append(f"layer_norm_epsilon={hf_config.layer_norm_epsilon}: gptlab's LayerNorm uses "
                        f"{LAYER_NORM_EPS}, as GPT-2")
    if not hf_config.scale_attn_weights:
        problems.append("scale_attn_weights=False: gptlab's attention scales scores by 1/sqrt(head size)")
    if hf_config.scale_attn_by_inverse_layer_idx:
        problems.append("scale_attn_by_inverse_layer_idx=True: gptlab's attention does not scale scores by layer")
    if hf_config.reorder_and_upcast_attn:
        problems.append("reorder_and_upcast_attn=True: gptlab's attention does not reorder or upcast the scores")
    if hf_config.add_cross_attention:
        problems.append("add_cross_attention=True: gptlab's blocks have no cross-attention")
    if not hf_config.tie_word_embeddings:
        problems.append("tie_word_embeddings=False: gptlab's lm_head is tied to wte")
    return problems


def _import_transformers():
    try:
        import transformers
    except ImportError:
        raise PretrainedError(f"importing GPT-2 weights needs the transformers package: {INSTALL}") from None
    return transformers


def check_gpt2_directory(directory: Path) -> None:
    """Refuse a directory that is not a saved Hugging Face GPT-2, before transformers reads it."""
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise PretrainedError(f"{directory} is not a Hugging Face model directory: it has no config.json; pass a "
                              f"directory written by save_pretrained")
    try:
        model_type = json.loads(config_file.read_text()).get("model_type")
    except (json.JSONDecodeError, AttributeError):
        raise PretrainedError(f"{config_file} is not a JSON object; save the model again with save_pretrained") from None
    if model_type != "gpt2":
        raise PretrainedError(f"{directory} holds a {model_type!r} model (config.json model_type), not a GPT-2; "
                              f"gptlab imports GPT-2 checkpoints only (model_type 'gpt2')")


def unreachable(source: str, error: OSError, offline: bool = False) -> str:
    """Why a published size could not be loaded, and the two ways to get it onto this machine."""
    where = (f"it is not in the Hugging Face cache, and the hub ({HUB}) cannot be reached from here"
             + (" (HF_HUB_OFFLINE is set)" if said_offline() else "") if offline
             else f"from the Hugging Face cache or hub: {_first_line(error)}")
    return (f"cannot load {source}: {where}. Where there is network, download it with `hf download {source}` "
            f"(older huggingface_hub: `huggingface-cli download {source}`) and copy the cache (~/.cache/huggingface, "
            f"or $HF_HOME) here, or save it with `GPT2LMHeadModel.from_pretrained({source!r}).save_pretrained(DIR)` "
            f"and pass DIR")


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
