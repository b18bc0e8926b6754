"""The lm-evaluation-harness adapter, called on hand-made requests and checked against plain
forward passes of the checkpoint's model (the real-vocabulary log-softmax written out here,
and gptlab's own loss); then lm-eval's command line on a task file written here."""

import json
import os
import subprocess
import sys

import pytest
import torch

from gptlab import build_model, load_experiment
from gptlab.core.config import GPT2_VOCAB
from gptlab.data.tokenizer import EOT, gpt2_encoding
from gptlab.paths import REPO_ROOT
from gptlab.training.checkpoint import CheckpointError
from tests.conftest import save_run_checkpoint

pytestmark = pytest.mark.long  # lm_eval is a heavy optional import, and the last tests are subprocesses


@pytest.fixture(scope="module", autouse=True)
def harness():
    """The adapter, imported only where these tests run (lm_eval takes seconds to import)."""
    pytest.importorskip("lm_eval")
    import gptlab.evaluation.harness
    return gptlab.evaluation.harness


TINY = dict(n_layer=2, n_head=2, n_embd=16, block_size=32)  # the real vocabulary: 50,304 rows, 50,257 tokens
enc = gpt2_encoding()


def write_checkpoint(log_dir, padding: str, step: int = 7):
    """A tiny baseline GPT saved as the trainer saves it. The rows that pad the vocabulary get
    logits far above every real token's ("loud": an adapter that scored or generated them would
    be far off) or far below ("quiet", as after training: gptlab's own loss is then the
    real-vocabulary loss)."""
    exp = load_experiment("baseline")
    torch.manual_seed(0)
    model = build_model(exp, **TINY)
    with torch.no_grad():
        pad = model.lm_head.weight[GPT2_VOCAB:]  # tied: wte rows no token ever uses
        if padding == "loud":
            pad.copy_(torch.randn_like(pad))  # logits ~ N(0, 4) against the real tokens' ~ N(0, 0.08)
        else:  # h[0] = ln(x)[0] + 5 >= 5 - sqrt(15) > 1, so each padded logit is below -100
            model.transformer.ln_f.bias[0] = 5.0
            pad.zero_()
            pad[:, 0] = -100.0
    save_run_checkpoint(log_dir, model, step, sequence_length=32)
    return model.eval()


@pytest.fixture(scope="module")
def loud(tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("loud")
    return write_checkpoint(log_dir, "loud"), log_dir


@pytest.fixture(scope="module")
def quiet(tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("quiet")
    return write_checkpoint(log_dir, "quiet"), log_dir


def adapter(log_dir, **model_args):
    from gptlab.evaluation.harness import GptlabLM
    return GptlabLM(checkpoint=str(log_dir), device="cpu", **model_args)


def requests(kind: str, *args) -> list:
    from lm_eval.api.instance import Instance
    return [Instance(kind, {}, a if isinstance(a, tuple) else (a,), i) for i, a in enumerate(args)]


@torch.no_grad()
def by_hand(model, context: list[int], continuation: list[int], max_length: int) -> tuple[float, bool]:
    """(sum of log p(continuation), all greedy) from one plain forward pass over the last
    max_length + 1 tokens, the softmax over the 50,257 real tokens only."""
    tokens = (context + continuation)[-(max_length + 1):]
    logits = model(torch.tensor([tokens[:-1]])).logits[0, :, :GPT2_VOCAB].double()
    logprobs = logits.log_softmax(dim=-1)[len(tokens) - 1 - len(continuation):]
    targets = torch.tensor(continuation)
    return logprobs.gather(1, targets[:, None]).sum().item(), bool((logprobs.argmax(-1) == targets).all())


PAIRS = [("The cat sat on the", " mat."), ("Paris is the capital of", " France, and Berlin of Germany."),
         ("", "Hello world"), ("One two three", " four"),
         (" ".join(["a long context"] * 12), " that is cut from the left")]  # 36 + 7 tokens: over block_size


def test_loglikelihood_is_the_real_vocabulary_log_softmax_of_a_plain_forward_pass(loud):
    model, log_dir = loud
    results = adapter(log_dir).loglikelihood(requests("loglikelihood", *PAIRS), disable_tqdm=True)
    for (context, continuation), (logprob, _) in zip(PAIRS, results):
        ctx = enc.encode_ordinary(context) if context else [EOT]
        cont = enc.encode_ordinary(continuation)
        assert enc.encode_ordinary(context + continuation) == (ctx if context else []) + cont  # a clean split
        assert logprob == pytest.approx(by_hand(model, ctx, cont, 32)[0], abs=1e-4), (context, continuation)


def test_a_contexts_trailing_space_moves_to_the_continuation(loud):
    lm = adapter(loud[1])
    a, b = lm.loglikelihood(requests("loglikelihood", ("Hello ", "world"), ("Hello", " world")), disable_tqdm=True)
    assert a == pytest.approx(b, abs=1e-6)


def test_batches_give_the_one_at_a_time_results_in_the_request_order(loud):
    model, log_dir = loud
    pairs = PAIRS + [("Short", " one"), ("A somewhat longer context than the others here", " two words")]
    one = adapter(log_dir, batch_size=1).loglikelihood(requests("loglikelihood", *pairs), disable_tqdm=True)
    four = adapter(log_dir, batch_size=4).loglikelihood(requests("loglikelihood", *pairs), disable_tqdm=True)
    for (logprob_1, greedy_1), (logprob_4, greedy_4) in zip(one, four):
        assert logprob_4 == pytest.approx(logprob_1, abs=1e-4) and greedy_4 == greedy_1
    assert len({round(lp, 3) for lp, _ in four}) == len(pairs)  # distinct answers, so order is checked


def test_bfloat16_autocasts_the_forward_pass(loud):
    pairs = requests("loglikelihood", *PAIRS)
    full = [lp for lp, _ in adapter(loud[1], dtype="float32").loglikelihood(pairs, disable_tqdm=True)]
    half = [lp for lp, _ in adapter(loud[1], dtype="bfloat16").loglikelihood(pairs, disable_tqdm=True)]
    assert half != full and half == pytest.approx(full, rel=0.02)


@torch.no_grad()
def greedy_tokens(model, context: list[int], n: int) -> list[int]:
    """n tokens, each the real-vocabulary argmax of a full forward pass over all before it."""
    tokens = list(context)
    for _ in range(n):
        tokens.append(int(model(torch.tensor([tokens])).logits[0, -1, :GPT2_VOCAB].argmax()))
    return tokens[len(context):]


def test_is_greedy_says_whether_every_continuation_token_is_the_argmax(loud):
    model, log_dir = loud
    context = enc.encode_ordinary("Once upon a time")
    greedy = greedy_tokens(model, context, 5)
    not_greedy = greedy[:-1] + [(greedy[-1] + 1) % GPT2_VOCAB]
    results = adapter(log_dir)._loglikelihood_tokens([(None, context, greedy), (None, context, not_greedy)],
                                                     disable_tqdm=True)
    assert [greedy for _, greedy in results] == [True, False]
    assert results[0][0] == pytest.approx(by_hand(model, context, greedy, 32)[0], abs=1e-4)


def test_rolling_loglikelihood_of_a_short_text_is_minus_gptlabs_own_loss_times_its_tokens(quiet):
    model, log_dir = quiet
    text = "The quick brown fox jumps over the lazy dog."
    tokens = enc.encode_ordinary(text)
    idx, targets = torch.tensor([[EOT] + tokens[:-1]]), torch.tensor([tokens])
    with torch.no_grad():
        loss = model(idx, targets).loss.item()
    [rolling] = adapter(log_dir).loglikelihood_rolling(requests("loglikelihood_rolling", text), disable_tqdm=True)
    assert rolling == pytest.approx(-loss * len(tokens), rel=1e-5)


@torch.no_grad()
def rolling_by_hand(model, tokens: list[int], L: int) -> float:
    """Every token predicted once: chunks of L tokens from the start, each predicted with the
    L tokens before its end as input (<|endoftext|> before the first), with gptlab's loss."""
    seq, total = [EOT] + tokens, 0.0  # seq[j + 1] is tokens[j]
    for start in range(0, len(tokens), L):
        end = min(start + L, len(tokens))
        lo = max(0, end - L)
        targets = torch.tensor(seq[lo + 1:end + 1])
        targets[:start - lo] = -1  # already predicted by the previous chunk
        total -= model(torch.tensor([seq[lo:end]]), targets[None]).loss.item() * (end - start)
    return total


def test_rolling_loglikelihood_of_a_long_text_scores_windows_of_max_length(quiet):
    model, log_dir = quiet
    text = " ".join(f"word{i}" for i in range(40))
    tokens = enc.encode_ordinary(text)
    assert len(tokens) > 2 * 32 and len(tokens) % 32  # three windows, the last one partly new
    lm = adapter(log_dir, batch_size=2)
    [rolling] = lm.loglikelihood_rolling(requests("loglikelihood_rolling", text), disable_tqdm=True)
    assert rolling == pytest.approx(rolling_by_hand(model, tokens, 32), rel=1e-5)
    [shorter] = adapter(log_dir, max_length=16).loglikelihood_rolling(requests("loglikelihood_rolling", text),
                                                                      disable_tqdm=True)
    assert shorter == pytest.approx(rolling_by_hand(model, tokens, 16), rel=1e-5)


def generated(model, prompt: str, n: int, **sampling) -> str:
    """GPT.generate's continuation of prompt, up to <|endoftext|>, as text."""
    tokens = model.generate(torch.tensor([enc.encode_ordinary(prompt)]), n, **sampling)[0].tolist()
    new = tokens[len(enc.encode_ordinary(prompt)):]
    return enc.decode(new[:new.index(EOT)] if EOT in new else new)


PROMPTS = ["The meaning of life is", "Hello, my name was", "Today the weather"]  # 5, 5 and 3 tokens


@pytest.mark.parametrize("batch_size", [1, 4])
def test_greedy_generation_gives_gptlabs_generate_tokens(loud, batch_size):
    model, log_dir = loud
    asked = [(p, n) for n in (12, 5) for p in PROMPTS]  # two gen_kwargs in one call
    texts = adapter(log_dir, batch_size=batch_size).generate_until(
        requests("generate_until", *[(p, {"until": [], "max_gen_toks": n, "do_sample": False}) for p, n in asked]),
        disable_tqdm=True)
    assert texts == [generated(model, p, n, temperature=0) for p, n in asked]
    assert len(set(texts)) == len(asked) and all(texts)


def test_generation_stops_at_the_end_of_text_token(loud):
    lm = adapter(loud[1])
    with torch.no_grad():  # a model that always says <|endoftext|>: its largest logit, whatever the input
        lm.model.transformer.ln_f.bias[0] = 5.0
        lm.model.lm_head.weight[EOT] = 0.0
        lm.model.lm_head.weight[EOT, 0] = 100.0
    prompt = torch.tensor([enc.encode_ordinary(PROMPTS[0])])
    assert lm.model.generate(prompt, 3, temperature=0)[0, -3:].tolist() == [EOT] * 3
    assert lm.generate_until(requests("generate_until", (PROMPTS[0], {"max_gen_toks": 3})), disable_tqdm=True) == [""]


def test_generation_stops_at_the_first_until_string(loud):
    model, log_dir = loud
    full = generated(model, PROMPTS[0], 20, temperature=0)
    stop = full[len(full) // 2:len(full) // 2 + 2]
    assert stop.strip() and full.index(stop) > 0
    [text] = adapter(log_dir).generate_until(requests("generate_until", (PROMPTS[0], {"until": ["@@@", stop],
                                                                                       "max_gen_toks": 20})),
                                              disable_tqdm=True)
    assert text == full[:full.index(stop)]


def test_sampling_draws_as_gptlabs_generate_with_the_same_seed(loud):
    model, log_dir = loud
    lm = adapter(log_dir)
    torch.manual_seed(3)
    [text] = lm.generate_until(requests("generate_until", (PROMPTS[1], {"until": [], "max_gen_toks": 10,
                                                                         "do_sample": True, "temperature": 0.9,
                                                                         "top_k": 20})), disable_tqdm=True)
    torch.manual_seed(3)
    assert text == generated(model, PROMPTS[1], 10, temperature=0.9, top_k=20)
    assert text != generated(model, PROMPTS[1], 10, temperature=0)


def test_bad_model_args_and_paths_are_one_clear_error(loud, tmp_path, harness):
    GptlabLM, HarnessError, log_dir = harness.GptlabLM, harness.HarnessError, loud[1]
    with pytest.raises(HarnessError) as error:  # every problem at once
        GptlabLM(checkpoint=str(log_dir), dtype="fp16", batch_size="auto", checkpont="x")
    for problem in ("checkpont='x' is not a model_arg", "dtype='fp16' must be one of auto, float32, bfloat16",
                    "batch_size='auto' must be a positive whole number"):
        assert problem in str(error.value)
    with pytest.raises(CheckpointError, match="does not exist"):
        GptlabLM(checkpoint=str(tmp_path / "nowhere.pt"), device="cpu")
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        GptlabLM(checkpoint=str(tmp_path), device="cpu")
    with pytest.raises(HarnessError, match="learned positions are not defined past block_size=32"):
        adapter(log_dir, max_length=64)
    lm = adapter(log_dir)
    with pytest.raises(HarnessError, match="max_gen_toks=32 leaves no room"):
        lm.generate_until(requests("generate_until", ("Hi", {"max_gen_toks": 32})), disable_tqdm=True)
    with pytest.raises(HarnessError, match="would be ignored: {'repetition_penalty': 1.2}"):
        lm.generate_until(requests("generate_until", ("Hi", {"max_gen_toks": 4, "repetition_penalty": 1.2})),
                          disable_tqdm=True)


def test_gptlab_does_not_import_lm_eval_and_the_adapter_says_how_to_install_it():
    code = ("import sys, gptlab, gptlab.evaluation, gptlab.training.checkpoint\n"
            "assert 'lm_eval' not in sys.modules, 'gptlab imported lm_eval'\n"
            "sys.modules['lm_eval'] = None  # as if it were not installed\n"
            "try:\n    import gptlab.evaluation.harness\nexcept ModuleNotFoundError as e:\n    print(e)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert 'pip install -e ".[eval]"' in result.stdout


# a multiple-choice task as lm-eval reads it, over a local jsonl: no download
TASK = """task: gptlab_tiny_choice
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: choices
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
"""
DOCS = [{"question": "The sky is", "choices": ["blue.", "a green cheese wheel.", "loud"], "label": 0},
        {"question": "Two plus two equals", "choices": ["four", "five", "twenty-two and a half"], "label": 0},
        {"question": "Water boils at", "choices": ["100 degrees Celsius.", "zero", "noon"], "label": 0},
        {"question": "A cat says", "choices": ["woof", "meow", "a long sentence about nothing"], "label": 1},
        {"question": "The opposite of hot is", "choices": ["cold", "warm", "the number seven"], "label": 0},
        {"question": "Birds can", "choices": ["fly", "swim across oceans in a day", "read"], "label": 0}]


def write_task(directory) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    data = directory / "tiny_choice.jsonl"
    data.write_text("".join(json.dumps(doc) + "\n" for doc in DOCS))
    (directory / "tiny_choice.yaml").write_text(TASK.format(data=data))


def test_lm_evals_command_line_scores_a_local_task_as_the_adapters_loglikelihoods(loud, tmp_path):
    log_dir = loud[1]
    write_task(tmp_path / "tasks")
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run([sys.executable, "-m", "gptlab.evaluation.harness", "--model", "gptlab",
                             "--model_args", f"checkpoint={log_dir},dtype=float32,device=cpu",
                             "--batch_size", "4", "--tasks", "gptlab_tiny_choice",
                             "--include_path", str(tmp_path / "tasks"), "--output_path", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=300, cwd=REPO_ROOT, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    [path] = (tmp_path / "out").rglob("results_*.json")
    record = json.loads(path.read_text())
    scores = record["results"]["gptlab_tiny_choice"]
    assert record["config"]["model"] == "gptlab" and record["config"]["step"] == 7
    # the same scores from the adapter's loglikelihoods: acc by the sum, acc_norm by the sum per character
    lm = adapter(log_dir)
    acc = acc_norm = 0
    for doc in DOCS:
        lls = [lp for lp, _ in lm.loglikelihood(requests("loglikelihood", *[(doc["question"], " " + c)
                                                                              for c in doc["choices"]]),
                                                 disable_tqdm=True)]
        acc += max(range(3), key=lambda i: lls[i]) == doc["label"]
        acc_norm += max(range(3), key=lambda i: lls[i] / len(doc["choices"][i])) == doc["label"]
    assert scores["acc,none"] == pytest.approx(acc / len(DOCS))
    assert scores["acc_norm,none"] == pytest.approx(acc_norm / len(DOCS))
    assert "gptlab_tiny_choice" in result.stdout and "acc_norm" in result.stdout  # the printed table


def test_a_bad_checkpoint_on_the_command_line_is_one_error_line(tmp_path):
    write_task(tmp_path / "tasks")
    result = subprocess.run([sys.executable, "-m", "gptlab.evaluation.harness", "--model", "gptlab", "--model_args",
                             f"checkpoint={tmp_path / 'nowhere.pt'}", "--tasks", "gptlab_tiny_choice",
                             "--include_path", str(tmp_path / "tasks")],
                            capture_output=True, text=True, timeout=300, cwd=REPO_ROOT,
                            env={**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"error: {tmp_path / 'nowhere.pt'} does not exist; give a checkpoint" in result.stderr
    assert "Traceback" not in result.stderr
