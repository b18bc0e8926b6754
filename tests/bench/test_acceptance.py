"""The GPU acceptance command's CPU half: every check it makes on CUDA, at a tiny size, and a
failure made on purpose to show it exits non-zero naming it."""

import json
import subprocess
import sys

import pytest

from gptlab.core.experiment import available_experiments
from gptlab.paths import REPO_ROOT

pytestmark = pytest.mark.long


def acceptance(*args):
    return subprocess.run([sys.executable, "-m", "gptlab.bench.acceptance", "--device", "cpu", *args],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=1800)


def test_every_experiment_compiles_without_a_graph_break_and_matches_eager_on_the_cpu(tmp_path):
    """Compiled under bfloat16 autocast against float32 eager, 20 steps of each experiment's own optimizer;
    FlexAttention's ALiBi against SDPA with the bias; cached generation against recomputation."""
    result = acceptance("--no-speed", "--json", str(tmp_path / "a.json"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "a.json").read_text())
    assert [r["experiment"] for r in report["experiments"]] == available_experiments()
    for r in report["experiments"]:
        assert r["ok"] and r["graph_breaks"] == 0, r
        assert len(r["losses_compiled"]) == 20 and r["loss_max_difference"] <= report["loss_tolerance"]
        assert r["generation"]["tokens_equal"]
    assert report["flex_alibi"]["ok"] and report["flex_alibi"]["forward_max_difference"] < 1e-5
    assert report["failures"] == []


def test_a_failed_check_makes_the_command_fail_naming_it(tmp_path):
    """An attention that forgets its KV cache: cached generation differs; the command says which and exits 1."""
    exp = tmp_path / "forgetful.py"
    exp.write_text("import torch\nfrom gptlab.modules import BaseAttention\n\n"
                   "class Forgetful(BaseAttention):\n"
                   "    def forward(self, x, pos_enc, pos, cache=None):\n"
                   "        return super().forward(x, pos_enc, pos, None)\n\n"
                   "ATTENTION_CLASS = Forgetful\n")
    result = acceptance("--no-speed", "--experiments", "baseline", str(exp), "--json", str(tmp_path / "a.json"))
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert "FAILED: forgetful: generation" in result.stdout
    report = json.loads((tmp_path / "a.json").read_text())
    assert report["failures"] == ["forgetful: generation"]
