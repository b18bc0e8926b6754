"""Prepare FineWeb-Edu sample-10BT as GPT-2 token shards, as build-nanogpt's fineweb.py:

    pip install -e ".[data]" && python -m gptlab.data.fineweb   # ~10B tokens, 100 shards

Each document becomes <|endoftext|> followed by its tokens; shards hold 100M uint16 tokens
and the first is validation. Tokenisation runs in a process pool. Progress is recorded
after every shard, so an interrupted preparation continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from gptlab.data.shards import DEFAULT_WORKERS, ShardBuffer, in_order, save_shard, tokenize
from gptlab.files import atomic_write_text
from gptlab.network import HUB, hub_offline, said_offline
from gptlab.paths import DATA_DIR

DEFAULT_DIR = DATA_DIR / "edu_fineweb10B"
SHARD_SIZE = 100_000_000
PREFIX = "edufineweb"


def read_progress(out_dir: Path) -> dict:
    path = Path(out_dir) / "progress.json"
    return json.loads(path.read_text()) if path.is_file() else {"shards": 0, "document": 0, "token": 0}


def _write_progress(out_dir: Path, progress: dict) -> None:
    atomic_write_text(Path(out_dir) / "progress.json", json.dumps(progress))


def write_shards(token_docs: Iterable[np.ndarray], out_dir: Path, shard_size: int = SHARD_SIZE,
                 prefix: str = PREFIX, progress: dict | None = None) -> int:
    """Pack tokenised documents into shards; `token_docs` starts at `progress["document"]`
    (the document the next shard starts in, `progress["token"]` tokens into it).
    Returns the number of shards in out_dir once done."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    progress = dict(progress or read_progress(out_dir))
    shard, document, skip = progress["shards"], progress["document"], progress["token"]
    buffer = ShardBuffer(shard_size)
    for tokens in token_docs:
        base, skip = skip, 0
        for full, consumed in buffer.add(tokens[base:]):
            split = "val" if shard == 0 else "train"
            save_shard(out_dir / f"{prefix}_{split}_{shard:06d}.npy", full)
            shard += 1
            next_start = (document, base + consumed) if base + consumed < len(tokens) else (document + 1, 0)
            _write_progress(out_dir, {"shards": shard, "document": next_start[0], "token": next_start[1]})
        document += 1
    if buffer.filled:
        split = "val" if shard == 0 else "train"
        save_shard(out_dir / f"{prefix}_{split}_{shard:06d}.npy", buffer.pending())
        shard += 1
    _write_progress(out_dir, {"shards": shard, "document": document, "token": 0, "complete": True})
    return shard


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--out", type=Path, default=DEFAULT_DIR, help=f"shard directory (default {DEFAULT_DIR})")
    parser.add_argument("--shard-size", type=int, default=SHARD_SIZE, help="tokens per shard")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="tokenising processes")
    args = parser.parse_args(argv)
    progress = read_progress(args.out)
    if progress.get("complete"):
        print(f"{args.out} already holds {progress['shards']} complete shards")
        return
    if hub_offline():
        raise SystemExit(f"error: FineWeb-Edu streams from the Hugging Face hub ({HUB}), which cannot be reached from "
                         f"here{' (HF_HUB_OFFLINE is set)' if said_offline() else ''}. Run this where there is "
                         f"network and copy {args.out} here (training reads the shards in it), or download the "
                         f"sample-10BT parquet files elsewhere and prepare them here with `gptlab prepare --input "
                         f"DIR --out {args.out}`; runs without prepared data train on the embedded corpus")
    try:
        from datasets import load_dataset
    except ImportError:
        raise SystemExit('preparing FineWeb-Edu needs the datasets package: pip install -e ".[data]"') from None
    dataset = load_dataset("HuggingFaceFW/fineweb-edu", name="sample-10BT", split="train", streaming=True)
    texts = (row["text"] for row in dataset.skip(progress["document"]))
    print(f"writing shards to {args.out}, from shard {progress['shards']} (document {progress['document']})")
    n = write_shards(in_order(tokenize, texts, args.workers), args.out, args.shard_size, progress=progress)
    print(f"done: {n} shards in {args.out}")


if __name__ == "__main__":
    main()
