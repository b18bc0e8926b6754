"""Length extrapolation: validation loss at 1x, 2x, 4x and 8x the block_size a model was
trained with, on the same tokens at every length (the measurement of ALiBi, Press et al.
2022, §4: a model trained on L tokens scored on inputs of length L' > L).

The first `tokens` + 1 tokens of the validation stream are cut, back to back, into sequences
of factor * block_size tokens for every factor, so that every length predicts the same
`tokens` targets: the losses differ only in how much context each prediction sees and in
which positions it sits at. An encoding with a length limit (learned positions) gets no loss
past it, and the reason instead.

    gptlab eval-lengths CKPT|DIR [--tokens N] [--factors 1 2 4 8] [--device cpu]

CKPT is a checkpoint; DIR a run's log directory (its newest intact checkpoint) or a directory
of runs (each directory under it that holds checkpoints). Each run's result is printed and
stored in its `run.json` under "lengths".
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from gptlab.core.config import ConfigError
from gptlab.data.shards import DataError
from gptlab.data.sources import open_data
from gptlab.files import DirectoryLock, atomic_write_text
from gptlab.paths import missing
from gptlab.training.checkpoint import (NAME, CheckpointError, experiment_of, find_checkpoint, list_checkpoints,
                                        load_checkpoint, model_from_state)
from gptlab.training.distributed import DeviceError, check_device, default_device
from gptlab.training.run import autocast_context

FACTORS = (1, 2, 4, 8)
DEFAULT_TOKENS = 1_048_576  # where the run's config names no val_tokens
BATCH_TOKENS = 16_384  # tokens per forward pass, whatever the length


class LengthError(ValueError):
    """The evaluation cannot be made as asked; the message says why and what to do."""


class LengthLoss(NamedTuple):
    loss: float | None  # mean cross-entropy per token; None where the model is not defined at this length
    why: str | None = None  # why there is no loss


def whole_tokens(tokens: int, block_size: int, factors=FACTORS) -> int:
    """tokens rounded down to whole sequences of every length factor * block_size."""
    step = math.lcm(*(f * block_size for f in factors))
    return tokens // step * step


def stream_length(source) -> int:
    """Tokens in a validation source: a 1-D tensor or array, or a TokenLoader (its shards in order)."""
    return sum(len(s) for s in source.shards) if hasattr(source, "shards") else len(source)


def read_stream(source, n: int) -> torch.Tensor:
    """The first n tokens of a validation source, as int64."""
    if hasattr(source, "shards"):
        parts, have = [], 0
        for shard in source.shards:
            if have == n:
                break
            parts.append(np.asarray(shard[:n - have], dtype=np.int64))
            have += len(parts[-1])
        tokens = torch.from_numpy(np.concatenate(parts))
    else:
        tokens = torch.as_tensor(source[:n], dtype=torch.long)
    if len(tokens) < n:
        raise LengthError(f"the validation stream holds {len(tokens):,} tokens; scoring {n - 1:,} needs {n:,} "
                          f"(one more for the last target); lower --tokens")
    return tokens


@torch.no_grad()
def length_losses(model, val_tokens, block_size: int, factors=FACTORS, *, tokens: int, device: str = "cpu",
                  autocast=None) -> dict[int, LengthLoss]:
    """{factor: LengthLoss} for sequences of factor * block_size tokens, each length scoring the
    same `tokens` targets of val_tokens (a 1-D tensor or array, or a TokenLoader); tokens must be
    whole sequences of every length (see whole_tokens)."""
    longest = max(factors) * block_size
    if tokens < 1 or whole_tokens(tokens, block_size, factors) != tokens:
        raise LengthError(f"tokens={tokens:,} is not a whole number of sequences of every length "
                          f"({', '.join(str(f * block_size) for f in factors)}); use "
                          f"{max(whole_tokens(tokens, block_size, factors), longest):,}")
    stream = read_stream(val_tokens, tokens + 1)
    if int(stream.max()) >= model.config.vocab_size:
        raise DataError(f"the validation stream holds token id {int(stream.max())}, at or above the model's "
                        f"vocab_size={model.config.vocab_size}: it is not the data this model was trained on")
    stream = stream.to(device)
    was_training = model.training
    model.eval()
    results = {}
    for factor in factors:
        length = factor * block_size
        problem = model.transformer.wpe.length_problem(model.config, length)
        if problem:
            results[factor] = LengthLoss(None, problem)
            continue
        x, y = stream[:-1].view(-1, length), stream[1:].view(-1, length)
        rows = max(1, BATCH_TOKENS // length)
        total = torch.zeros((), dtype=torch.float64, device=device)
        for i in range(0, x.size(0), rows):
            with autocast or contextlib.nullcontext():
                ce = model(x[i:i + rows], y[i:i + rows]).ce
            total += ce.double() * y[i:i + rows].numel()
        loss = total.item() / tokens
        results[factor] = LengthLoss(loss) if math.isfinite(loss) else LengthLoss(None, f"the loss is {loss}")
    model.train(was_training)
    return results


def find_runs(path: Path) -> list[Path]:
    """The checkpoint file given, or the log directories of the runs under path."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise LengthError(f"{missing(path)}; give a checkpoint (model_NNNNN.pt), a run's log directory, "
                          f"or a directory of runs")
    if list_checkpoints(path):
        return [path]
    runs = sorted({p.parent for p in path.rglob("model_*.pt") if NAME.fullmatch(p.name)})
    if not runs:
        raise LengthError(f"{path} holds no checkpoint (model_NNNNN.pt), neither in itself nor in a directory "
                          f"under it; give a run's log directory, such as log_train/<experiment>/log")
    return runs


def validation_source(state: dict, vocab_size: int):
    """The validation stream of the checkpoint's run, and a description of it."""
    train = experiment_of(state).training_config
    if hasattr(train, "val_tokens"):  # how much the run's own validation scores does not bound this one
        train = dataclasses.replace(train, val_tokens=train.sequence_length)
    data = open_data(train, B=1, T=1, vocab_size=vocab_size)
    description = data.description
    if state.get("data_fingerprint") not in (None, data.fingerprint):
        description += " (not the data the run was trained on: its fingerprint differs)"
    return data.val, description


def evaluate_run(path: Path, factors: list[int], tokens: int | None, device: str) -> None:
    """Score one run (a checkpoint, or a log directory's newest intact one), print its table and
    record it in the run's run.json."""
    checkpoint = path if path.is_file() else newest_intact(path)
    state = load_checkpoint(checkpoint)
    model = model_from_state(state).to(device).eval()
    block_size = model.config.block_size
    source, description = validation_source(state, model.config.vocab_size)
    available = stream_length(source) - 1
    wanted = tokens if tokens is not None else min(available,
                                                   state["training_config"].get("val_tokens", DEFAULT_TOKENS))
    n = whole_tokens(wanted, block_size, factors)
    if n == 0:
        raise LengthError(f"{checkpoint}: {wanted:,} tokens do not fill one sequence of the longest length "
                          f"{max(factors)} x block_size={block_size} = {max(factors) * block_size:,}; "
                          f"give --tokens {max(factors) * block_size:,} or more (the stream holds {available:,})")
    autocast = autocast_context(experiment_of(state).training_config, torch.device(device).type)  # as trained
    results = length_losses(model, source, block_size, factors, tokens=n, device=device, autocast=autocast)
    step = state["step"]
    print(f"{checkpoint}: experiment {state['experiment']['name']}, step {step}, block_size {block_size}, "
          f"{n:,} validation tokens at every length ({description})")
    print(f"  {'length':>8} {'tokens/seq':>11} {'val loss':>9}")
    for factor, result in results.items():
        loss = f"{result.loss:9.4f}" if result.loss is not None else f"{'-':>9}"
        print(f"  {str(factor) + 'x':>8} {factor * block_size:>11,} {loss}")
    for why in dict.fromkeys(r.why for r in results.values() if r.why):
        print(f"  not scored at {', '.join(f'{f}x' for f, r in results.items() if r.why == why)}: {why}")
    entry = {"block_size": block_size, "tokens": n, "step": step, "data": description,
             "losses": {str(f): r.loss for f, r in results.items()}}
    why = {str(f): r.why for f, r in results.items() if r.why}
    if why:
        entry["why"] = why
    record, lock = checkpoint.parent / "run.json", DirectoryLock(checkpoint.parent)
    if not lock.acquire():  # the run is training, and rewrites its record: this result would be lost
        print(f"  not recorded: {checkpoint.parent} is in use by a training run (pid {lock.holder()}); run "
              f"eval-lengths again when it has finished")
        return
    try:
        update_record(record, "lengths", entry)
    finally:
        lock.release()
    print(f"  recorded in {record} under \"lengths\"")


def newest_intact(log_dir: Path) -> Path:
    """The run's newest intact checkpoint; the damaged ones skipped are named on stderr."""
    try:
        return find_checkpoint(log_dir)
    except CheckpointError as e:
        raise LengthError(str(e)) from None


def update_record(path: Path, key: str, value) -> None:
    """Set key in the JSON object at path (created if absent), keeping its other keys; atomic."""
    record = {}
    if path.exists():
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise LengthError(f"{path} is not valid JSON ({e}); it was left as it is: repair or remove it") from None
        if not isinstance(record, dict):
            raise LengthError(f"{path} holds a JSON {type(record).__name__}, not an object; it was left as it is")
    record[key] = value
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gptlab eval-lengths", description="Validation loss at multiples of the "
                                "training block_size, on the same tokens at every length; each result goes into "
                                "the run's run.json under \"lengths\".", allow_abbrev=False)
    p.add_argument("path", type=Path, metavar="CKPT|DIR",
                   help="a checkpoint, a run's log directory (its newest intact checkpoint), or a directory of runs")
    p.add_argument("--tokens", type=int, help="validation tokens scored at every length, rounded down to whole "
                   "sequences of the longest (default: the run's val_tokens, at most what the stream holds)")
    p.add_argument("--factors", type=int, nargs="+", default=list(FACTORS), help="multiples of block_size (default: "
                   "1 2 4 8)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: the best available)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    device = args.device or default_device()
    try:
        if args.tokens is not None and args.tokens < 1:
            raise LengthError(f"--tokens {args.tokens}: give a positive number of tokens")
        if min(args.factors) < 1:
            raise LengthError(f"--factors {' '.join(map(str, args.factors))}: give positive whole multiples")
        check_device(device)
        runs = find_runs(args.path)
    except (LengthError, DeviceError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    status = 0
    for run in runs:
        try:
            evaluate_run(run, sorted(set(args.factors)), args.tokens, device)
        except (LengthError, CheckpointError, DataError, ConfigError) as e:
            print(f"error: {e}" if str(run) in str(e) else f"error: {run}: {e}", file=sys.stderr)
            status = 2
    return status


if __name__ == "__main__":
    sys.exit(main())
