"""`gptlab prepare`: a user's own corpus as training shards, checked against the GPT-2
tokenizer and a hash split computed here, through every input kind, interruption and mistake."""

import hashlib
import json
import os
import random
import shlex
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from gptlab.cli import main as gptlab_main
from gptlab.core.config import TrainingConfig
from gptlab.data import prepare, shards
from gptlab.data.prepare import Options, main
from gptlab.data.shards import list_shards, load_shard
from gptlab.data.sources import open_data
from gptlab.data.tokenizer import EOT, gpt2_encoding
from gptlab.paths import REPO_ROOT
from gptlab.training.logger import read_log

WORDS = ("the a model learns text from tokens naïve café ∑ 42 shards of data, and: reads; every line "
         "\"quoted\" end.").split()


def texts(n: int, seed: int = 0, longest: int = 40) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(1, longest))) + ("\n" if i % 5 == 0 else "")
            for i in range(n)]


def write_jsonl(path, records, end="\n"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + end for r in records))
    return path


def write_parquet(path, records, row_group_size=7):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(records), path, row_group_size=row_group_size)
    return path


def is_val(text: str, ratio: float) -> bool:
    """The split rule written out: the first 8 bytes of sha256(text) as a fraction of 2**64."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:16], 16) < ratio * 2 ** 64


def stream(docs: list[str], eot: bool = True) -> np.ndarray:
    enc = gpt2_encoding()
    return np.array([t for d in docs for t in ([EOT] if eot else []) + enc.encode_ordinary(d)], dtype=np.int64)


def read_split(directory, split: str) -> np.ndarray:
    return np.concatenate([load_shard(p) for p in list_shards(directory, split)]).astype(np.int64)


def files_of(directory) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def refused(capsys, *args) -> str:
    code, out, err = run(capsys, *args)
    assert code == 2 and err.startswith("error: ") and err.count("error:") == 1, (code, out, err)
    return err


def test_documents_become_eot_separated_tokens_in_the_split_their_hash_chooses(tmp_path, capsys):
    docs = texts(120)
    write_jsonl(tmp_path / "c.jsonl", [{"text": d, "id": i} for i, d in enumerate(docs)])
    out = tmp_path / "out"
    code, stdout, _ = run(capsys, "--input", tmp_path / "c.jsonl", "--out", out, "--val-ratio", 0.25,
                          "--shard-size", 50, "--workers", 1)
    assert code == 0
    val_docs, train_docs = [d for d in docs if is_val(d, 0.25)], [d for d in docs if not is_val(d, 0.25)]
    assert 10 < len(val_docs) < 50
    for split, split_docs in (("val", val_docs), ("train", train_docs)):
        expected = stream(split_docs)
        assert np.array_equal(read_split(out, split), expected)
        paths = list_shards(out, split)
        assert [p.name for p in paths] == [f"corpus_{split}_{i:06d}.npy" for i in range(len(paths))]
        assert [len(load_shard(p)) for p in paths] == [50] * (len(paths) - 1) + [len(expected) - 50 * (len(paths) - 1)]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["complete"] and meta["counts"]["records"] == 120
    assert meta["counts"]["val"] == {"documents": len(val_docs), "tokens": len(stream(val_docs))}
    assert f"val:   {len(val_docs)} documents, {len(stream(val_docs)):,} tokens" in stdout
    assert f"--preset small train.data_dir={out}" in stdout
    assert stdout.rstrip().endswith(prepare.train_command(out, meta["counts"]))


def test_json_array_parquet_and_a_directory_tree_read_in_sorted_path_order(tmp_path, capsys):
    docs = texts(60, seed=1)
    tree = tmp_path / "corpus"
    write_parquet(tree / "c.parquet", [{"text": d, "n": i} for i, d in enumerate(docs[40:])])
    write_jsonl(tree / "b" / "2.jsonl", [{"text": d} for d in docs[25:40]], end="\r\n")
    (tree / "a.json").write_text(json.dumps([{"text": d} for d in docs[:25]], indent=2))
    (tree / "b" / "1.json").write_text("")  # empty: contributes nothing
    (tree / ".hidden").mkdir()
    write_jsonl(tree / ".hidden" / "x.jsonl", [{"text": "never read"}])
    (tree / "README.md").write_text("not a corpus file")
    code, stdout, _ = run(capsys, "--input", tree, "--out", tmp_path / "out", "--val-ratio", 0.3)
    assert code == 0 and "ignored 1 files" in stdout and "README.md" in stdout
    assert np.array_equal(read_split(tmp_path / "out", "val"), stream([d for d in docs if is_val(d, 0.3)]))
    assert np.array_equal(read_split(tmp_path / "out", "train"), stream([d for d in docs if not is_val(d, 0.3)]))
    # two --input in the order given
    code, _, _ = run(capsys, "--input", tree / "c.parquet", "--input", tree / "a.json", "--out", tmp_path / "two",
                     "--val-ratio", 0.3, "--no-eot")
    reordered = docs[40:] + docs[:25]
    assert code == 0
    assert np.array_equal(read_split(tmp_path / "two", "train"),
                          stream([d for d in reordered if not is_val(d, 0.3)], eot=False))


def test_split_field_chooses_validation_and_the_summary_counts_each_value(tmp_path, capsys):
    docs = texts(30, seed=2)
    splits = ["validation" if i % 4 == 0 else "test" if i % 4 == 1 else "train" for i in range(30)]
    write_jsonl(tmp_path / "c.jsonl", [{"content": d, "split": s} for d, s in zip(docs, splits)])
    code, stdout, _ = run(capsys, "--input", tmp_path / "c.jsonl", "--out", tmp_path / "out", "--text-field",
                          "content", "--split-field", "split", "--val-value", "validation")
    assert code == 0
    assert np.array_equal(read_split(tmp_path / "out", "val"), stream(docs[::4]))
    assert np.array_equal(read_split(tmp_path / "out", "train"),
                          stream([d for d, s in zip(docs, splits) if s != "validation"]))
    assert "'train' 14, 'validation' 8, 'test' 8" in stdout
    err = refused(capsys, "--input", tmp_path / "c.jsonl", "--out", tmp_path / "o2", "--text-field", "content",
                  "--split-field", "split", "--val-value", "dev", "--shard-size", 100)
    assert "validation split is empty" in err and "no record has split='dev'" in err
    written = len(list_shards(tmp_path / "o2", "train"))
    assert written > 1 and f"{tmp_path / 'o2'} holds the {written} shards written before" in err


def test_min_and_max_length_skip_documents_by_their_own_tokens_and_count_them(tmp_path, capsys):
    enc = gpt2_encoding()
    docs = texts(80, seed=3)
    write_jsonl(tmp_path / "c.jsonl", [{"text": d} for d in docs] + [{"text": ""}])
    code, stdout, _ = run(capsys, "--input", tmp_path / "c.jsonl", "--out", tmp_path / "out", "--val-ratio", 0.2,
                          "--min-length", 10, "--max-length", 30)
    kept = [d for d in docs if 10 <= len(enc.encode_ordinary(d)) <= 30]
    short = sum(len(enc.encode_ordinary(d)) < 10 for d in docs)
    long = sum(len(enc.encode_ordinary(d)) > 30 for d in docs)
    assert code == 0 and short and long
    assert np.array_equal(read_split(tmp_path / "out", "train"), stream([d for d in kept if not is_val(d, 0.2)]))
    skipped = json.loads((tmp_path / "out" / "meta.json").read_text())["counts"]["skipped"]
    assert skipped == {"shorter than --min-length": short, "longer than --max-length": long, "empty text": 1}
    assert f"{short} shorter than --min-length" in stdout and "1 empty text" in stdout


def test_a_malformed_line_is_named_by_file_and_line_or_skipped_and_counted(tmp_path, capsys):
    path = tmp_path / "c.jsonl"
    docs = texts(20, seed=4)
    lines = [json.dumps({"text": d}) for d in docs]
    lines[6] = '{"text": "cut off'
    lines[11] = '["an", "array"]'
    path.write_text("\n".join(lines[:9]) + "\n\n" + "\n".join(lines[9:]) + "\n")  # a blank line: ignored
    err = refused(capsys, "--input", path, "--out", tmp_path / "a", "--val-ratio", 0.3)
    assert f"{path} line 7 is not valid JSON" in err and "--skip-bad" in err
    assert not (tmp_path / "a").exists()  # with no shard written, nothing is left to refuse a rerun with --skip-bad
    code, stdout, _ = run(capsys, "--input", path, "--out", tmp_path / "a", "--val-ratio", 0.3, "--skip-bad")
    assert code == 0 and "2 skipped (1 malformed JSON, 1 not a JSON object)" in stdout
    good = [d for i, d in enumerate(docs) if i not in (6, 11)]
    assert np.array_equal(read_split(tmp_path / "a", "train"), stream([d for d in good if not is_val(d, 0.3)]))
    path.write_text("\n".join(lines[:6] + lines[7:]) + "\n")
    assert f"{path} line 11 is an array" in refused(capsys, "--input", path, "--out", tmp_path / "d")


def test_a_record_without_a_string_text_field_is_named_with_the_fields_it_has(tmp_path, capsys):
    docs = texts(10, seed=5)
    records = [{"text": d} for d in docs]
    records[3] = {"body": "x", "title": "y"}
    write_jsonl(tmp_path / "c.jsonl", records)
    err = refused(capsys, "--input", tmp_path / "c.jsonl", "--out", tmp_path / "a")
    assert f"{tmp_path / 'c.jsonl'} line 4 has no field 'text'; its fields are 'body', 'title'" in err
    assert "--text-field" in err
    records[3] = {"text": 12}
    (tmp_path / "d.json").write_text(json.dumps(records))
    err = refused(capsys, "--input", tmp_path / "d.json", "--out", tmp_path / "b")
    assert f"{tmp_path / 'd.json'} record 4: field 'text' is a number" in err and "not a string" in err
    write_parquet(tmp_path / "e.parquet", [{"body": d} for d in docs])
    err = refused(capsys, "--input", tmp_path / "e.parquet", "--out", tmp_path / "c")
    assert "e.parquet has no column 'text'; its columns are 'body'" in err


def test_empty_inputs_missing_paths_and_parquet_without_pyarrow_are_clear_errors(tmp_path, capsys, monkeypatch):
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "blank.jsonl").write_text("\n\n")
    err = refused(capsys, "--input", tmp_path / "empty.jsonl", "--input", tmp_path / "blank.jsonl",
                  "--out", tmp_path / "out")
    assert f"{tmp_path / 'nope.jsonl'} does not exist" in refused(capsys, "--input", tmp_path / "nope.jsonl", "--out",
                                                                  tmp_path / "o")
    (tmp_path / "dir").mkdir()
    assert "holds no .jsonl, .json or .parquet files" in refused(capsys, "--input", tmp_path / "dir", "--out",
                                                                tmp_path / "o")
    (tmp_path / "x.parquet").write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    err = refused(capsys, "--input", tmp_path / "x.parquet", "--out", tmp_path / "o")
    assert 'pip install -e ".[prepare]"' in err and "x.parquet" in err
    err = refused(capsys, "--input", tmp_path / "empty.jsonl", "--out", tmp_path / "o", "--val-ratio", 0.1,
                  "--split-field", "split", "--prefix", "my_val")
    assert "give one" in err and "--val-value" in err and "--prefix 'my_val'" in err  # every problem at once
    assert not (tmp_path / "o").exists()


def test_token_ids_that_do_not_fit_uint16_are_refused(tmp_path, capsys, monkeypatch):
    class WideTokenizer:
        def encode_ordinary(self, text):
            return [70_000]

    write_jsonl(tmp_path / "c.jsonl", [{"text": d} for d in texts(5)])
    monkeypatch.setattr(shards, "gpt2_encoding", WideTokenizer)
    err = refused(capsys, "--input", tmp_path / "c.jsonl", "--out", tmp_path / "out", "--workers", 1)
    assert f"{tmp_path / 'c.jsonl'} line 1: token id 70000 does not fit the shards' uint16" in err


def test_the_shards_are_the_same_bytes_whatever_the_number_of_workers(tmp_path, capsys):
    docs = texts(400, seed=6)
    write_jsonl(tmp_path / "c.jsonl", [{"text": d} for d in docs])
    for workers in (1, 2):
        code, _, _ = run(capsys, "--input", tmp_path / "c.jsonl", "--out", tmp_path / f"w{workers}", "--val-ratio",
                         0.2, "--shard-size", 500, "--workers", workers)
        assert code == 0
    assert len(list_shards(tmp_path / "w1", "train")) > 5
    assert files_of(tmp_path / "w1") == files_of(tmp_path / "w2")


def test_an_interrupted_preparation_resumes_to_exactly_the_uninterrupted_shards(tmp_path, monkeypatch):
    """Interrupted before and after writes of a shard (mid-document, with tokens of the other
    split waiting, after a kill in the middle of appending them), over JSON Lines, a JSON
    array and a Parquet file of several row groups: a rerun writes the same files and counts."""
    # two long train documents, then a short validation one: each train shard leaves the validation
    # split's waiting tokens a little longer, and they fill a shard only now and then
    pool = texts(1000, seed=7, longest=60)
    short_val = [d for d in pool if is_val(d, 0.3) and len(d.split()) <= 8]
    long_train = [d for d in pool if not is_val(d, 0.3) and len(d.split()) > 20]
    docs = [d for triple in zip(long_train[::2], long_train[1::2], short_val) for d in triple][:60]
    assert len(docs) == 60
    tree = tmp_path / "corpus"
    write_jsonl(tree / "a.jsonl", [{"text": d} for d in docs[:20]] + [{"text": ""}, {"oops": 1}])
    (tree / "b.json").write_text(json.dumps([{"text": d} for d in docs[20:40]]))
    write_parquet(tree / "c.parquet", [{"text": d} for d in docs[40:]], row_group_size=4)
    options = Options(inputs=(str(tree),), val_ratio=0.3, shard_size=61, skip_bad=True)
    real_save, seen, order = prepare.save_shard, set(), []
    monkeypatch.setattr(prepare, "save_shard", lambda path, tokens: (order.append(path.name), real_save(path, tokens)))
    prepare.prepare(options, tmp_path / "whole", workers=1)
    monkeypatch.setattr(prepare, "save_shard", real_save)
    whole = files_of(tmp_path / "whole")
    saves = len(order)
    assert saves == len(whole) - 1 > 20
    val_writes = [i + 1 for i, name in enumerate(order) if "_val_" in name]  # the n-th write, from 1

    def interrupt(out, at, after):
        """Run until the at-th write of a shard starts (or has ended), then as a kill would leave it."""
        calls = []

        def save_then_stop(path, tokens):
            calls.append(path)
            if len(calls) == at and not after:
                raise KeyboardInterrupt
            real_save(path, tokens)
            if len(calls) == at:
                raise KeyboardInterrupt

        monkeypatch.setattr(prepare, "save_shard", save_then_stop)
        try:
            prepare.prepare(options, out, workers=1)
        except KeyboardInterrupt:
            pass
        finally:
            monkeypatch.setattr(prepare, "save_shard", real_save)
        if not (out / "meta.json").is_file():  # stopped before the first shard: nothing is left
            assert at == 1 and not after and not out.exists()
            return None
        meta = json.loads((out / "meta.json").read_text())
        if not meta["complete"]:
            seen.update({"mid-document"} if meta["resume"]["token"] else set(), {meta["resume"]["file"]},
                        {f"{split} waiting" for split, n in meta["pending"].items() if n})
        for pending in out.glob(".pending-*"):  # what a kill in the middle of an append leaves
            with open(pending, "ab") as f:
                f.write(b"\x07")
        return meta

    for at in sorted({1, 2, 5, val_writes[0] + 1, val_writes[1] + 1, saves // 2, saves - 2, saves - 1, saves}):
        for after in (False, True):
            out = tmp_path / f"cut{at}{after}"
            first = interrupt(out, at, after)
            assert first is None or not first["complete"]
            second = interrupt(out, 3, not after)  # and once more after resuming
            if first and any(0 < first["pending"][s] < second["pending"][s]
                             and first["shards"][s] == second["shards"][s] for s in ("val", "train")):
                seen.add("waiting tokens appended after resuming")
            meta = prepare.prepare(options, out, workers=2 if at == 5 else 1)
            assert files_of(out) == whole, (at, after)
            assert meta["counts"] == json.loads(whole["meta.json"])["counts"]
    assert seen >= {"mid-document", "val waiting", "train waiting", "waiting tokens appended after resuming",
                    0, 1, 2}, seen


def test_a_killed_preparation_resumes_to_the_same_shards(tmp_path):
    write_jsonl(tmp_path / "c.jsonl", [{"text": d} for d in texts(800, seed=8)])
    args = ["--input", str(tmp_path / "c.jsonl"), "--val-ratio", "0.2", "--shard-size", "300", "--workers", "1",
            "--out"]
    assert main(args + [str(tmp_path / "whole")]) == 0
    process = subprocess.Popen([sys.executable, "-m", "gptlab.data.prepare", *args, str(tmp_path / "killed")],
                               stdout=subprocess.DEVNULL)
    meta = tmp_path / "killed" / "meta.json"
    while not (meta.is_file() and json.loads(meta.read_text())["shards"]["train"] >= 5):
        assert process.poll() is None, "finished before it could be killed: use more documents"
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not json.loads(meta.read_text())["complete"]
    assert main(args + [str(tmp_path / "killed")]) == 0
    assert files_of(tmp_path / "killed") == files_of(tmp_path / "whole")


def test_a_prepared_directory_is_kept_its_arguments_and_other_files_untouched(tmp_path, capsys):
    write_jsonl(tmp_path / "c.jsonl", [{"text": d} for d in texts(50, seed=9)])
    args = ["--input", tmp_path / "c.jsonl", "--out", tmp_path / "out", "--val-ratio", 0.2, "--shard-size", 100]
    assert run(capsys, *args)[0] == 0
    before = files_of(tmp_path / "out")
    code, stdout, _ = run(capsys, *args, "--workers", 2)  # the number of workers does not change the shards
    assert code == 0 and "nothing to do" in stdout and files_of(tmp_path / "out") == before
    err = refused(capsys, *args[:-1], 99, "--no-eot")
    assert "holds a finished preparation with other arguments" in err
    assert "--shard-size: was 100, now 99" in err and "--no-eot: was True, now False" in err
    with open(tmp_path / "c.jsonl", "a") as f:
        f.write(json.dumps({"text": "one more"}) + "\n")
    assert "the input files changed" in refused(capsys, *args)
    assert files_of(tmp_path / "out") == before
    # a directory of someone else's files, or with one among the shards, is refused and left as it was
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "edufineweb_train_000001.npy").write_bytes(b"mine")
    assert "did not write" in refused(capsys, *args[:2], "--out", tmp_path / "theirs")
    (tmp_path / "out" / "notes.txt").write_text("mine")
    assert "notes.txt" in refused(capsys, *args[:2], "--out", tmp_path / "out")
    assert (tmp_path / "theirs" / "edufineweb_train_000001.npy").read_bytes() == b"mine"
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"
    assert "inside --input" in refused(capsys, "--input", tmp_path, "--out", tmp_path / "new")


def test_gptlab_prepare_is_a_command_and_training_names_the_prepared_corpus(tmp_path, capsys):
    write_jsonl(tmp_path / "c.jsonl", [{"text": d} for d in texts(200, seed=10)])
    assert gptlab_main(["prepare", "--input", str(tmp_path / "c.jsonl"), "--out", str(tmp_path / "out"),
                        "--val-ratio", "0.2"]) == 0
    # data="embedded", as the presets set it: a data_dir that is set wins
    config = TrainingConfig(data="embedded", data_dir=str(tmp_path / "out"), total_batch_size=256,
                            micro_batch_size=4, sequence_length=64, val_tokens=256)
    data = open_data(config, B=4, T=64)
    assert data.description.startswith(f"corpus prepared from {tmp_path / 'c.jsonl'} (gptlab prepare) in "
                                       f"{tmp_path / 'out'}: 1 train shards")
    x, _ = data.train.next_batch()
    assert np.array_equal(x[0].numpy(), read_split(tmp_path / "out", "train")[:64])


@pytest.mark.long
def test_the_printed_command_trains_on_the_prepared_corpus(tmp_path, capsys):
    write_jsonl(tmp_path / "c.jsonl", [{"text": d} for d in texts(700, seed=11)])
    out = tmp_path / "out"
    code, stdout, _ = run(capsys, "--input", tmp_path / "c.jsonl", "--out", out, "--val-ratio", 0.3)
    assert code == 0 and "note:" not in stdout
    command = shlex.split(stdout.split("train on it:\n")[1].strip())
    assert command[:6] == ["python", "train.py", "--experiment", "baseline", "--preset", "small"]
    # the printed command on the smoke preset's model (the small one takes 10 s a step here), which also
    # sets train.data="embedded": the data directory wins
    command = [sys.executable, str(REPO_ROOT / "train.py"), *command[2:5], "smoke", *command[6:],
               "--log-dir", str(tmp_path / "run"), "train.max_steps=2", "train.eval_interval=2",
               "train.hellaswag=false", "train.num_samples=0"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    log = tmp_path / "run" / "log.txt"
    assert [s for s, _ in read_log(log)["train"]] == [0, 1]
    assert f"# data corpus prepared from {tmp_path / 'c.jsonl'} (gptlab prepare) in {out}" in log.read_text()


@pytest.mark.long
def test_a_small_corpus_trains_with_the_command_prepare_prints(tmp_path, capsys):
    """About 48k tokens (the trial's corpus size) at the default --val-ratio: a validation split of a few
    hundred tokens. The printed command, on the small preset it names, trains."""
    rng = random.Random(3)
    docs = [" ".join(rng.choices(WORDS, k=110)) for _ in range(300)]
    write_jsonl(tmp_path / "c.jsonl", [{"text": d} for d in docs])
    out = tmp_path / "out"
    code, stdout, _ = run(capsys, "--input", tmp_path / "c.jsonl", "--out", out)
    assert code == 0, stdout
    val_tokens = len(read_split(out, "val"))
    assert 0 < val_tokens < 2049 and 40_000 < len(read_split(out, "train")) + val_tokens < 60_000
    command = shlex.split(stdout.split("train on it:\n")[1].strip())
    assert command[4:6] == ["--preset", "small"]
    result = subprocess.run([sys.executable, str(REPO_ROOT / "train.py"), *command[2:], "--log-dir",
                             str(tmp_path / "run"), "--max-steps", "1", "train.hellaswag=false", "train.num_samples=0"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert [s for s, _ in read_log(tmp_path / "run" / "log.txt")["val"]] == [0, 1]


@pytest.mark.parametrize("ratio", ["0.1", "0.9"])
def test_one_text_cannot_be_split_by_any_ratio_and_is_told_so(tmp_path, capsys, ratio):
    for name, records in (("one", [{"text": "a single long document " * 500}]),
                          ("copies", [{"text": "the same text again"}] * 50)):
        write_jsonl(tmp_path / f"{name}.jsonl", records)
        code, _, err = run(capsys, "--input", tmp_path / f"{name}.jsonl", "--out", tmp_path / name / ratio,
                           "--val-ratio", ratio)
        assert code == 2 and "have one text" in err and "no\n--val-ratio" not in err
        assert "no --val-ratio can put some in each split" in err and "--split-field" in err


def test_the_ratio_advice_names_a_ratio_that_works(tmp_path, capsys):
    """Three documents, none below a ratio of 0.001: the error names the smallest hash, and a ratio just
    above it gives both splits."""
    records = [{"text": f"document number {i}"} for i in range(3)]
    write_jsonl(tmp_path / "c.jsonl", records)
    shares = sorted(prepare.hash_share(r["text"]) for r in records)
    assert shares[0] > 0.001  # else the test's premise is off
    code, _, err = run(capsys, "--input", tmp_path / "c.jsonl", "--out", tmp_path / "a", "--val-ratio", "0.001")
    assert code == 2 and "raise it to " in err
    ratio = err.split("raise it to ")[1].split()[0]
    assert shares[0] < float(ratio) < shares[0] * 1.01
    code, stdout, err = run(capsys, "--input", tmp_path / "c.jsonl", "--out", tmp_path / "b", "--val-ratio", ratio)
    assert code == 0, err
