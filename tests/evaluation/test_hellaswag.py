import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gptlab import load_model
from gptlab.paths import REPO_ROOT
from gptlab.training.logger import read_log

from gptlab.data.tokenizer import gpt2_encoding
from gptlab.evaluation import hellaswag
from tests.conftest import tiny_model

EXAMPLES = [
    {"ctx": "A man is sitting on a roof. He", "label": 3,
     "endings": ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.",
                 "is holding a rubik's cube.", "starts pulling up roofing on a roof."]},
    {"ctx": "The cat", "label": 0, "endings": ["sat.", "ran very far away from the dog today.", "x", "slept all day"]},
    {"ctx": "Then", "label": 2, "endings": ["a", "b c", "d e f", "g"]},
]


def hand_scores(model, examples) -> tuple[int, int, int]:
    """(examples, correct by total loss, correct by mean loss), one ending at a time."""
    enc = gpt2_encoding()
    hand_acc = hand_norm = 0
    for ex in examples:
        ctx = enc.encode_ordinary(ex["ctx"])
        totals, means = [], []
        for ending in ex["endings"]:
            end = enc.encode_ordinary(" " + ending)
            logits, _ = model(torch.tensor([ctx + end]))
            logp = torch.log_softmax(logits[0].float(), dim=-1)
            # -log p(ending token j | everything before it), one token at a time
            nll = [-logp[len(ctx) + j - 1, tok].item() for j, tok in enumerate(end)]
            totals.append(sum(nll))
            means.append(sum(nll) / len(nll))
        hand_acc += min(range(4), key=totals.__getitem__) == ex["label"]
        hand_norm += min(range(4), key=means.__getitem__) == ex["label"]
    return len(examples), hand_acc, hand_norm


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


def run_with_hellaswag(tmp_path, launcher: list[str]) -> Path:
    """A smoke run whose evaluations score a hand-made HellaSwag file through the real loop."""
    path = tmp_path / "hs.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in EXAMPLES * 3))  # 9: two ranks get 5 and 4
    log_dir = tmp_path / "run"
    result = subprocess.run([*launcher, str(REPO_ROOT / "train.py"), "--preset", "smoke", "--max-steps", "4",
                             "train.eval_interval=2", "train.num_samples=0", f"train.hellaswag_file={path}",
                             "--log-dir", str(log_dir)], capture_output=True, text=True, timeout=300)
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


@pytest.mark.slow
def test_hellaswag_in_the_training_loop_scores_as_by_hand(tmp_path):
    assert_logged_hellaswag_is_the_hand_computation(run_with_hellaswag(tmp_path, [sys.executable]))


@pytest.mark.long
def test_hellaswag_in_a_two_process_run_scores_every_example_once(tmp_path):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert_logged_hellaswag_is_the_hand_computation(run_with_hellaswag(tmp_path, launcher))


def test_uneven_shares_run_the_same_number_of_forward_passes(tmp_path):
    path = tmp_path / "hs.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in EXAMPLES * 3))
    calls = []

    class Counting(torch.nn.Module):  # counts the forward passes a rank makes
        def __init__(self, model):
            super().__init__()
            self.model, self.config = model, model.config

        def forward(self, idx):
            calls[-1] += 1
            return self.model(idx)

    model = Counting(tiny_model("baseline", vocab_size=50304, block_size=64).eval())
    counts = []
    for rank in range(4):
        calls.append(0)
        counts.append(hellaswag.score(model, path, gpt2_encoding().encode_ordinary, "cpu", rank=rank, world_size=4)[0])
    assert counts == [3, 2, 2, 2] and calls == [3, 3, 3, 3]
