import numpy as np
import pytest
import torch

from gptlab.data import embedded
from gptlab.data.fineweb import read_progress, tokenize, write_shards
from gptlab.data.loader import DeviceBatches, TokenLoader
from gptlab.data.shards import DataError, list_shards, load_shard
from gptlab.data.tokenizer import EOT, gpt2_encoding

TEXTS = [f"Document number {i} says {'hello ' * (i % 7)}and ends here." for i in range(60)]


def test_gpt2_encoding_builds_offline_with_gpt2_ids():
    enc = gpt2_encoding()
    # the ids build-nanogpt prints for its sampling prompt
    assert enc.encode("Hello, I'm a language model,") == [15496, 11, 314, 1101, 257, 3303, 2746, 11]
    assert enc.n_vocab == 50257 and enc.eot_token == EOT == 50256
    assert enc.decode(enc.encode("naïve café ∑")) == "naïve café ∑"


def test_shards_hold_every_document_after_an_eot_first_shard_validation(tmp_path):
    n = write_shards((tokenize(t) for t in TEXTS), tmp_path, shard_size=100, prefix="toy")
    expected = np.concatenate([[EOT] + gpt2_encoding().encode_ordinary(t) for t in TEXTS])
    val, train = list_shards(tmp_path, "val"), list_shards(tmp_path, "train")
    assert len(val) == 1 and val[0].name == "toy_val_000000.npy" and len(train) == n - 1
    assert all(len(load_shard(p)) == 100 for p in val + train[:-1])
    stream = np.concatenate([load_shard(p) for p in val + train])
    assert stream.dtype == np.uint16 and np.array_equal(stream, expected)


def test_interrupted_preparation_resumes_to_the_same_shards(tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    write_shards((tokenize(t) for t in TEXTS), full, shard_size=100, prefix="toy")

    def crash_after(n):
        for i, text in enumerate(TEXTS):
            if i == n:
                raise KeyboardInterrupt
            yield tokenize(text)

    with pytest.raises(KeyboardInterrupt):
        write_shards(crash_after(23), part, shard_size=100, prefix="toy")
    progress = read_progress(part)
    assert progress["shards"] >= 2 and not progress.get("complete")
    write_shards((tokenize(t) for t in TEXTS[progress["document"]:]), part, shard_size=100, prefix="toy")
    names = [p.name for p in list_shards(full, "val") + list_shards(full, "train")]
    assert names == [p.name for p in list_shards(part, "val") + list_shards(part, "train")]
    for name in names:
        assert np.array_equal(load_shard(full / name), load_shard(part / name))


def test_a_damaged_shard_is_named(tmp_path):
    path = tmp_path / "x_train_000001.npy"
    path.write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(DataError, match="x_train_000001.npy is not a token shard"):
        load_shard(path)


def test_ranks_read_different_data_and_together_the_single_process_stream():
    tokens = np.arange(10_000, dtype=np.uint16) % 50000
    single = TokenLoader([tokens], B=2, T=8)
    ranks = [TokenLoader([tokens], B=2, T=8, rank=r, world_size=3) for r in range(3)]
    for _ in range(50):
        pieces = [r.next_batch()[0] for r in ranks]
        expected = [single.next_batch()[0] for _ in range(3)]
        for got, want in zip(pieces, expected):
            assert np.array_equal(got.numpy(), want.numpy())
        assert len({p.numpy().tobytes() for p in pieces}) == 3


def test_targets_are_inputs_shifted_by_one():
    tokens = np.arange(1000, dtype=np.uint16)
    x, y = TokenLoader([tokens], B=2, T=5).next_batch()
    assert x.tolist() == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]] and y.tolist() == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]]


def test_loader_position_round_trips_across_shards():
    shards = [np.arange(n, dtype=np.uint16) for n in (300, 35, 500)]  # the 35-token shard is too short
    a = TokenLoader(shards, B=2, T=8, rank=1, world_size=2)
    for _ in range(13):
        a.next_batch()
    b = TokenLoader(shards, B=2, T=8, rank=1, world_size=2)
    b.load_state_dict(a.state_dict())
    for _ in range(40):
        assert np.array_equal(a.next_batch()[0].numpy(), b.next_batch()[0].numpy())
    with pytest.raises(DataError, match="same total_batch_size"):
        TokenLoader(shards, B=2, T=8, rank=0, world_size=1).load_state_dict(a.state_dict())


@pytest.mark.parametrize("ahead", [False, True])
def test_device_batches_read_ahead_without_moving_the_saved_position(ahead):
    """Reading one batch ahead (the GPU path, run here on the CPU) hands out the loader's
    batches in order, and its position is that of the batches handed out: a checkpoint taken
    between two batches resumes at the next one, not after the one waiting."""
    shards = [np.arange(1000, dtype=np.uint16), np.arange(2000, 2700, dtype=np.uint16)]
    plain, batches = TokenLoader(shards, B=2, T=8, accum=2), DeviceBatches(TokenLoader(shards, B=2, T=8, accum=2),
                                                                            "cpu", ahead=ahead)
    saved = None
    for i in range(90):  # past the end of both shards: the stream starts over
        x, y = batches.next_batch()
        px, py = plain.next_batch()
        assert torch.equal(x, px) and torch.equal(y, py)
        assert batches.state_dict() == plain.state_dict()
        if i == 40:
            saved = batches.state_dict()
    batches.load_state_dict(saved)
    plain.load_state_dict(saved)
    for _ in range(5):
        assert torch.equal(batches.next_batch()[0], plain.next_batch()[0])


def test_every_step_reads_the_same_tokens_whatever_the_ranks_and_micro_batches():
    shards = [np.arange(n, dtype=np.uint16) for n in (1000, 90, 700)]  # 90 < one step of 128: skipped
    layouts = {(1, 4, 4): None, (2, 2, 4): None, (4, 1, 4): None, (2, 1, 8): None}  # (world, accum, B), T=16
    for world, accum, B in layouts:
        loaders = [TokenLoader(shards, B=B, T=16, rank=r, world_size=world, accum=accum) for r in range(world)]
        steps = []
        for _ in range(30):  # each step: every rank's micro-batches, as sets of sequences
            steps.append(sorted(row.tobytes() for loader in loaders for _ in range(accum)
                                for row in loader.next_batch()[0].numpy()))
        layouts[world, accum, B] = steps
    first, *others = layouts.values()
    assert all(steps == first for steps in others)
    # and the saved position of one layout continues in another
    two = [TokenLoader(shards, B=4, T=16, rank=r, world_size=2, accum=2) for r in range(2)]
    for _ in range(7 * 2):
        for loader in two:
            loader.next_batch()
    one = TokenLoader(shards, B=4, T=16, world_size=1, accum=4)
    one.load_state_dict(two[0].state_dict())
    assert two[0].state_dict() == two[1].state_dict() == one.state_dict()
    assert sorted(r.tobytes() for _ in range(4) for r in one.next_batch()[0].numpy()) == first[7]


def test_too_little_data_is_a_clear_error():
    with pytest.raises(DataError, match="fewer than one step needs"):
        TokenLoader([np.arange(50, dtype=np.uint16)], B=4, T=16)


def split_at_eot(tokens: np.ndarray) -> list[tuple[int, ...]]:
    """The documents of a token stream: the runs between <|endoftext|> tokens."""
    cuts = np.flatnonzero(tokens == EOT)
    return [tuple(tokens[a + 1:b].tolist()) for a, b in zip(cuts, list(cuts[1:]) + [len(tokens)])]


def test_embedded_corpus_splits_documents_without_overlap():
    splits = embedded.embedded_splits()
    assert len(splits["train"]) > 300_000 and len(splits["val"]) > 20_000
    assert splits["train"][0] == splits["val"][0] == EOT
    train_docs, val_docs = split_at_eot(splits["train"]), split_at_eot(splits["val"])
    # no document of the validation stream is also in the training stream
    assert len(val_docs) > 50 and not set(val_docs) & set(train_docs)
    # and the validation stream is every tenth document by name, each tokenised here
    docs = embedded.documents()
    names = sorted(docs)
    enc = gpt2_encoding()
    assert sorted(val_docs) == sorted(tuple(enc.encode_ordinary(docs[n])) for n in names[::embedded.VAL_EVERY])
    assert len(train_docs) == len(names) - len(val_docs)


def test_embedded_training_stream_mixes_its_kinds_of_text():
    # sorted by name, the stream held every module docstring and then every help topic: the loss
    # jumped when the kind changed. Each tenth of the stream now holds both kinds.
    docs = embedded.documents()
    order = embedded.split_names(docs)["train"]
    kinds = [name.split(":")[0] for name in order]
    tenth = len(kinds) // 10
    for i in range(10):
        assert set(kinds[i * tenth:(i + 1) * tenth]) == {"topic", "module"}, i
    tokens = embedded.embedded_splits()["train"]
    first = gpt2_encoding().encode_ordinary(docs[order[0]])
    assert tokens[1:1 + len(first)].tolist() == first


def _steps(loader: TokenLoader, n: int) -> list[bytes]:
    """n optimizer steps of one process: each step's tokens, as bytes."""
    return [b"".join(loader.next_batch()[0].numpy().tobytes() for _ in range(loader.accum)) for _ in range(n)]


def test_a_seeded_order_reads_the_same_blocks_in_the_seeds_order():
    """train.data_order=seeded: two seeds read different batches; over an epoch each reads every
    block of the fixed order exactly once (the order changes, the data does not); epochs differ."""
    shards = [np.arange(n, dtype=np.uint16) for n in (1000, 50, 700)]  # 50 < one step of 64 (+1): skipped
    blocks = 999 // 64 + 699 // 64  # 15 + 10 (each block also reads the token after it)
    fixed = _steps(TokenLoader(shards, B=2, T=16, accum=2), blocks)
    one, other = (_steps(TokenLoader(shards, B=2, T=16, accum=2, order_seed=s), 2 * blocks) for s in (1337, 1338))
    assert one[:blocks] != fixed and one[:blocks] != other[:blocks]
    assert sorted(one[:blocks]) == sorted(fixed) == sorted(other[:blocks]) == sorted(one[blocks:])
    assert one[blocks:] != one[:blocks]  # the next epoch has an order of its own
    assert _steps(TokenLoader(shards, B=2, T=16, accum=2, order_seed=1337), blocks) == one[:blocks]  # reproducible


def test_a_seeded_order_resumes_exactly_on_any_number_of_ranks():
    shards = [np.arange(n, dtype=np.uint16) for n in (1000, 700)]
    whole = _steps(TokenLoader(shards, B=4, T=16, accum=4, order_seed=7), 40)
    two = [TokenLoader(shards, B=4, T=16, rank=r, world_size=2, accum=2, order_seed=7) for r in range(2)]
    for step in range(13):  # two ranks read each step's tokens between them
        got = sorted(r.tobytes() for loader in two for _ in range(2) for r in loader.next_batch()[0].numpy())
        row = 16 * 8  # a sequence of 16 int64 tokens
        assert got == sorted(whole[step][i:i + row] for i in range(0, len(whole[step]), row))
    resumed = TokenLoader(shards, B=4, T=16, accum=4, order_seed=7)
    resumed.load_state_dict(two[0].state_dict())
    assert _steps(resumed, 27) == whole[13:]


def test_validation_is_the_same_whatever_the_seed_and_the_order(tmp_path):
    from gptlab.core.config import TrainingConfig
    from gptlab.data.sources import open_data
    opened = [open_data(TrainingConfig(data="embedded", data_order=order, seed=seed, val_tokens=2048), 8, 64)
              for order, seed in (("fixed", 1), ("seeded", 1), ("seeded", 2))]
    vals = [torch.cat([d.val.next_batch()[0] for _ in range(4)]) for d in opened]
    trains = [d.train.next_batch()[0] for d in opened]
    assert torch.equal(vals[0], vals[1]) and torch.equal(vals[0], vals[2])
    assert not torch.equal(trains[0], trains[1]) and not torch.equal(trains[1], trains[2])
