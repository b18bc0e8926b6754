"""Downloads on a machine without network: one error in seconds that says what to do, not a minute
of retries and a traceback (HF_HUB_OFFLINE=1, Hugging Face's own switch, stands for no network, so
these hold on a machine that has one too)."""

import os
import socket
import subprocess
import sys
import time

import pytest

from gptlab.network import reachable, said_offline
from gptlab.paths import REPO_ROOT


def offline(tmp_path) -> dict:
    """An environment with no network as far as Hugging Face knows, and an empty cache."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}


def test_reachable_tells_an_open_port_from_a_closed_one_and_an_unknown_name():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    assert reachable("127.0.0.1", port, timeout=2)
    server.close()
    assert not reachable("127.0.0.1", port, timeout=2)
    assert not reachable("no-such-host.invalid", timeout=2)


def test_hugging_faces_offline_switch_counts(monkeypatch):
    for value, expected in (("1", True), ("true", True), ("0", False), ("", False)):
        monkeypatch.setenv("HF_HUB_OFFLINE", value)
        assert said_offline() is expected


def test_fineweb_offline_says_where_the_data_must_go_at_once(tmp_path):
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "gptlab.data.fineweb", "--out", str(tmp_path / "fw")],
                            capture_output=True, text=True, env=offline(tmp_path), cwd=REPO_ROOT, timeout=120)
    assert result.returncode != 0 and time.monotonic() - started < 20
    assert "cannot be reached" in result.stderr and "gptlab prepare" in result.stderr
    assert "Traceback" not in result.stderr


def test_gpt2_offline_and_not_cached_is_one_error_at_once(tmp_path):
    pytest.importorskip("transformers")
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "gptlab", "generate", "gpt2"], capture_output=True, text=True,
                            env=offline(tmp_path), cwd=REPO_ROOT, timeout=120)
    assert result.returncode == 2 and time.monotonic() - started < 30
    assert result.stderr.count("error:") == 1 and "not in the Hugging Face cache" in result.stderr
    assert "save_pretrained(DIR)" in result.stderr and "Retrying" not in result.stderr + result.stdout


@pytest.mark.long
def test_lm_eval_offline_with_a_hub_task_is_one_error(tmp_path):
    pytest.importorskip("lm_eval")
    from tests.conftest import save_run_checkpoint, tiny_model
    save_run_checkpoint(tmp_path / "run", tiny_model("baseline", vocab_size=50304), 1)
    result = subprocess.run([sys.executable, "-m", "gptlab.evaluation.harness", "--model", "gptlab", "--model_args",
                             f"checkpoint={tmp_path / 'run'}", "--tasks", "hellaswag", "--limit", "2"],
                            capture_output=True, text=True, env=offline(tmp_path), cwd=REPO_ROOT, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "lm-eval could not load a task's data" in result.stderr and "--include_path" in result.stderr
    assert "Traceback" not in result.stderr
