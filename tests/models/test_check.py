"""The component check: the README's worked example passes it and trains; components that
break the interface (no cache, not causal, wrong signatures) are refused in words."""

import re
import subprocess
import sys

import pytest

from gptlab import load_experiment
from gptlab.models.check import check_experiment
from gptlab.export.cli import main as export
from gptlab.paths import REPO_ROOT
from gptlab.training.cli import main

EXAMPLE = re.search(r"<!-- example: tempered.py -->\n```python\n(.*?)```", (REPO_ROOT / "README.md").read_text(),
                    re.S).group(1)


def experiment_file(tmp_path, text, name="tempered.py"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_readme_example_passes_the_check_and_trains(tmp_path, capsys):
    path = experiment_file(tmp_path, EXAMPLE)
    assert check_experiment(load_experiment(path)) == []
    out = subprocess.run([sys.executable, "-m", "gptlab", "check", str(path)], capture_output=True, text=True)
    assert out.returncode == 0 and "ok (TemperedAttention)" in out.stdout
    for position in ("RoPE", "ALiBi"):  # the hooks it calls carry every position encoding
        mixed = experiment_file(tmp_path, EXAMPLE + f"from gptlab.modules import {position}\n"
                                f"POSITION_ENCODING_CLASS = {position}\n", name=f"tempered_{position}.py")
        assert check_experiment(load_experiment(mixed)) == [], position
    assert main(["--experiment", str(path), "--preset", "smoke", "--max-steps", "1", "train.num_samples=1",
                 "train.hellaswag=false", "--log-dir", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    # no transformers class computes a new attention: the export is refused, naming it
    assert export([str(tmp_path / "run"), str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err
    assert "cannot be exported exactly" in err and "attention TemperedAttention" in err and not (tmp_path / "hf").exists()


LEAKS_IN_TRAINING = {
    "an attention causal only in evaluation": ("y = causal_attention(q, k, v, pos_enc, pos)",
                                               "y = torch.nn.functional.scaled_dot_product_attention(q, k, v, "
                                               "is_causal=not self.training)"),
    "a mixing of the batch's sequences": ("q = q * self.log_temperature.exp()",
                                          "q = q * self.log_temperature.exp() + 0.1 * q.mean(dim=0, keepdim=True)"),
}


@pytest.mark.parametrize("edit, phrase", [
    (LEAKS_IN_TRAINING["an attention causal only in evaluation"], "it is not causal in training mode"),
    (LEAKS_IN_TRAINING["a mixing of the batch's sequences"], "the sequences of a batch are not computed apart"),
    (("            k, v = cache.append(k, v)\n", "            pass\n"), "generation with the KV cache gives other logits"),
    (("y = causal_attention(q, k, v, pos_enc, pos)",
      "y = torch.nn.functional.scaled_dot_product_attention(q, k, v)"), "it is not causal"),
    (("def forward(self, x, pos_enc, pos, cache=None):", "def forward(self, x):"), "a forward pass with ATTENTION_CLASS"),
    (("def __init__(self, config):\n        super().__init__()", "def __init__(self, config, width):\n        super().__init__()"),
     "cannot be built: TypeError"),
])
def test_a_component_that_breaks_the_interface_is_refused_before_training(tmp_path, capsys, edit, phrase):
    path = experiment_file(tmp_path, EXAMPLE.replace(*edit))
    log_dir = tmp_path / "run"
    assert main(["--experiment", str(path), "--preset", "smoke", "--max-steps", "1", "--log-dir", str(log_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "fails the component check" in err and phrase in err, err
    assert "gptlab check" in err and not (log_dir / "log.txt").exists()


def test_a_batch_norm_is_caught_in_training_where_it_mixes_rows_and_time(tmp_path):
    """BatchNorm as the norm: in evaluation it uses its running statistics and looks harmless; in
    training it normalises over the batch and the time steps, so later tokens and other sequences
    reach a token's output."""
    path = experiment_file(tmp_path, "import torch\nfrom torch import nn\n\n"
                                     "class BatchNorm(nn.Module):\n"
                                     "    def __init__(self, n_embd):\n        super().__init__()\n"
                                     "        self.bn = nn.BatchNorm1d(n_embd)\n\n"
                                     "    def forward(self, x):\n        return self.bn(x.transpose(1, 2)).transpose(1, 2)\n\n"
                                     "NORM_CLASS = BatchNorm\n", name="batchnorm.py")
    problems = " ".join(check_experiment(load_experiment(path)))
    assert "not causal in training mode" in problems and "not computed apart" in problems
