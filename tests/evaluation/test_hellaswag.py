import json

import torch

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


def test_hellaswag_scores_match_a_hand_computation(tmp_path):
    path = tmp_path / "hs.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in EXAMPLES))
    enc = gpt2_encoding()
    model = tiny_model("rope", vocab_size=50304, block_size=64).eval()
    n, correct, correct_norm = hellaswag.score(model, path, enc.encode_ordinary, "cpu")

    hand_acc = hand_norm = 0
    for ex in EXAMPLES:
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
    assert (n, correct, correct_norm) == (3, hand_acc, hand_norm)


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
