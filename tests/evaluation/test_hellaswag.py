import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gptlab import load_model
from gptlab.core.config import TrainingConfig
from gptlab.paths import REPO_ROOT
from gptlab.training.distributed import Dist
from gptlab.training.logger import read_log

from gptlab.data.tokenizer import gpt2_encoding
from gptlab.evaluation import hellaswag
from gptlab.evaluation.evaluator import Evaluator
from tests.conftest import tiny_model

EXAMPLES = [
    {"ctx": "A man is sitting on a roof. He", "label": 3,
     "endings": ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.",
                 "is holding a rubik's cube.", "starts pulling up roofing on a roof."]},
    {"ctx": "The cat", "label": 0, "endings": ["sat.", "ran very far away from the dog today.", "x", "slept all day"]},
    {"ctx": "Then", "label": 2, "endings": ["a", "b c", "d e f", "g"]},
]


def hand_choices(model, example: dict, encode) -> tuple[int, int]:
    """(ending of lowest total loss, ending of lowest mean loss), one ending per forward pass. A
    context that does not fit in the block is cut from the left; an ending that does not keeps its start."""
    block = model.config.block_size
    ctx = encode(example["ctx"])
    totals, means = [], []
    for ending in example["endings"]:
        end = encode(" " + ending)[:block]
        row = (ctx + end)[-block:]
        logp = torch.log_softmax(model(torch.tensor([row])).logits[0].float(), dim=-1)
        # -log p(ending token | everything before it), one token at a time; the first token of a row has no loss
        nll = [-logp[p - 1, row[p]].item() for p in range(max(1, len(row) - len(end)), len(row))]
        totals.append(sum(nll))
        means.append(sum(nll) / len(nll))
    return min(range(4), key=totals.__getitem__), min(range(4), key=means.__getitem__)


def hand_scores(model, examples, encode=None) -> tuple[int, int, int]:
    """(examples, correct by total loss, correct by mean loss), one ending at a time."""
    choices = [hand_choices(model, ex, encode or gpt2_encoding().encode_ordinary) for ex in examples]
    return (len(examples), sum(by_total == ex["label"] for (by_total, _), ex in zip(choices, examples)),
            sum(by_mean == ex["label"] for (_, by_mean), ex in zip(choices, examples)))


def char_encode(text: str) -> list[int]:
    return [ord(c) - 32 for c in text]  # printable ASCII to ids 0-94, inside the tiny model's vocab of 97


def synthetic_examples(n: int, seed: int = 0) -> list[dict]:
    """Contexts of 1-40 characters and endings of 1-16, every eighth example's of 1-40: in a block
    of 32, some fit whole, some lose the start of their context, some endings fill the block."""
    rng = random.Random(seed)

    def text(longest: int) -> str:
        return "".join(rng.choice("abcdefgh ") for _ in range(rng.randint(1, longest)))

    return [{"ctx": text(40), "label": rng.randrange(4), "endings": [text(40 if i % 8 == 0 else 16) for _ in range(4)]}
            for i in range(n)]


def test_hellaswag_scores_match_a_hand_computation(tmp_path):
    path = tmp_path / "hs.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in EXAMPLES))
    model = tiny_model("rope", vocab_size=50304, block_size=64).eval()
    assert hellaswag.score(model, path, gpt2_encoding().encode_ordinary, "cpu") == hand_scores(model, EXAMPLES)


def test_examples_are_split_over_ranks(tmp_path):
    path = tmp_path / "hs.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in EXAMPLES * 3))
    model = tiny_model("baseline", vocab_size=50304, block_size=64).eval()
    encode = gpt2_encoding().encode_ordinary
    whole = hellaswag.score(model, path, encode, "cpu")
    parts = [hellaswag.score(model, path, encode, "cpu", rank=r, world_size=2) for r in range(2)]
    assert [p[0] for p in parts] == [5, 4]
    assert tuple(map(sum, zip(*parts))) == whole


def test_long_contexts_are_cut_from_the_left():
    enc = gpt2_encoding()
    example = {"ctx": "word " * 100, "label": 0, "endings": ["one", "two three", "four", "five"]}
    tokens, mask, label = hellaswag.render(example, enc.encode_ordinary, max_len=16)
    assert tokens.shape == (4, 16) and label == 0
    assert tokens[1, 14:].tolist() == enc.encode_ordinary(" two three") and mask[1].sum() == 2
    long_ending = {"ctx": "a", "label": 1, "endings": ["x", "y " * 40, "z", "w"]}
    tokens, mask, _ = hellaswag.render(long_ending, enc.encode_ordinary, max_len=16)
    assert tokens.shape == (4, 16) and mask[1].sum() == 16 and mask[0].tolist()[:2] == [0, 1]


def test_offline_download_reports_why(tmp_path):
    path, why = hellaswag.fetch(tmp_path / "hs.jsonl", url="http://127.0.0.1:9/none.jsonl", timeout=2)
    assert path is None and "could not download" in why


def run_with_hellaswag(tmp_path, launcher: list[str], *extra: str) -> Path:
    """A smoke run whose evaluations score a hand-made HellaSwag file through the real loop."""
    path = tmp_path / "hs.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in EXAMPLES * 3))  # 9: two ranks get 5 and 4
    log_dir = tmp_path / "run"
    result = subprocess.run([*launcher, str(REPO_ROOT / "train.py"), "--preset", "smoke", "--max-steps", "4",
                             "train.eval_interval=2", "train.num_samples=0", f"train.hellaswag_file={path}",
                             "--log-dir", str(log_dir), *extra], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "hella acc_norm" in result.stdout
    return log_dir


def assert_logged_hellaswag_is_the_hand_computation(log_dir: Path) -> None:
    series = read_log(log_dir / "log.txt")
    assert [s for s, _ in series["hella"]] == [0, 2, 4]
    model = load_model(log_dir / "model_00004.pt")
    n, acc, acc_norm = hand_scores(model, EXAMPLES * 3)
    assert dict(series["hella"])[4] == pytest.approx(acc_norm / n, abs=1e-6)
    assert dict(series["hella_acc"])[4] == pytest.approx(acc / n, abs=1e-6)
    assert dict(series["hella_n"])[4] == n == 9


@pytest.mark.long
def test_hellaswag_in_the_training_loop_scores_as_by_hand(tmp_path):
    assert_logged_hellaswag_is_the_hand_computation(run_with_hellaswag(tmp_path, [sys.executable]))


@pytest.mark.long
def test_a_compiled_run_evaluates_samples_and_saves_plain_weights(tmp_path):
    """torch.compile on the CPU (--compile): the training forward and validation compiled,
    HellaSwag and samples on the model itself; the checkpoint names no _orig_mod. prefix; the
    losses are the eager run's up to the reordering of float sums."""
    (tmp_path / "compiled").mkdir(), (tmp_path / "eager").mkdir()
    compiled = run_with_hellaswag(tmp_path / "compiled", [sys.executable], "--compile", "train.num_samples=1")
    assert_logged_hellaswag_is_the_hand_computation(compiled)
    lines = (compiled / "log.txt").read_text().splitlines()
    assert [line.split()[0] for line in lines if line.split()[1:2] == ["sample"]] == ["2", "4"]  # none untrained
    state = torch.load(compiled / "model_00004.pt", weights_only=True)
    assert not [name for name in state["model"] if "_orig_mod" in name or name.startswith("module.")]
    eager = read_log(run_with_hellaswag(tmp_path / "eager", [sys.executable]) / "log.txt")
    series = read_log(compiled / "log.txt")
    for key in ("train", "val"):
        assert [s for s, _ in series[key]] == [s for s, _ in eager[key]]
        for (_, a), (_, b) in zip(series[key], eager[key]):
            assert a == pytest.approx(b, abs=1e-4)


@pytest.mark.long
def test_hellaswag_in_a_two_process_run_scores_every_example_once(tmp_path):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert_logged_hellaswag_is_the_hand_computation(run_with_hellaswag(tmp_path, launcher))


@pytest.mark.parametrize("copies, batch_examples, counts, passes", [
    (3, 1, [3, 2, 2, 2], 3),  # 9 examples, one per pass
    (3, 2, [3, 2, 2, 2], 2),  # ranks 1-3 pad their share with a pass
    (1, 16, [1, 1, 1, 0], 1),  # 3 examples: rank 3 has none and still runs a pass
])
def test_uneven_shares_run_the_same_number_of_forward_passes(tmp_path, copies, batch_examples, counts, passes):
    path = tmp_path / "hs.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in EXAMPLES * copies))
    calls = []

    class Counting(torch.nn.Module):  # counts the forward passes a rank makes
        def __init__(self, model):
            super().__init__()
            self.model, self.config, self.lm_head = model, model.config, model.lm_head

        def features(self, idx):
            calls[-1] += 1
            return self.model.features(idx)

    model = Counting(tiny_model("baseline", vocab_size=50304, block_size=64).eval())
    scored = []
    for rank in range(4):
        calls.append(0)
        scored.append(hellaswag.score(model, path, gpt2_encoding().encode_ordinary, "cpu", rank=rank, world_size=4,
                                      batch_examples=batch_examples)[0])
    assert scored == counts and calls == [passes] * 4


@pytest.mark.parametrize("name, world_size, batch_examples", [
    ("baseline", 1, 16), ("baseline", 3, 4), ("rope", 2, 5), ("alibi", 1, 7)])
def test_batched_scoring_picks_the_endings_of_one_at_a_time_scoring(tmp_path, name, world_size, batch_examples):
    examples = synthetic_examples(40)
    path = tmp_path / "hs.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in examples))
    model = tiny_model(name).eval()
    rendered = hellaswag.load(path, char_encode, model.config.block_size)
    assert model.config.block_size == 32 and min(tokens.size(1) for tokens, _, _ in rendered) < 32
    assert any(len(ex["ctx"]) + 1 + len(min(ex["endings"], key=len)) > 32 for ex in examples)  # contexts are cut
    assert any(len(" " + ending) > 32 for ex in examples for ending in ex["endings"])  # an ending fills the block
    picks = {}
    for rank in range(world_size):
        share = hellaswag.predictions(model, rendered, "cpu", rank, world_size, batch_examples=batch_examples)
        assert sorted(share) == list(range(rank, len(examples), world_size))
        picks.update(share)
    assert picks == {i: hand_choices(model, ex, char_encode) for i, ex in enumerate(examples)}
    counts = [hellaswag.score(model, path, char_encode, "cpu", rank, world_size, batch_examples=batch_examples)
              for rank in range(world_size)]
    assert tuple(map(sum, zip(*counts))) == hand_scores(model, examples, char_encode)


def test_the_evaluator_reads_the_hellaswag_file_once(tmp_path):
    path = tmp_path / "hs.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in EXAMPLES * 3))
    model = tiny_model("baseline", vocab_size=50304, block_size=64).eval()
    evaluator = Evaluator(TrainingConfig(hellaswag_file=str(path)), val=None, ctx=Dist())  # val: not used here
    first = evaluator.hellaswag(model)
    assert (first["hella_n"], first["hella_correct"]) == (9, hand_scores(model, EXAMPLES * 3)[2])
    path.write_text(json.dumps(EXAMPLES[0]) + "\n")  # a change after the first evaluation is not read again
    assert evaluator.hellaswag(model) == first
