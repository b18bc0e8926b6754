"""`gptlab generate`: text from a model, sampled with its KV cache.

    gptlab generate log_train/baseline/log/model_05000.pt --prompt "Hello, I'm a language model,"
    gptlab generate log_train/rope/log --num-samples 2 --seed 0   # the run's newest intact checkpoint
    gptlab generate gpt2 --temperature 0                           # OpenAI's GPT-2 (pip install -e ".[hf]")

SOURCE is what `--init-from` takes (a checkpoint, OpenAI's GPT-2 by name or a local Hugging
Face GPT-2 directory) or a run's log directory. A sample ends at the first <|endoftext|> after
the prompt, where GPT-2's training documents end (--ignore-eot goes on past it).
`python train.py --inference CKPT` is this code on one checkpoint file, with the same defaults.
"""

from __future__ import annotations

import argparse
import codecs
import difflib
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from gptlab.data.tokenizer import EOT, gpt2_encoding
from gptlab.paths import missing
from gptlab.training.checkpoint import CheckpointError, find_checkpoint, load_checkpoint, model_from_state
from gptlab.training.distributed import DeviceError, check_device, default_device

DEFAULT_SEED = 42


class GenerationError(ValueError):
    """Text cannot be generated as asked; the message says why and what to do."""


@dataclass(frozen=True)
class Sampling:
    """What to generate: the settings of --prompt, --num-samples, ... (defaults: train.py --inference's)."""
    prompt: str = "Hello, I'm a language model,"
    num_samples: int = 4
    max_new_tokens: int = 32
    temperature: float = 1.0  # 0: greedy
    top_k: int | None = 50  # None: the whole vocabulary
    seed: int = DEFAULT_SEED
    stop_at_eot: bool = True


@dataclass
class Source:
    """A model ready to sample from, and the line that says what it is."""
    model: torch.nn.Module
    description: str


def add_sampling_arguments(group) -> None:
    """The sampling flags, shared by `gptlab generate` and train.py's --inference."""
    default = Sampling()
    group.add_argument("--prompt", metavar="TEXT", default=default.prompt,
                       help="the text to continue (default: %(default)r)")
    group.add_argument("--num-samples", metavar="N", type=int, default=default.num_samples,
                       help="samples, drawn as one batch (default %(default)s)")
    group.add_argument("--max-new-tokens", metavar="N", type=int, default=default.max_new_tokens,
                       help="tokens generated per sample (default %(default)s)")
    group.add_argument("--temperature", metavar="T", type=float, default=default.temperature,
                       help="0 = greedy (default %(default)s)")
    group.add_argument("--top-k", metavar="K", type=int, default=default.top_k,
                       help="sample from the K most likely tokens; 0 = all (default %(default)s)")


def sampling_from_args(args: argparse.Namespace, stop_at_eot: bool = True) -> Sampling:
    return Sampling(prompt=args.prompt, num_samples=args.num_samples, max_new_tokens=args.max_new_tokens,
                    temperature=args.temperature, top_k=args.top_k or None,
                    seed=DEFAULT_SEED if args.seed is None else args.seed, stop_at_eot=stop_at_eot)


def from_checkpoint(path: Path) -> Source:
    """The model of one checkpoint file (CheckpointError for a missing, damaged or foreign one)."""
    state = load_checkpoint(Path(path))
    model = model_from_state(state)
    return Source(model, f"{path}: experiment {state['experiment']['name']}, step {state['step']}, "
                         f"{model.num_params():,} parameters")


def load_source(source: str) -> Source:
    """SOURCE as `gptlab generate` takes it: OpenAI's GPT-2 (a published name or a Hugging Face
    directory, as --init-from), a run's log directory (its newest intact checkpoint), or a checkpoint."""
    from gptlab.models.pretrained import GPT2_SIZES
    from gptlab.training.warmstart import is_pretrained_source
    path = Path(source).expanduser()
    if is_pretrained_source(source):
        return _from_gpt2(source)
    if path.is_dir():
        return from_checkpoint(find_checkpoint(path))
    if not path.exists():
        close = difflib.get_close_matches(source, GPT2_SIZES, n=1)
        raise GenerationError(f"{missing(source)}; give a checkpoint (model_NNNNN.pt), a run's log directory, "
                              f"or OpenAI's GPT-2: {', '.join(GPT2_SIZES)} or a Hugging Face GPT-2 directory"
                              + (f" (did you mean {close[0]}?)" if close else ""))
    return from_checkpoint(path)


def _from_gpt2(source: str) -> Source:
    from gptlab.models.pretrained import PretrainedError, gpt2_model
    try:
        model = gpt2_model(source)
    except PretrainedError as e:
        raise GenerationError(str(e)) from None
    return Source(model, f"{source}: OpenAI's GPT-2 weights, {model.num_params():,} parameters")


def problems(model, prompt: list[int], sampling: Sampling) -> list[str]:
    """Every reason the model cannot generate what sampling asks, in the words of the flags."""
    found = []
    if not prompt:
        found.append("--prompt is empty; give the text to continue")
    elif max(prompt) >= model.config.vocab_size:
        found.append(f"--prompt holds token id {max(prompt)}, past the model's vocabulary of "
                     f"{model.config.vocab_size} tokens (model.vocab_size); use words this model knows")
    if sampling.max_new_tokens < 1:
        found.append(f"--max-new-tokens {sampling.max_new_tokens}: give at least 1")
    else:  # past block_size only where the position encoding is defined there
        too_long = model.transformer.wpe.length_problem(model.config, len(prompt) + sampling.max_new_tokens)
        if too_long:
            found.append(f"the prompt ({len(prompt)} tokens) + --max-new-tokens {sampling.max_new_tokens}: "
                         f"{too_long}; shorten one of them")
    if sampling.num_samples < 1:
        found.append(f"--num-samples {sampling.num_samples}: give at least 1")
    if sampling.top_k is not None and sampling.top_k < 0:
        found.append(f"--top-k {sampling.top_k}: give a positive K, or 0 for the whole vocabulary")
    if not 0 <= sampling.seed < 2**64:
        found.append(f"--seed {sampling.seed}: give a seed from 0 to 2**64 - 1")
    if not (math.isfinite(sampling.temperature) and sampling.temperature >= 0):
        found.append(f"--temperature {sampling.temperature}: give 0 (greedy) or a positive number")
    return found


def encode(prompt: str) -> list[int]:
    return gpt2_encoding().encode(prompt, allowed_special={"<|endoftext|>"})


def check(model, sampling: Sampling) -> None:
    """GenerationError naming every reason the model cannot generate what sampling asks."""
    found = problems(model, encode(sampling.prompt), sampling)
    if found:
        raise GenerationError("cannot generate:\n  - " + "\n  - ".join(found))


def sample(model, sampling: Sampling, device: str, on_token: Callable[[int], None] | None = None) -> list[str]:
    """num_samples continuations of the prompt, each the prompt and its new tokens decoded; one
    generator seeded with sampling.seed draws them all, so the same seed gives the same texts.
    on_token: called with each token of the first sample as it is drawn (up to its end)."""
    check(model, sampling)
    prompt = encode(sampling.prompt)
    idx = torch.tensor([prompt] * sampling.num_samples, dtype=torch.long, device=device)
    generator = torch.Generator(device=device).manual_seed(sampling.seed)
    rows, first_ended = [[] for _ in range(sampling.num_samples)], False
    for token in model.stream(idx, sampling.max_new_tokens, temperature=sampling.temperature, top_k=sampling.top_k,
                              generator=generator, stop_token=EOT if sampling.stop_at_eot else None):
        for row, t in zip(rows, token[:, 0].tolist()):
            row.append(t)
        first_ended = first_ended or (sampling.stop_at_eot and rows[0][-1] == EOT)
        if on_token is not None and not first_ended:
            on_token(rows[0][-1])
    texts = []
    for row in rows:
        if sampling.stop_at_eot and EOT in row:
            row = row[:row.index(EOT)]
        texts.append(gpt2_encoding().decode(prompt + row))
    return texts


def resolve_device(device: str | None) -> str:
    """--device, or the best one here; DeviceError for one this machine lacks."""
    device = device or default_device()
    check_device(device)
    return device


def print_samples(source: Source, sampling: Sampling, device: str) -> None:
    """What train.py --inference and gptlab generate print: the source, then each sample."""
    check(source.model, sampling)  # before a large model is copied to the device
    model = source.model.to(device).eval()
    print(f"{source.description}, on {device}", flush=True)
    if sampling.num_samples == 1:  # one sample is printed as its tokens come
        print(f"--- sample 0\n{sampling.prompt}", end="", flush=True)
        sample(model, sampling, device, on_token=_printer())
        print()
        return
    for i, text in enumerate(sample(model, sampling, device, on_token=_progress(sampling.max_new_tokens))):
        print(f"--- sample {i}\n{text}")


def _printer() -> Callable[[int], None]:
    """Print each token's text as it comes; a character split over tokens is printed when whole."""
    decoder, enc = codecs.getincrementaldecoder("utf-8")(errors="replace"), gpt2_encoding()
    return lambda token: print(decoder.decode(enc.decode_single_token_bytes(token)), end="", flush=True)


def _progress(total: int) -> Callable[[int], None]:
    """While several samples are drawn as one batch, a line on stderr every few seconds: how far they are."""
    state = {"tokens": 0, "said": time.monotonic()}

    def tick(_: int) -> None:
        state["tokens"] += 1
        if time.monotonic() - state["said"] > 5:
            print(f"generating: {state['tokens']:,} of {total:,} tokens a sample", file=sys.stderr, flush=True)
            state["said"] = time.monotonic()
    return tick


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gptlab generate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    p.add_argument("source", metavar="SOURCE",
                   help="a checkpoint (model_NNNNN.pt), a run's log directory (its newest intact checkpoint), or "
                        "OpenAI's GPT-2: gpt2, gpt2-medium, gpt2-large, gpt2-xl (the Hugging Face hub or its local "
                        "cache) or a local Hugging Face GPT-2 directory; GPT-2 needs pip install -e \".[hf]\"")
    add_sampling_arguments(p)
    p.add_argument("--seed", metavar="S", type=int, default=DEFAULT_SEED,
                   help="the sampling seed (default %(default)s)")
    p.add_argument("--ignore-eot", action="store_true",
                   help="go on past <|endoftext|> instead of ending the sample there")
    p.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: the best available)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        device = resolve_device(args.device)
        print_samples(load_source(args.source), sampling_from_args(args, stop_at_eot=not args.ignore_eot), device)
    except (GenerationError, CheckpointError, DeviceError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
