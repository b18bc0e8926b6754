"""HellaSwag (Zellers et al. 2019) validation accuracy, scored as build-nanogpt does.

Each example is a context and four endings. Every ending is scored by the model's
per-token cross-entropy on the ending's tokens given the context; `acc` picks the ending
with the lowest total loss, `acc_norm` the one with the lowest mean loss per token.
The official validation file (10,042 examples) is downloaded once into data/hellaswag/.

Examples are rendered once (`load`) and scored many to a forward pass: their 4 rows each
are stacked and right-padded to the widest, which cannot change the logits of a causal
model's real tokens, and the ending mask keeps the padding out of the loss. Logits are
computed only where an ending token is predicted (`GPT.features`, then the LM head on
those positions): the vocabulary projection of every other position would be wasted.
"""

from __future__ import annotations

import contextlib
import json
import math
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

from gptlab.files import atomic_write_bytes
from gptlab.paths import DATA_DIR

URL = "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl"
CACHE = DATA_DIR / "hellaswag" / "hellaswag_val.jsonl"
EXAMPLES_PER_PASS = 16  # on a GPU (see Evaluator.hellaswag)
MAX_TOKENS_PER_PASS = 16384  # rows x width of a pass: a quarter of training's 64 x 1024, so its logits fit
Rendered = tuple[torch.Tensor, torch.Tensor, int]  # (tokens (4, L), mask (4, L) of the ending tokens, label)


def fetch(path: Path = CACHE, url: str = URL, timeout: float = 20.0) -> tuple[Path | None, str]:
    """(path of the validation file, "") once a valid one is on disk, else (None, why not).
    A cached file that is damaged or incomplete is kept aside and downloaded again."""
    if path.is_file():
        problem = problem_with(path)
        if problem is None:
            return path, ""
        aside = path.with_name(path.name + ".damaged")
        path.replace(aside)
        print(f"the cached HellaSwag file was damaged ({problem}); kept as {aside.name}, downloading it again")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = response.read()
        atomic_write_bytes(path, data)
    except OSError as e:
        return None, f"could not download {url}: {getattr(e, 'reason', e)}"
    problem = problem_with(path)
    return (path, "") if problem is None else (None, f"the download from {url} is not a HellaSwag file: {problem}")


def problem_with(path: Path) -> str | None:
    """None when every line of path is a HellaSwag example (ctx, label, four endings), else the
    first problem, with its line number."""
    number = 0
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                try:
                    example = json.loads(line)
                except json.JSONDecodeError as e:
                    return f"line {number} is not JSON ({e.msg})"
                if not (isinstance(example, dict) and isinstance(example.get("ctx"), str)
                        and isinstance(example.get("endings"), list) and len(example["endings"]) == 4
                        and example.get("label") in (0, 1, 2, 3, "0", "1", "2", "3")):
                    return f"line {number} is not an example with a ctx, four endings and a label 0-3"
    except (OSError, UnicodeDecodeError) as e:
        return f"it cannot be read ({type(e).__name__})"
    return None if number else "it is empty"


def examples(path: Path, limit: int = 0) -> Iterator[dict]:
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if limit and i >= limit:
                return
            yield json.loads(line)


def render(example: dict, encode, max_len: int) -> Rendered:
    """(tokens (4, L), mask (4, L) of the ending tokens, label). The context is cut from
    the left when context + ending would not fit in max_len tokens."""
    ctx = encode(example["ctx"])
    endings = [encode(" " + ending) for ending in example["endings"]]  # GPT-2 tokens carry the space
    rows = []
    for end in endings:
        keep = max(0, max_len - len(end))
        context = ctx[len(ctx) - keep:] if keep < len(ctx) else ctx
        rows.append(((context + end)[:max_len], ([0] * len(context) + [1] * len(end))[:max_len]))
    width = max(len(row) for row, _ in rows)
    tokens = torch.zeros(4, width, dtype=torch.long)
    mask = torch.zeros(4, width, dtype=torch.long)
    for i, (row, row_mask) in enumerate(rows):
        tokens[i, :len(row)] = torch.tensor(row)
        mask[i, :len(row)] = torch.tensor(row_mask)
    return tokens, mask, int(example["label"])


@torch.no_grad()
def ending_losses(logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum, mean) cross-entropy over each row's masked tokens."""
    losses = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), tokens[:, 1:].flatten(), reduction="none")
    losses = losses.view(tokens.size(0), -1) * mask[:, 1:]
    total = losses.sum(dim=1)
    return total, total / mask[:, 1:].sum(dim=1)


def load(path: Path, encode, max_len: int, limit: int = 0) -> list[Rendered]:
    """The examples of path (the first `limit`, if given), each rendered for max_len tokens."""
    return [render(example, encode, max_len) for example in examples(path, limit)]


def collate(batch: list[Rendered]) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens (4k, L), mask (4k, L)) of k rendered examples, right-padded to the widest."""
    width = max(tokens.size(1) for tokens, _, _ in batch)
    tokens = torch.cat([F.pad(tokens, (0, width - tokens.size(1))) for tokens, _, _ in batch])
    mask = torch.cat([F.pad(mask, (0, width - mask.size(1))) for _, mask, _ in batch])
    return tokens, mask


@torch.no_grad()
def predictions(model, rendered: list[Rendered], device: str, rank: int = 0, world_size: int = 1, autocast=None,
                batch_examples: int = EXAMPLES_PER_PASS) -> dict[int, tuple[int, int]]:
    """{i: (ending of lowest total loss, ending of lowest mean loss)} for this rank's share of
    rendered: the examples with i % world_size == rank, up to batch_examples of them per
    forward pass (fewer when 4 rows of the widest example would pass MAX_TOKENS_PER_PASS).
    Every rank runs the same number of forward passes (a short share is padded with passes
    that are not counted), so that a sharded model's collectives line up."""
    widest = max((tokens.size(1) for tokens, _, _ in rendered), default=1)
    per_pass = max(1, min(batch_examples, MAX_TOKENS_PER_PASS // (4 * widest)))  # the same on every rank
    passes = math.ceil(math.ceil(len(rendered) / world_size) / per_pass)
    # widest first, so that rows of a pass have similar widths and a pass too big for memory fails at once
    share = sorted(range(rank, len(rendered), world_size), key=lambda i: -rendered[i][0].size(1))
    picks = {}
    for p in range(passes):
        batch = share[p * per_pass:(p + 1) * per_pass]
        tokens, mask = (t.to(device) for t in collate([rendered[i] for i in batch or [0]]))
        with autocast or contextlib.nullcontext():
            hidden, _ = model.features(tokens)
            # logits only where an ending token is predicted: a third of the positions, and the LM head
            # over the vocabulary is most of a small model's cost
            rows, cols = mask[:, 1:].nonzero(as_tuple=True)
            logits = model.lm_head(hidden[rows, cols])
        if not batch:
            continue
        losses = F.cross_entropy(logits.float(), tokens[rows, cols + 1], reduction="none")
        sums = torch.zeros(tokens.size(0), device=losses.device).index_add_(0, rows, losses)
        means = sums / mask[:, 1:].sum(dim=1)
        total, mean = (per_row.view(-1, 4).argmin(dim=1).tolist() for per_row in (sums, means))
        picks.update(zip(batch, zip(total, mean)))
    return picks


def score_rendered(model, rendered: list[Rendered], device: str, rank: int = 0, world_size: int = 1, autocast=None,
                   batch_examples: int = EXAMPLES_PER_PASS) -> tuple[int, int, int]:
    """(examples, correct by total loss, correct by mean loss) over this rank's share of rendered."""
    picks = predictions(model, rendered, device, rank, world_size, autocast, batch_examples)
    labels = {i: rendered[i][2] for i in picks}
    return (len(picks), sum(by_total == labels[i] for i, (by_total, _) in picks.items()),
            sum(by_mean == labels[i] for i, (_, by_mean) in picks.items()))


def score(model, path: Path, encode, device: str, rank: int = 0, world_size: int = 1, limit: int = 0,
          autocast=None, batch_examples: int = EXAMPLES_PER_PASS) -> tuple[int, int, int]:
    """score_rendered over the examples of path (the first `limit`, if given)."""
    return score_rendered(model, load(path, encode, model.config.block_size, limit), device, rank, world_size,
                          autocast, batch_examples)
