"""Prepare your own corpus as GPT-2 token shards, the kind FineWeb-Edu's preparation writes:

    gptlab prepare --input corpus/ --out data/mine        # or python -m gptlab.data.prepare
    python train.py --experiment baseline --preset small train.data_dir=data/mine

Input: JSON Lines (.jsonl), JSON (.json) and Parquet (.parquet; needs pyarrow:
`pip install -e ".[prepare]"`) files. --input names a file or a directory searched
recursively (hidden files and folders left out, files of other kinds ignored and counted);
the files are read in sorted path order, several --input in the order given. A record is a
JSON object (a Parquet row) whose --text-field holds one document. JSON Lines and Parquet are
streamed, line by line and in record batches; a .json file that holds one JSON array is read
whole into memory (keep such files smaller than memory, or convert them to JSON Lines); any
other .json file is read as JSON Lines (what `datasets`' to_json writes). Blank lines are
ignored.

Output, in --out: shards of --shard-size tokens (default 100M), `<prefix>_val_000000.npy, ...`
and `<prefix>_train_000000.npy, ...` (--prefix, default corpus), 1-D uint16, each split
numbered from 0 in input order, its last shard shorter; and meta.json: the arguments, the
counts and the progress. Each document
is <|endoftext|> followed by its tokens, so documents never run into each other (--no-eot:
its tokens alone).

Splits: a document is validation when the first 8 bytes of the sha256 of its text (UTF-8),
as a fraction of 2**64, are below --val-ratio (default 0.01): the same text lands in the same split whatever
the files, their order or the number of workers, and a duplicated document never straddles
the two. Or --split-field NAME --val-value V: records whose field, as text, equals V are
validation and all others train (the summary counts each value). Each split must get a
document.

Filters: --min-length and --max-length count a document's own tokens (not the
<|endoftext|>); documents outside are skipped and counted, never truncated (a cut document
would teach the model endings that are not endings). Empty texts are skipped and counted.

Bad records: a line that is not JSON, a record that is not an object, one without the text
field (or the split field), or whose text is not a string stops the preparation with an error
naming the file and the line (JSON Lines) or record (JSON array, Parquet row), counted from 1;
with --skip-bad such records are skipped and counted instead. A file that cannot be read at
all (a damaged JSON array or Parquet file, a Parquet file without the column) is an error
either way.

Resuming: after every shard, meta.json records (atomically) how many shards each split has
and where the input continues; the tokens waiting for the other split's next shard are
appended to a hidden `.pending-<split>-<n>.bin` first. Rerun the same command after a kill
and it continues to exactly the shards an uninterrupted run writes. A finished directory
says so and does nothing; other arguments, or input files that changed (by size), are
refused. An error or Ctrl-C before the first shard leaves nothing behind (a rerun may change
the arguments). A directory holding files this tool did not write is refused: it never
overwrites or deletes a user's files.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import re
import shlex
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from gptlab.data.fineweb import SHARD_SIZE
from gptlab.data.shards import DEFAULT_WORKERS, DataError, ShardBuffer, in_order, save_shard, tokenize
from gptlab.files import DirectoryLock, atomic_write_text, fsync_dir, remove_temporaries, write_failure
from gptlab.paths import missing

SPLITS = ("val", "train")
SUFFIXES = (".jsonl", ".json", ".parquet")
META = "meta.json"
WRITTEN_BY = "gptlab.data.prepare"
DEFAULT_VAL_RATIO = 0.01
# a bad record: an error, or with --skip-bad skipped and counted under this reason
BAD = ("malformed JSON", "not a JSON object", "no text field", "text not a string", "no split field")
MAX_SPLIT_VALUES = 20  # distinct values of --split-field counted by name in the summary
INSTALL_PYARROW = 'pip install -e ".[prepare]"'


@dataclass(frozen=True)
class Options:
    """The arguments that decide the shards, recorded in meta.json (the number of workers
    does not: the shards are the same whatever it is)."""
    inputs: tuple[str, ...]
    text_field: str = "text"
    val_ratio: float | None = None  # None: DEFAULT_VAL_RATIO, unless split_field decides
    split_field: str = ""
    val_value: str | None = None
    shard_size: int = SHARD_SIZE
    min_length: int = 0  # tokens of the document, without the <|endoftext|>
    max_length: int = 0  # 0 = no limit
    eot: bool = True
    prefix: str = "corpus"
    skip_bad: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(str(p) for p in self.inputs))
        if self.val_ratio is None and not self.split_field:
            object.__setattr__(self, "val_ratio", DEFAULT_VAL_RATIO)
        problems = []
        if not self.inputs:
            problems.append("no --input: name a .jsonl, .json or .parquet file or a directory of them")
        if not self.text_field:
            problems.append("--text-field is empty: name the field that holds each document's text")
        if self.split_field and self.val_ratio is not None:
            problems.append(f"--val-ratio {self.val_ratio} and --split-field {self.split_field!r} both choose the "
                            f"validation documents: give one")
        if self.split_field and self.val_value is None:
            problems.append(f"--split-field {self.split_field!r} needs --val-value, the value that marks validation "
                            f"records (e.g. --val-value validation)")
        if self.val_value is not None and not self.split_field:
            problems.append(f"--val-value {self.val_value!r} needs --split-field, the field it is compared with")
        if self.val_ratio is not None and not 0 < self.val_ratio < 1:
            problems.append(f"--val-ratio {self.val_ratio} must be between 0 and 1 (both excluded): each split "
                            f"needs documents")
        if self.shard_size < 1:
            problems.append(f"--shard-size {self.shard_size} must be at least 1 token")
        if self.min_length < 0 or self.max_length < 0:
            problems.append(f"--min-length {self.min_length} and --max-length {self.max_length} must be 0 or more")
        if self.max_length and self.min_length > self.max_length:
            problems.append(f"--min-length {self.min_length} is above --max-length {self.max_length}: every "
                            f"document would be skipped")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.prefix):
            problems.append(f"--prefix {self.prefix!r} must be letters, digits, '.', '_' or '-', not starting with "
                            f"'.', '_' or '-'")
        elif any(re.search(f"_{split}_", f"{self.prefix}_{other}_") for split in SPLITS for other in SPLITS
                 if split != other):
            problems.append(f"--prefix {self.prefix!r} would make the shards of one split look like the other's "
                            f"(*_val_*.npy, *_train_*.npy): choose one without '_val' or '_train'")
        if problems:
            raise DataError("the arguments do not fit:\n  - " + "\n  - ".join(problems))


# each field of Options as the command line writes it
FLAGS = {f.name: "--" + f.name.replace("_", "-") for f in dataclasses.fields(Options)} | {
    "inputs": "--input", "eot": "--no-eot"}


# ---------------------------------------------------------------- reading the input

@dataclass
class Document:
    """One record of the input: where it is, and what becomes of it. Travels through the
    tokenising processes (text in, tokens out)."""
    file: int  # index in the list of input files
    record: int  # line of a JSON Lines file, element of an array, row of a Parquet file; from 0
    byte: int  # where its line starts (JSON Lines): a resumed preparation seeks there
    end: int  # where the next line starts
    where: str  # for messages: "PATH line 3"
    text: str | None = None  # to tokenise; None when skipped
    split: str = ""
    split_value: str | None = None
    problem: str = ""  # why it is skipped: one of BAD, or "empty text"
    share: float | None = None  # the text's hash as a fraction of 2**64: the split by --val-ratio (val below it)
    detail: str = ""  # the message that names the bad record
    tokens: np.ndarray | None = None


@dataclass
class _Bad:
    reason: str
    message: str


def input_files(inputs: tuple[str, ...], out: Path) -> tuple[list[str], list[Path], list[Path]]:
    """The inputs resolved, the files to read in order, and the files of other kinds ignored."""
    resolved, files, ignored = [], [], []
    out = out.resolve()
    for given in inputs:
        path = Path(given).expanduser().resolve()
        if not path.exists():
            raise DataError(f"--input {missing(given)}")
        resolved.append(str(path))
        if path.is_dir():
            if out == path or path in out.parents:
                raise DataError(f"--out {out} lies inside --input {given}: its files would be read as input; "
                                f"choose an output directory outside the corpus")
            found = [p for p in sorted(path.rglob("*")) if p.is_file()
                     and not any(part.startswith(".") for part in p.relative_to(path).parts)]
            kept = [p for p in found if p.suffix.lower() in SUFFIXES]
            if not kept:
                raise DataError(f"--input {given} holds no .jsonl, .json or .parquet files"
                                + (f" (it holds {len(found)} others, e.g. {found[0].name})" if found else ""))
            files += kept
            ignored += [p for p in found if p.suffix.lower() not in SUFFIXES]
        elif path.suffix.lower() in SUFFIXES:
            files.append(path)
        else:
            raise DataError(f"--input {given} is not a .jsonl, .json or .parquet file")
    twice = [p for p, n in Counter(files).items() if n > 1]
    if twice:
        raise DataError(f"{twice[0]} is named twice by --input: its documents would be read twice")
    if any(p.suffix.lower() == ".parquet" for p in files):
        _parquet_module(next(p for p in files if p.suffix.lower() == ".parquet"))
    return resolved, files, ignored


def _parquet_module(path: Path):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path} is a Parquet file, and reading Parquet needs pyarrow: {INSTALL_PYARROW}") from None
    return pq


def read_documents(files: list[Path], options: Options, start: dict) -> Iterator[Document]:
    """Every record from `start` (a file, a record in it and, for JSON Lines, its byte) on."""
    columns = list(dict.fromkeys(c for c in (options.text_field, options.split_field) if c))
    for i in range(start["file"], len(files)):
        record, byte = (start["record"], start["byte"]) if i == start["file"] else (0, 0)
        path = files[i]
        kind = path.suffix.lower()
        records = (_parquet_rows(path, record, columns) if kind == ".parquet" else
                   _json_records(path, record, byte) if kind == ".json" else _json_lines(path, record, byte))
        for n, line_start, line_end, where, value in records:
            yield _document(Document(i, n, line_start, line_end, where), value, options)


def _json_lines(path: Path, record: int, byte: int, hint: str = ""):
    with open(path, "rb") as f:
        f.seek(byte)
        for n, line in enumerate(f, record):
            start, byte = byte, byte + len(line)
            if not line.strip():
                continue
            where = f"{path} line {n + 1}"
            try:
                value = json.loads(line)
            except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
                why = f"{e.msg} at column {e.colno}" if isinstance(e, json.JSONDecodeError) else "not UTF-8 text"
                value = _Bad("malformed JSON", f"{where} is not valid JSON ({why}){hint}")
            yield n, start, byte, where, value


def _json_records(path: Path, record: int, byte: int):
    """A .json file: one array of records, read whole; anything else is JSON Lines."""
    with open(path, "rb") as f:
        head = b""
        while not head and (chunk := f.read(4096)):
            head = chunk.lstrip(b"\xef\xbb\xbf \t\r\n")
        if not head.startswith(b"["):
            yield from _json_lines(path, record, byte, hint=" (a .json file that does not start with '[' is read "
                                                            "as JSON Lines, one record a line)")
            return
        f.seek(0)
        try:
            records = json.load(f)
        except ValueError as e:
            where = f" at line {e.lineno} column {e.colno}" if isinstance(e, json.JSONDecodeError) else ""
            raise DataError(f"{path} cannot be read as JSON ({getattr(e, 'msg', 'not UTF-8 text')}{where}); a .json "
                            f"file starting with '[' must hold one JSON array of records") from None
    for n in range(record, len(records)):
        yield n, 0, 0, f"{path} record {n + 1}", records[n]


def _parquet_rows(path: Path, record: int, columns: list[str]):
    pq = _parquet_module(path)
    try:
        parquet = pq.ParquetFile(path)
        names = parquet.schema_arrow.names
        missing = [c for c in columns if c not in names]
        if missing:
            raise DataError(f"{path} has no column {missing[0]!r}; its columns are {', '.join(map(repr, names))}: "
                            f"name the text column with --text-field (the split column with --split-field)")
        first, row = 0, 0  # whole row groups before `record` are not read
        while first < parquet.num_row_groups and row + parquet.metadata.row_group(first).num_rows <= record:
            row += parquet.metadata.row_group(first).num_rows
            first += 1
        for batch in parquet.iter_batches(batch_size=1024, row_groups=range(first, parquet.num_row_groups),
                                          columns=columns):
            values = {c: batch.column(c).to_pylist() for c in columns}
            for k in range(batch.num_rows):
                if row >= record:
                    yield row, 0, 0, f"{path} row {row + 1}", {c: values[c][k] for c in columns}
                row += 1
    except (OSError, ValueError) as e:  # pyarrow's ArrowIOError, ArrowInvalid
        raise DataError(f"{path} cannot be read as Parquet ({e})") from None


def _document(doc: Document, value, options: Options) -> Document:
    """Which split the record's text goes to, or why it is skipped."""
    field = options.text_field
    if isinstance(value, _Bad):
        doc.problem, doc.detail = value.reason, value.message
    elif not isinstance(value, dict):
        doc.problem, doc.detail = "not a JSON object", f"{doc.where} is {_json_kind(value)}, not a JSON object"
    elif field not in value:
        doc.problem = "no text field"
        doc.detail = (f"{doc.where} has no field {field!r}; its fields are "
                      f"{', '.join(map(repr, value)) or 'none'}: name the text field with --text-field")
    elif not isinstance(value[field], str):
        doc.problem = "text not a string"
        doc.detail = f"{doc.where}: field {field!r} is {_json_kind(value[field])}, not a string"
    elif options.split_field and options.split_field not in value:
        doc.problem = "no split field"
        doc.detail = (f"{doc.where} has no field {options.split_field!r} (--split-field); its fields are "
                      f"{', '.join(map(repr, value))}")
    else:
        text = value[field]
        if options.split_field:
            doc.split_value = str(value[options.split_field])
            doc.split = "val" if doc.split_value == options.val_value else "train"
        else:
            doc.share = hash_share(text)
            doc.split = "val" if doc.share < options.val_ratio else "train"
        if text:
            doc.text = text
        else:
            doc.problem = "empty text"
    return doc


def hash_share(text: str) -> float:
    """The first 8 bytes of the text's sha256 as a fraction of 2**64: a document is in the validation
    split when this is below --val-ratio."""
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64


def _json_kind(value) -> str:
    kinds = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    return kinds.get(type(value), type(value).__name__) + ("" if value is None else f" ({str(value)[:40]!r})")


def _tokenize_document(doc: Document, eot: bool) -> Document:
    """In a tokenising process: the text's tokens replace the text."""
    if doc.text is not None:
        try:
            doc.tokens = tokenize(doc.text, eot)
        except DataError as e:
            raise DataError(f"{doc.where}: {e}") from None
        doc.text = None
    return doc


# ---------------------------------------------------------------- the output directory

def _shard_path(out: Path, prefix: str, split: str, index: int) -> Path:
    return out / f"{prefix}_{split}_{index:06d}.npy"


def _pending_path(out: Path, split: str, index: int) -> Path:
    """Tokens already read for shard `index` of split: kept for a resumed preparation."""
    return out / f".pending-{split}-{index:06d}.bin"


def _ours(name: str, prefix: str) -> bool:
    """Whether a preparation with this prefix writes files of this name."""
    temporary = re.fullmatch(r"\.(.+)\.tmp\d+-[0-9a-f]{8}", name)  # gptlab.files.temporary_path
    name = temporary.group(1) if temporary else name
    return (name in (META, ".lock") or re.fullmatch(rf"{re.escape(prefix)}_(val|train)_\d{{6}}\.npy", name) is not None
            or re.fullmatch(r"\.pending-(val|train)-\d{6}\.bin", name) is not None)


def read_meta(out: Path) -> dict | None:
    """The meta.json of a directory this tool prepared (None where there is none)."""
    path = Path(out) / META
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        meta = None
    if not isinstance(meta, dict) or meta.get("written_by") != WRITTEN_BY:
        raise DataError(f"{path} was not written by gptlab prepare: choose a new or empty --out directory "
                        f"(prepare never overwrites files it did not write)")
    return meta


def _check_out(out: Path, identity: dict, locked: bool) -> dict | None:
    """The meta.json of a preparation of these arguments in out, if one started; refuses a
    directory with files of anything else (`locked`: the .lock there is this process's)."""
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file, not a directory")
    if not out.is_dir():
        return None
    names = sorted(p.name for p in out.iterdir() if not (locked and p.name == ".lock"))
    meta = read_meta(out)
    if meta is None:
        if names:
            raise DataError(f"--out {out} holds files gptlab prepare did not write ({_some(names)}); choose a new "
                            f"or empty directory (prepare never overwrites files it did not write)")
        return None
    foreign = [n for n in names if not _ours(n, meta["arguments"]["prefix"])]
    if foreign:
        raise DataError(f"--out {out} holds files gptlab prepare did not write ({_some(foreign)}); move them "
                        f"away or choose another directory (prepare never overwrites files it did not write)")
    changes = _changes(meta, identity)
    if changes:
        state = "a finished" if meta["complete"] else "an unfinished"
        raise DataError(f"--out {out} holds {state} preparation with other arguments:\n  - "
                        + "\n  - ".join(changes) + f"\nrerun it as it was, or prepare into another --out directory "
                        f"(or delete {out}: it holds only that preparation's files)")
    for split in SPLITS:
        for index in range(meta["shards"][split]):
            if not _shard_path(out, meta["arguments"]["prefix"], split, index).is_file():
                raise DataError(f"{_shard_path(out, meta['arguments']['prefix'], split, index)}, written by this "
                                f"preparation, is missing: delete {out} and prepare again")
    return meta


def _changes(meta: dict, identity: dict) -> list[str]:
    """What differs between the preparation in meta and the one asked for now."""
    was, now = meta["arguments"], identity["arguments"]
    changes = [f"{FLAGS.get(k, k)}: was {was.get(k)!r}, now {now.get(k)!r}"
               for k in sorted(set(was) | set(now)) if was.get(k) != now.get(k)]
    if not changes and meta["files"] != identity["files"]:
        before, after = ({f["path"]: f["bytes"] for f in files} for files in (meta["files"], identity["files"]))
        differ = [p for p in sorted(set(before) | set(after)) if before.get(p) != after.get(p)]
        changes.append(f"the input files changed since: {_some(differ)} "
                       f"({len(before)} files of {sum(before.values()):,} bytes then, "
                       f"{len(after)} of {sum(after.values()):,} now)")
    return changes


def _some(names: list, n: int = 3) -> str:
    return ", ".join(map(str, names[:n])) + (f" and {len(names) - n} more" if len(names) > n else "")


# ---------------------------------------------------------------- preparing

def prepare(options: Options, out: Path, workers: int = DEFAULT_WORKERS) -> dict:
    """Write the shards of the inputs into out (or continue an interrupted preparation), and
    return its meta.json: counts, shards, and `done_before` when it had finished already."""
    out = Path(out).expanduser().absolute()
    if workers < 1:
        raise DataError(f"--workers {workers} must be at least 1")
    resolved, files, ignored = input_files(options.inputs, out)
    identity = {"written_by": WRITTEN_BY, "format": 1,
                "arguments": dataclasses.asdict(options) | {"inputs": resolved},
                "files": [{"path": str(p), "bytes": p.stat().st_size} for p in files]}
    lock = DirectoryLock(out)
    if out.is_dir() and lock.held():
        raise DataError(f"another preparation (pid {lock.holder()}) is writing to {out}; wait for it to end")
    _check_out(out, identity, locked=False)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    if not lock.acquire():
        raise DataError(f"another preparation (pid {lock.holder()}) is writing to {out}; wait for it to end")
    try:
        meta = _check_out(out, identity, locked=True)  # again, now that no one else writes there
        if meta is not None and meta["complete"]:
            return meta | {"done_before": True, "ignored": [str(p) for p in ignored]}
        if meta is None:
            meta = identity | {"complete": False, "shards": {s: 0 for s in SPLITS},
                               "resume": {"file": 0, "record": 0, "byte": 0, "token": 0},
                               "pending": {s: 0 for s in SPLITS},
                               "counts": {"records": 0, "skipped": {}, "split_values": {},
                                          **{s: {"documents": 0, "tokens": 0} for s in SPLITS}}}
            atomic_write_text(out / META, json.dumps(meta, indent=1))
        try:
            meta = _write_shards(options, out, files, meta, workers)
        except (DataError, KeyboardInterrupt) as e:
            written = len(list(out.glob(f"{options.prefix}_*_*.npy")))
            if written and isinstance(e, DataError):
                raise DataError(f"{e}\n{out} holds the {written} shards written before: rerun the same command to "
                                f"continue, or delete {out} to prepare with other arguments") from None
            if not written:  # nothing to continue: leave the directory as it was found
                (out / META).unlink(missing_ok=True)
                lock.release()
                if created and not any(out.iterdir()):
                    out.rmdir()
            raise
    finally:
        lock.release()
    return meta | {"ignored": [str(p) for p in ignored]}


def _write_shards(options: Options, out: Path, files: list[Path], meta: dict, workers: int) -> dict:
    writer, resume = ShardWriter(options, out, meta), meta["resume"]
    documents = in_order(partial(_tokenize_document, eot=options.eot), read_documents(files, options, resume),
                         workers)
    try:
        continuing = resume["token"] > 0  # the document the last shard ended inside: counted, partly written
        for doc in documents:
            if continuing:
                continuing = False
                if (doc.file, doc.record) != (resume["file"], resume["record"]) or doc.tokens is None \
                        or len(doc.tokens) <= resume["token"]:
                    raise DataError(f"{doc.where} is not the document the preparation stopped in: the input "
                                    f"changed")
                writer.add(doc, resume["token"])
            elif writer.keep(doc):
                writer.add(doc)
    finally:
        documents.close()  # ends the tokenising processes, after an error too
    return writer.finish()


class ShardWriter:
    """Both splits' shards, written into out as they fill, and the counts; after every shard
    meta.json records where the input continues, so that a rerun carries on from there."""

    def __init__(self, options: Options, out: Path, meta: dict):
        self.options, self.out, self.meta = options, out, meta
        self.shards, self.counts = dict(meta["shards"]), meta["counts"]
        self.skipped, self.split_values = Counter(self.counts["skipped"]), Counter(self.counts["split_values"])
        for pattern in (f"{options.prefix}_*.npy", META, ".pending-*.bin"):
            remove_temporaries(out, pattern)
        self.buffers, self.saved = {}, {}  # saved: tokens of each split's next shard in its pending file
        for split in SPLITS:
            pending = _load_pending(out, split, self.shards[split], meta["pending"][split])
            self.buffers[split] = ShardBuffer(options.shard_size, pending)
            self.saved[split] = self.buffers[split].filled
        for path in out.glob(".pending-*.bin"):  # of shards written since, or left by a kill between two writes
            if not any(path == _pending_path(out, s, self.shards[s]) and self.saved[s] for s in SPLITS):
                path.unlink()

    def keep(self, doc: Document) -> bool:
        """Counts the document; whether it goes into a shard."""
        self.counts["records"] += 1
        reason = doc.problem
        if reason in BAD and not self.options.skip_bad:
            raise DataError(f"{doc.detail}; --skip-bad skips such records and counts them")
        if not reason:
            length = len(doc.tokens) - self.options.eot
            if length < self.options.min_length:
                reason = "shorter than --min-length"
            elif self.options.max_length and length > self.options.max_length:
                reason = "longer than --max-length"
        if reason:
            self.skipped[reason] += 1
            return False
        self.counts[doc.split]["documents"] += 1
        self.counts[doc.split]["tokens"] += len(doc.tokens)
        if doc.share is not None:  # the range of the documents' hashes: which --val-ratio could split them
            low, high = self.counts.get("shares") or (doc.share, doc.share)
            self.counts["shares"] = [min(low, doc.share), max(high, doc.share)]
        if doc.split_value is not None:
            known = doc.split_value in self.split_values or len(self.split_values) < MAX_SPLIT_VALUES
            self.split_values[doc.split_value if known else "(other values)"] += 1
        return True

    def add(self, doc: Document, start: int = 0) -> None:
        """The document's tokens from `start` on into its split, writing each shard that fills."""
        split = doc.split
        for full, consumed in self.buffers[split].add(doc.tokens[start:]):
            save_shard(_shard_path(self.out, self.options.prefix, split, self.shards[split]), full)
            self.shards[split] += 1
            self.saved[split] = 0
            at = start + consumed
            self.checkpoint({"file": doc.file, "record": doc.record, "byte": doc.byte, "token": at}
                            if at < len(doc.tokens) else
                            {"file": doc.file, "record": doc.record + 1, "byte": doc.end, "token": 0})

    def checkpoint(self, position: dict) -> None:
        """Record that the input continues at `position`: the tokens read for both splits' next
        shards are appended to their pending files, then meta.json says how many there are (a
        kill leaves that many, perhaps more, never fewer)."""
        for split in SPLITS:
            new = self.buffers[split].pending()[self.saved[split]:]
            if len(new):
                path = _pending_path(self.out, split, self.shards[split])
                created = not path.exists()
                with open(path, "ab") as f:
                    f.write(new.tobytes())
                    f.flush()
                    os.fsync(f.fileno())
                if created:
                    fsync_dir(self.out)
                self.saved[split] = self.buffers[split].filled
        self._write_meta(resume=position, pending=dict(self.saved))
        for split in SPLITS:  # the pending tokens of a shard written now
            if self.shards[split]:
                _pending_path(self.out, split, self.shards[split] - 1).unlink(missing_ok=True)

    def finish(self) -> dict:
        """The last, shorter shard of each split; meta.json says the preparation is complete."""
        self.counts.update(skipped=dict(self.skipped), split_values=dict(self.split_values))
        _check_splits(self.options, self.counts)
        for split in SPLITS:
            if self.buffers[split].filled:
                save_shard(_shard_path(self.out, self.options.prefix, split, self.shards[split]),
                           self.buffers[split].pending())
                self.shards[split] += 1
        self._write_meta(complete=True, resume=None, pending={s: 0 for s in SPLITS})
        for path in self.out.glob(".pending-*.bin"):
            path.unlink()
        return self.meta

    def _write_meta(self, **fields) -> None:
        self.counts.update(skipped=dict(self.skipped), split_values=dict(self.split_values))
        self.meta.update(shards=dict(self.shards), counts=self.counts, **fields)
        atomic_write_text(self.out / META, json.dumps(self.meta, indent=1))


def _load_pending(out: Path, split: str, index: int, n: int) -> np.ndarray | None:
    if not n:
        return None
    path = _pending_path(out, split, index)
    tokens = np.fromfile(path, dtype=np.uint16, count=n) if path.is_file() else np.empty(0, np.uint16)
    if len(tokens) < n:
        raise DataError(f"{path} holds {len(tokens):,} of the {n:,} tokens {out / META} records: the preparation "
                        f"cannot continue; delete {out} and prepare again")
    os.truncate(path, n * tokens.itemsize)  # what a killed append wrote after them
    return tokens


def _check_splits(options: Options, counts: dict) -> None:
    val, train = counts["val"]["documents"], counts["train"]["documents"]
    if val and train:
        return
    if not val and not train:
        raise DataError(f"the input holds no documents to train on: {counts['records']:,} records read"
                        + (f", skipped: {_reasons(counts['skipped'])}" if counts["skipped"] else ""))
    empty, docs = ("validation", train) if not val else ("train", val)
    if options.split_field:
        chooser = (f"no record has {options.split_field}={options.val_value!r}" if not val else
                   f"every record has {options.split_field}={options.val_value!r}")
        raise DataError(f"the {empty} split is empty: {chooser}")
    low, high = counts.get("shares") or (0.0, 1.0)
    if low == high:  # one text: a split by document cannot put it on both sides, whatever the ratio
        raise DataError(f"the {empty} split is empty: the split is by document (a hash of its text decides), and "
                        f"all {docs:,} documents have one text (a single document, or copies of it), so no "
                        f"--val-ratio can put some in each split. Cut the text into several documents (one per "
                        f"paragraph or chapter, each a record), or name each record's split with --split-field")
    advice = (f"raise it to {_significant(low, math.ceil)} or more (just above the smallest document hash: that "
              f"document would be the whole validation split)" if not val else
              f"lower it to {_significant(high, math.floor)} or below (the largest document hash: that document "
              f"alone would be train)")
    raise DataError(f"the {empty} split is empty: --val-ratio {options.val_ratio} chose "
                    f"{'none' if not val else 'all'} of the {docs:,} documents by a hash of each text: {advice}")


def _significant(x: float, rounding, digits: int = 3) -> str:
    """x to `digits` significant digits, rounded the way `rounding` (math.ceil or math.floor) goes."""
    scale = 10 ** (digits - 1 - math.floor(math.log10(x))) if x > 0 else 1
    return f"{rounding(x * scale) / scale:.{digits}g}"


def _reasons(skipped: dict) -> str:
    return ", ".join(f"{n:,} {reason}" for reason, n in sorted(skipped.items(), key=lambda kv: -kv[1]))


def train_command(out: Path, counts: dict) -> str:
    """The command that trains the small preset on the prepared corpus, with the validation
    budget lowered where the split holds less than the preset scores."""
    from gptlab.training.presets import PRESETS
    small = PRESETS["small"][1]
    T = small["sequence_length"]
    command = f"python train.py --experiment baseline --preset small train.data_dir={shlex.quote(str(out))}"
    available = counts["val"]["tokens"] - 1
    if small["val_tokens"] > available >= T:
        command += f" train.val_tokens={available // T * T}"
    return command


def _notes(meta: dict) -> list[str]:
    """What keeps the small preset from training on the shards as they are."""
    from gptlab.training.presets import PRESETS
    small = PRESETS["small"][1]
    size, counts = meta["arguments"]["shard_size"], meta["counts"]
    by_field = bool(meta["arguments"]["split_field"])
    notes = []
    for split, step in (("val", small["sequence_length"]),  # validation needs one whole sequence at least
                        ("train", small["total_batch_size"])):
        longest = min(size, counts[split]["tokens"])
        if longest < step + 1:
            cures = ["a larger --shard-size"] if size < step + 1 else []
            if counts[split]["tokens"] < step + 1:
                cures.append("a larger --val-ratio" if split == "val" and not by_field else "more documents")
            notes.append(f"note: the longest {split} shard holds {longest:,} tokens, fewer than --preset small "
                         f"reads at a time ({step + 1:,}): use {' and '.join(cures)}, or train with a smaller "
                         f"total_batch_size, micro_batch_size or sequence_length")
    return notes


def summary(meta: dict, out: Path) -> str:
    counts, shards = meta["counts"], meta["shards"]
    files = len(meta["files"])
    lines = [f"{'already prepared' if meta.get('done_before') else 'prepared'} {out}: {counts['records']:,} records "
             f"read from {files} file{'s' * (files != 1)}, "
             + (f"{sum(counts['skipped'].values()):,} skipped ({_reasons(counts['skipped'])})"
                if counts["skipped"] else "none skipped")]
    for split in SPLITS:
        n = shards[split]
        lines.append(f"  {split + ':':<6} {counts[split]['documents']:,} documents, {counts[split]['tokens']:,} tokens "
                     f"in {n} shard{'s' * (n != 1)}")
    if counts["split_values"]:
        values = ", ".join(f"{v!r} {n:,}" for v, n in sorted(counts["split_values"].items(), key=lambda kv: -kv[1]))
        lines.append(f"  documents by {meta['arguments']['split_field']!r} (only {meta['arguments']['val_value']!r} "
                     f"is val): {values}")
    if meta.get("ignored"):
        lines.append(f"  ignored {len(meta['ignored'])} files that are not .jsonl, .json or .parquet: "
                     f"{_some(meta['ignored'])}")
    if meta.get("done_before"):
        lines.append("  (finished before: nothing to do)")
    lines += _notes(meta)
    lines.append(f"train on it:\n  {train_command(out, counts)}")
    return "\n".join(lines)


def describe(data_dir: Path) -> str | None:
    """How a run names a directory this tool prepared, from its meta.json (None for others)."""
    try:
        meta = read_meta(data_dir)
    except DataError:
        return None
    if meta is None:
        return None
    inputs = meta["arguments"]["inputs"]
    return f"corpus prepared from {_some(inputs, 2)} (gptlab prepare{'' if meta['complete'] else ', unfinished'})"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gptlab prepare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    p.add_argument("--input", action="append", required=True, metavar="PATH",
                   help="a .jsonl, .json or .parquet file, or a directory of them; repeatable")
    p.add_argument("--out", type=Path, required=True, help="the directory the shards go to")
    p.add_argument("--text-field", default="text", help="the field holding each document (default text)")
    p.add_argument("--val-ratio", type=float, default=None,
                   help=f"fraction of documents for validation, chosen by a hash of the text "
                        f"(default {DEFAULT_VAL_RATIO})")
    p.add_argument("--split-field", default="", help="instead: a field naming each record's split")
    p.add_argument("--val-value", default=None, help="the --split-field value of validation records")
    p.add_argument("--shard-size", type=int, default=SHARD_SIZE, help=f"tokens per shard (default {SHARD_SIZE:,})")
    p.add_argument("--min-length", type=int, default=0, help="skip documents of fewer tokens")
    p.add_argument("--max-length", type=int, default=0, help="skip documents of more tokens (0: no limit)")
    p.add_argument("--no-eot", action="store_true", help="no <|endoftext|> before each document")
    p.add_argument("--prefix", default="corpus", help="shard file names' prefix (default corpus)")
    p.add_argument("--skip-bad", action="store_true",
                   help="skip and count malformed lines and records without a string text field")
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                   help=f"tokenising processes (default {DEFAULT_WORKERS}); the shards do not depend on it")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        options = Options(inputs=tuple(args.input), text_field=args.text_field, val_ratio=args.val_ratio,
                          split_field=args.split_field, val_value=args.val_value, shard_size=args.shard_size,
                          min_length=args.min_length, max_length=args.max_length, eot=not args.no_eot,
                          prefix=args.prefix, skip_bad=args.skip_bad)
        meta = prepare(options, args.out, args.workers)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: rerun the same command to continue from the last shard written", file=sys.stderr)
        return 130
    except OSError as e:  # a shard, the progress record or the lock could not be written
        print(f"error: {e.filename or args.out}: {write_failure(e, Path(args.out))}. The shards written so far are "
              f"kept: fix that (free disk space), then rerun the same command to continue from the last shard "
              f"written", file=sys.stderr)
        return 1
    print(summary(meta, Path(args.out).expanduser().absolute()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
