"""Which tokens a run trains on: prepared shards (FineWeb-Edu, or a corpus of one's own
prepared by `gptlab prepare`), or the embedded corpus."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gptlab.core.config import TrainingConfig
from gptlab.data import embedded, prepare
from gptlab.data.fineweb import DEFAULT_DIR
from gptlab.data.loader import TokenLoader
from gptlab.data.shards import DataError, list_shards, load_shard


@dataclass
class Data:
    train: TokenLoader
    val: TokenLoader
    description: str
    fingerprint: str  # of the shard list: which data this is, wherever it lies


def open_data(train: TrainingConfig, B: int, T: int, rank: int = 0, world_size: int = 1, accum: int = 1,
              vocab_size: int | None = None) -> Data:
    """data="fineweb": shards in data_dir (an error if there are none); "embedded": the
    embedded corpus; "auto": shards if the default directory holds any, else the embedded
    corpus. A data_dir that is set names the shards to train on whatever `data` says, so that
    `--preset small train.data_dir=DIR` trains on DIR, not on the preset's embedded corpus."""
    data_dir = Path(train.data_dir) if train.data_dir else DEFAULT_DIR
    use_shards = train.data == "fineweb" or bool(train.data_dir) or (train.data == "auto" and data_dir.is_dir())
    if use_shards:
        val_paths, train_paths = list_shards(data_dir, "val"), list_shards(data_dir, "train")
        if not train_paths or not val_paths:
            raise DataError(f"data directory {data_dir} holds {len(train_paths)} train and {len(val_paths)} val "
                            f"shards (*_train_*.npy, *_val_*.npy); prepare FineWeb-Edu with "
                            f"`python -m gptlab.data.fineweb --out {data_dir}`, or a corpus of your own with "
                            f"`gptlab prepare --input FILE_OR_DIR --out {data_dir}`, or train on the embedded "
                            f"corpus with train.data=embedded")
        train_shards, val_shards = [load_shard(p) for p in train_paths], [load_shard(p) for p in val_paths]
        train_names, val_names = [p.name for p in train_paths], [p.name for p in val_paths]
        total = sum(len(s) for s in train_shards)
        description = (f"{describe_shards(data_dir)} in {data_dir}: {len(train_shards)} train shards ({total:,} "
                       f"tokens), {len(val_shards)} val")
    else:
        splits = embedded.embedded_splits()
        train_shards, val_shards = [splits["train"]], [splits["val"]]
        train_names, val_names = ["embedded train"], ["embedded val"]
        description = embedded.describe(splits)
        if train.data == "auto":
            description += f" (no prepared data in {data_dir})"
    try:
        train_loader = TokenLoader(train_shards, B, T, rank, world_size, accum, name="train data", vocab_size=vocab_size,
                                   order_seed=train.seed if train.data_order == "seeded" else None)
        # every rank reads the whole validation stream and scores its share of the batches; batches of no more
        # sequences than val_tokens holds, so that a small validation split is scored whole
        val_loader = TokenLoader(val_shards, max(1, min(B, train.val_tokens // T)), T, 0, 1, name="val data",
                                 vocab_size=vocab_size)
    except DataError:
        if use_shards or B * T * world_size * accum < 100_000:
            raise
        raise DataError(f"this is the GPT-2 124M recipe ({train.total_batch_size:,} tokens a step in sequences of {T}), "
                        f"made for FineWeb-Edu on GPUs, and no FineWeb-Edu shards are prepared in {data_dir}, so it "
                        f"fell back to the small embedded corpus, far too small for it. Prepare the data with "
                        f"`pip install -e \".[data]\" && python -m gptlab.data.fineweb` (10B tokens), or on a CPU "
                        f"train the same experiment small: --preset smoke (a minute) or --preset small "
                        f"(a few minutes)") from None
    available = sum(len(s) for s in val_shards) - 1
    if train.val_tokens > available:
        fits = available // T * T
        raise DataError(f"train.val_tokens={train.val_tokens:,} but the validation data ({', '.join(val_names)}) holds "
                        f"{available:,} tokens to score in sequences of {T}; "
                        + (f"lower it: train.val_tokens={fits}" if fits else
                           "that is not one sequence: prepare the corpus with a larger --val-ratio, or train with a "
                           "shorter train.sequence_length"))
    return Data(train=train_loader, val=val_loader, description=description,
                fingerprint=fingerprint({"train": (train_names, train_shards), "val": (val_names, val_shards)}))


def describe_shards(data_dir: Path) -> str:
    """What the shards in data_dir are: the corpus `gptlab prepare` names in its meta.json,
    FineWeb-Edu in its default directory or where its preparation left progress.json."""
    prepared = prepare.describe(data_dir)
    if prepared:
        return prepared
    if data_dir.resolve() == DEFAULT_DIR.resolve() or (data_dir / "progress.json").is_file():
        return "FineWeb-Edu shards"
    return "token shards"


def fingerprint(splits: dict[str, tuple[list[str], list[np.ndarray]]]) -> str:
    """What identifies a data set however it was moved: each shard's name, length and first tokens."""
    digest = hashlib.sha256()
    for split, (names, shards) in splits.items():
        for name, tokens in zip(names, shards):
            digest.update(f"{split}/{name}/{len(tokens)}/".encode())
            digest.update(np.ascontiguousarray(tokens[:4096]).tobytes())
    return digest.hexdigest()[:16]
