"""Token shards: 1-D uint16 arrays of GPT-2 tokens saved with `np.save`, as build-nanogpt
writes them (`<prefix>_val_000000.npy`, `<prefix>_train_000001.npy`, ...). Every write is
atomic, so a shard that exists under its final name is complete.

Writing them is shared by every preparation (FineWeb-Edu's, a user's own corpus): documents
are tokenised in a process pool, in order, and packed into shards as a buffer fills."""

from __future__ import annotations

import itertools
import multiprocessing as mp
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np

from gptlab.data.tokenizer import EOT, gpt2_encoding
from gptlab.files import atomic_write

DEFAULT_WORKERS = max(1, (os.cpu_count() or 2) // 2)


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


def tokenize(text: str, eot: bool = True) -> np.ndarray:
    """One document's GPT-2 tokens as uint16, after <|endoftext|> unless eot=False."""
    tokens = np.array(([EOT] if eot else []) + gpt2_encoding().encode_ordinary(text), dtype=np.int64)
    if len(tokens) and tokens.max() >= 2 ** 16:
        raise DataError(f"token id {int(tokens.max())} does not fit the shards' uint16 (ids below 65,536); "
                        f"the tokenizer is not GPT-2's (ids below 50,257)")
    return tokens.astype(np.uint16)


class ShardBuffer:
    """The tokens of the next shard: documents go in, and each time `size` tokens are there
    `add` yields the full shard, to be written before the generator is resumed."""

    def __init__(self, size: int, pending: np.ndarray | None = None):
        self.tokens, self.filled = np.empty(size, dtype=np.uint16), 0
        if pending is not None:
            self.tokens[:len(pending)], self.filled = pending, len(pending)

    def add(self, tokens: np.ndarray) -> Iterator[tuple[np.ndarray, int]]:
        """Yields (full shard, how many of `tokens` are in it or in shards before it)."""
        size, offset = len(self.tokens), 0
        while len(tokens) - offset >= size - self.filled:  # these tokens complete a shard
            take = size - self.filled
            self.tokens[self.filled:] = tokens[offset:offset + take]
            offset, self.filled = offset + take, 0
            yield self.tokens, offset
        self.tokens[self.filled:self.filled + len(tokens) - offset] = tokens[offset:]
        self.filled += len(tokens) - offset

    def pending(self) -> np.ndarray:
        """The tokens waiting for the next shard."""
        return self.tokens[:self.filled]


Item, Result = TypeVar("Item"), TypeVar("Result")


def in_order(fn: Callable[[Item], Result], items: Iterable[Item], workers: int,
             chunk: int = 64) -> Iterator[Result]:
    """fn over items in `workers` processes, results in the order of the items, so the output
    is the same whatever the number of workers. A bounded number of chunks is in flight
    (Pool.imap would read all of `items` ahead, a corpus larger than memory included)."""
    if workers <= 1:
        yield from map(fn, items)
        return
    items = iter(items)
    with mp.Pool(workers) as pool:
        in_flight = deque()
        while batch := list(itertools.islice(items, chunk)):
            in_flight.append(pool.apply_async(_map, (fn, batch)))
            if len(in_flight) > 2 * workers:
                yield from in_flight.popleft().get()
        while in_flight:
            yield from in_flight.popleft().get()


def _map(fn, batch):
    return [fn(item) for item in batch]
