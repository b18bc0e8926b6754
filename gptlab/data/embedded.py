"""The embedded corpus: English text every Python installation has, so a run needs no
download. Documents are the pages of CPython's bundled help topics (`pydoc_data`) and the
docstrings of each standard-library module. Every tenth document (by sorted name) is
validation, so the two splits never share text. Within each split the documents are
shuffled once with a fixed seed, so that the stream does not change kind halfway (help
topics, then docstrings) and the loss curve shows learning, not the corpus's order.
Tokenised once, cached under data/."""

from __future__ import annotations

import ast
import hashlib
import random
import sys
import sysconfig
from pathlib import Path

import numpy as np

from gptlab.data.shards import load_shard, save_shard
from gptlab.data.tokenizer import EOT, gpt2_encoding
from gptlab.paths import DATA_DIR

VAL_EVERY = 10
SHUFFLE_SEED = 1337
VERSION = 2  # of the cached token files: 2 = documents shuffled within each split


def documents() -> dict[str, str]:
    from pydoc_data.topics import topics
    docs = {f"topic:{name}": text for name, text in topics.items()}
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.rglob("*.py")):
        relative = path.relative_to(stdlib)
        if relative.parts[0] in ("site-packages", "test", "idlelib") or "tests" in relative.parts:
            continue
        text = _docstrings(path)
        if text:
            docs[f"module:{relative.as_posix()}"] = text
    return docs


def _docstrings(path: Path) -> str:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return ""
    nodes = (n for n in ast.walk(tree)
             if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)))
    return "\n\n".join(filter(None, (ast.get_docstring(n) for n in nodes)))


def corpus_dir() -> Path:
    """One cache per Python version, since the text comes from the installation."""
    return DATA_DIR / "embedded" / f"python{sys.version_info.major}.{sys.version_info.minor}"


def split_names(docs: dict[str, str]) -> dict[str, list[str]]:
    """The document names of each split, in the order the stream holds them."""
    names = sorted(docs)
    val = set(names[::VAL_EVERY])
    splits = {"train": [n for n in names if n not in val], "val": [n for n in names if n in val]}
    for split, chosen in splits.items():
        random.Random(f"{SHUFFLE_SEED}-{split}").shuffle(chosen)
    return splits


def embedded_splits() -> dict[str, np.ndarray]:
    """{"train": tokens, "val": tokens}, building and caching them on first use."""
    directory = corpus_dir()
    paths = {split: directory / f"embedded_v{VERSION}_{split}_000000.npy" for split in ("train", "val")}
    if not all(p.is_file() for p in paths.values()):
        directory.mkdir(parents=True, exist_ok=True)
        enc = gpt2_encoding()
        docs = documents()
        for split, names in split_names(docs).items():
            chosen = [docs[n] for n in names]
            tokens = [[EOT] + t for t in enc.encode_ordinary_batch(chosen, num_threads=4)]
            save_shard(paths[split], np.concatenate([np.array(t, dtype=np.uint16) for t in tokens]))
    return {split: load_shard(p) for split, p in paths.items()}


def describe(splits: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(splits["train"][:100_000]).tobytes()).hexdigest()[:12]
    return (f"embedded corpus (CPython {sys.version.split()[0]} help topics and stdlib docstrings): "
            f"{len(splits['train']):,} train / {len(splits['val']):,} val tokens, sha256 of its first train tokens "
            f"{digest}")
