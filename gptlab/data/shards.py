"""Token shards: 1-D uint16 arrays of GPT-2 tokens saved with `np.save`, as build-nanogpt
writes them (`<prefix>_val_000000.npy`, `<prefix>_train_000001.npy`, ...). Every write is
atomic, so a shard that exists under its final name is complete."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gptlab.files import atomic_write


class DataError(RuntimeError):
    """Training data is missing or damaged; the message says where and what to do."""


def save_shard(path: Path, tokens: np.ndarray) -> None:
    """Write tokens to path as uint16, atomically."""
    atomic_write(path, lambda f: np.save(f, np.asarray(tokens, dtype=np.uint16)))


def list_shards(data_dir: Path, split: str) -> list[Path]:
    return sorted(p for p in Path(data_dir).glob(f"*_{split}_*.npy") if not p.name.startswith("."))


def load_shard(path: Path) -> np.ndarray:
    """The shard's tokens, memory-mapped; a damaged file is a `DataError` naming it."""
    try:
        tokens = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:  # numpy's message would suggest unpickling: never for data
        reason = ("it holds Python objects, not tokens" if "allow_pickle" in str(e) or "Python objects" in str(e)
                  else type(e).__name__)
        raise DataError(f"shard {path} is not a token shard gptlab can read ({reason}); it is damaged or was not "
                        f"written by gptlab: delete it and prepare the data again") from None
    if tokens.dtype != np.uint16 or tokens.ndim != 1:
        raise DataError(f"shard {path} holds {tokens.dtype} of shape {tokens.shape}, not 1-D uint16 tokens; "
                        f"prepare the data again")
    return tokens
