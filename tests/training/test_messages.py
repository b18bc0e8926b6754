"""A user's mistake is one `error:` line that says what to do, exit status 2, nothing written."""

import json
import subprocess
import sys

import numpy as np
import pytest

from gptlab import load_model
from gptlab.evaluation import hellaswag
from gptlab.training.checkpoint import CheckpointError
from gptlab.training.cli import main

SMOKE = ["--preset", "smoke", "--max-steps", "2", "train.num_samples=0", "train.hellaswag=false"]


def refused(capsys, argv, *phrases):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "Traceback" not in err, err
    for phrase in phrases:
        assert phrase in err, err


@pytest.mark.parametrize("override, phrase", [
    ("train.sample_prompt=", "sample_prompt is empty"),
    ("train.sample_length=0", "sample_length=0 generates nothing"),
    ("train.sample_prompt=" + "word " * 80, "is longer than block_size=64"),
    ("model.vocab_size=1000", "vocab_size=1000 is below the GPT-2 tokenizer's 50,257 tokens"),
    ("train.dtype=fp16", "dtype='fp16' must be one of 'auto'"),
])
def test_a_run_that_could_not_start_is_refused_before_anything_is_written(tmp_path, capsys, override, phrase):
    refused(capsys, [*SMOKE, "train.num_samples=2", "--log-dir", str(tmp_path / "log"), override], phrase)
    assert not (tmp_path / "log").exists()


def test_a_log_that_cannot_be_written_is_refused(tmp_path, capsys):
    (tmp_path / "log.txt").mkdir()
    refused(capsys, [*SMOKE, "--log-dir", str(tmp_path)], "cannot write to the log directory", "log.txt")


def test_a_device_this_machine_lacks_is_named(tmp_path, capsys):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    refused(capsys, [*SMOKE, "--device", "cuda", "--log-dir", str(tmp_path)], "--device cuda: this machine has no usable CUDA")
    refused(capsys, [*SMOKE, "--device", "tpu", "--log-dir", str(tmp_path)], "not a device gptlab knows")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("run")
    assert main([*SMOKE, "--max-steps", "1", "--log-dir", str(log_dir)]) == 0
    return log_dir / "model_00001.pt"


@pytest.mark.parametrize("args, phrase", [
    (["--prompt", ""], "--prompt is empty"),
    (["--prompt", "word " * 70], "learned positions are not defined past block_size=64"),
    (["--max-new-tokens", "0"], "--max-new-tokens 0: give at least 1"),
    (["--max-new-tokens", "-3"], "--max-new-tokens -3: give at least 1"),
    (["--max-new-tokens", "200"], "+ --max-new-tokens 200: learned positions are not defined past block_size=64"),
    (["--num-samples", "0"], "--num-samples 0: give at least 1"),
    (["--temperature", "-1"], "--temperature -1.0: give 0 (greedy) or a positive number"),
    (["--temperature", "nan"], "--temperature nan"),
])
def test_inference_refuses_what_it_cannot_do_instead_of_clipping(checkpoint, capsys, args, phrase):
    refused(capsys, ["--inference", str(checkpoint), *args], phrase)


@pytest.mark.long
def test_inference_past_block_size_where_the_position_encoding_allows_it(tmp_path, capsys):
    assert main([*SMOKE, "--experiment", "rope", "--max-steps", "1", "--log-dir", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["--inference", str(tmp_path / "model_00001.pt"), "--max-new-tokens", "100", "--num-samples", "1"]) == 0
    assert "--- sample 0" in capsys.readouterr().out


def test_inference_on_a_directory_names_a_checkpoint_in_it(checkpoint, capsys):
    refused(capsys, ["--inference", str(checkpoint.parent)], "is a directory", "model_00001.pt")


def test_summary_has_help_and_reports_a_broken_experiment(tmp_path):
    out = subprocess.run([sys.executable, "-m", "gptlab.reporting.summary", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "model.FIELD=VALUE" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "gptlab.reporting.summary", "model.n_layers=2"], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and "did you mean n_layer" in bad.stderr


def test_the_summary_columns_line_up_and_say_their_unit(capsys):
    """Long class names (QKNormAttention) and experiment names (deepseek_v2) do not push a row's cells
    out of their columns; the KV bytes say their dtype."""
    from gptlab.reporting.summary import main
    assert main(["model.n_layer=1", "model.n_embd=64", "model.n_head=4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0]
    assert header.endswith("KV bytes/token (bf16)")
    starts = [header.index(word) for word in ("attention", "position", "mlp", "norm")]
    for line in lines[1:]:
        assert all(line[start - 1] == " " and line[start] != " " for start in starts), line
        assert len(line) == len(header), line  # the numbers end where the header does


def test_the_gpt2_recipe_without_prepared_data_says_what_to_do(tmp_path, capsys):
    refused(capsys, ["--log-dir", str(tmp_path), "train.hellaswag=false", "--max-steps", "1"],
            "this is the GPT-2 124M recipe", "python -m gptlab.data.fineweb", "--preset smoke")


def test_a_token_id_outside_the_vocabulary_is_named(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    tokens = np.arange(20000, dtype=np.uint16) % 50000
    np.save(data / "edufineweb_val_000000.npy", tokens)
    tokens[3000] = 60000
    np.save(data / "edufineweb_train_000001.npy", tokens)
    refused(capsys, [*SMOKE, "--max-steps", "6", "train.data=fineweb", f"train.data_dir={data}",
                     "--log-dir", str(tmp_path / "log")], "holds token id 60000", "vocab_size=50304")


def test_a_damaged_hellaswag_file_is_refused_or_fetched_again(tmp_path, capsys):
    user = tmp_path / "hs.jsonl"
    user.write_text(json.dumps({"ctx": "a", "label": 0, "endings": ["b", "c", "d", "e"]}) + "\n" +
                    json.dumps({"ctx": "a", "label": 0, "endings": ["b", "c", "d"]}) + "\n")
    refused(capsys, [*SMOKE, "train.hellaswag=true", f"train.hellaswag_file={user}", "--log-dir", str(tmp_path / "l")],
            "line 2 is not an example with a ctx, four endings and a label")
    cache = tmp_path / "cache.jsonl"
    cache.write_text('{"ctx": "cut off in the midd')  # a download that stopped
    path, why = hellaswag.fetch(cache, url="http://127.0.0.1:9/none.jsonl", timeout=2)
    assert path is None and "could not download" in why
    assert (tmp_path / "cache.jsonl.damaged").exists() and "kept as cache.jsonl.damaged" in capsys.readouterr().out


MLP_V1 = """
from gptlab.modules import MLP

class MyMLP(MLP):
    pass

MLP_CLASS = MyMLP
"""


@pytest.mark.slow
def test_a_checkpoint_whose_weights_no_longer_fit_a_user_class_is_refused(tmp_path, capsys):
    exp = tmp_path / "mine.py"
    exp.write_text(MLP_V1)
    args = ["--experiment", str(exp), *SMOKE, "--max-steps", "2", "--log-dir", str(tmp_path / "log")]
    assert main([*args, "train.stop_at=1"]) == 0
    exp.write_text(MLP_V1.replace("    pass", "    def __init__(self, config):\n        super().__init__(config)\n"
                                  "        self.extra = __import__('torch').nn.Linear(4, 4)"))
    capsys.readouterr()
    refused(capsys, [*args, "--resume", "auto", "train.allow_source_change=true"],
            "the checkpoint's weights do not fit the model", "extra.weight")
    with pytest.raises(CheckpointError, match="do not fit the model its components build now"):
        load_model(tmp_path / "log" / "model_00001.pt")


@pytest.mark.slow
def test_a_checkpoint_whose_optimizer_state_no_longer_fits_is_refused(tmp_path, capsys):
    """The weights fit (the same names and shapes) but the parameters the optimizer holds changed (here one
    frozen; a layout that stacks what were separate parameters is another case): one error, naming the way out."""
    exp = tmp_path / "mine.py"
    exp.write_text(MLP_V1)
    args = ["--experiment", str(exp), *SMOKE, "--max-steps", "2", "--log-dir", str(tmp_path / "log")]
    assert main([*args, "train.stop_at=1"]) == 0
    exp.write_text(MLP_V1.replace("    pass", "    def __init__(self, config):\n        super().__init__(config)\n"
                                  "        self.c_fc.bias.requires_grad_(False)"))
    capsys.readouterr()
    refused(capsys, [*args, "--resume", "auto", "train.allow_source_change=true"],
            "the checkpoint's optimizer state does not fit the parameters", "--init-from CHECKPOINT")


def test_a_preset_that_replaces_an_experiment_files_setting_says_so(tmp_path, capsys):
    from gptlab.training.planning import plan_run
    exp = tmp_path / "hot.py"
    exp.write_text("from gptlab import TrainingConfig\nTRAINING_CONFIG = TrainingConfig(max_lr=1e-3, weight_decay=0.0)\n")
    run = plan_run(str(exp), "smoke", [])
    assert run.train_config.max_lr == 3e-3 and run.train_config.weight_decay == 0.0
    out = capsys.readouterr().out
    assert "note: the preset smoke replaces what hot.py's TRAINING_CONFIG sets: max_lr=0.001 (the preset's 0.003)" in out
    assert "weight_decay" not in out
    plan_run("gqa", "smoke", [])
    assert capsys.readouterr().out == ""
