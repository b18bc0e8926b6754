"""Exact resume, checkpoint integrity and retention, non-finite steps."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from gptlab.paths import REPO_ROOT
from gptlab.training import checkpoint as ckpt
from gptlab.training.cli import main
from gptlab.training.logger import read_log

pytestmark = pytest.mark.slow

# dropout makes the RNG state part of what must be restored
BASE = ["--preset", "smoke", "--max-steps", "6", "train.eval_interval=3", "train.num_samples=0",
        "train.hellaswag=false", "model.dropout=0.1"]


def assert_bitwise_equal(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], dict):
            assert_bitwise_equal(a[key], b[key])
        elif torch.is_tensor(a[key]):
            assert torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


def final_state(log_dir: Path, step: int = 6) -> dict:
    return torch.load(log_dir / f"model_{step:05d}.pt", weights_only=True)


@pytest.mark.long  # the default tier's longest run; the SIGKILL tests resume bitwise too
@pytest.mark.parametrize("experiment", ["baseline", "muon"])
def test_stopped_and_resumed_run_is_bitwise_identical(tmp_path, experiment, one_thread):
    base = [*BASE, "--experiment", experiment]
    assert main([*base, "--log-dir", str(tmp_path / "whole")]) == 0
    assert main([*base, "--log-dir", str(tmp_path / "split"), "train.stop_at=4"]) == 0
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "split")] == ["model_00004.pt", "model_00003.pt"]
    assert main([*base, "--log-dir", str(tmp_path / "split"), "--resume", "auto"]) == 0
    whole, split = final_state(tmp_path / "whole"), final_state(tmp_path / "split")
    assert_bitwise_equal(whole["model"], split["model"])
    assert_bitwise_equal(whole["optimizer"], split["optimizer"])  # Muon's momentum and AdamW's moments alike
    if experiment == "muon":
        assert set(whole["optimizer"]) == {"muon", "adamw"} and whole["experiment"]["optimizer_class"].endswith("Muon")
    assert whole["loader"] == split["loader"]
    # the log continues: every step's loss is there, the repeated ones identical
    assert read_log(tmp_path / "whole" / "log.txt")["train"] == read_log(tmp_path / "split" / "log.txt")["train"]


@pytest.mark.long
@pytest.mark.parametrize("experiment", ["baseline", "muon"])
def test_two_process_ddp_resume_is_bitwise_identical(tmp_path, experiment, one_thread):
    def torchrun(*args):
        result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                                 str(REPO_ROOT / "train.py"), *BASE, "--experiment", experiment, *args],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]

    torchrun("--log-dir", str(tmp_path / "whole"))
    torchrun("--log-dir", str(tmp_path / "split"), "train.stop_at=2")
    torchrun("--log-dir", str(tmp_path / "split"), "--resume", str(tmp_path / "split" / "model_00002.pt"))
    whole, split = final_state(tmp_path / "whole"), final_state(tmp_path / "split")
    assert_bitwise_equal(whole["model"], split["model"])
    assert len(whole["rng"]) == 2 and whole["loader"] == split["loader"]


@pytest.mark.long
def test_keep_last_keeps_only_the_newest_checkpoints(tmp_path):
    assert main([*BASE, "--log-dir", str(tmp_path), "train.eval_interval=1", "train.keep_last=2"]) == 0
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["model_00006.pt", "model_00005.pt"]
    assert not list(tmp_path.glob("model_00004*"))


def test_resume_auto_skips_a_damaged_checkpoint_with_a_warning(tmp_path, capsys):
    assert main([*BASE, "--log-dir", str(tmp_path)]) == 0
    newest = tmp_path / "model_00006.pt"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: torch might still read it, the checksum does not match
    newest.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="skipping checkpoint .*model_00006.pt: its contents do not match"):
        assert ckpt.latest_checkpoint(tmp_path) == tmp_path / "model_00003.pt"
    (tmp_path / "model_00003.pt.sha256").unlink()  # as if killed between the rename and the marker
    with pytest.warns(UserWarning) as caught:
        assert ckpt.latest_checkpoint(tmp_path) == tmp_path / "model_00003.pt"
    assert "model_00006.pt: its contents do not match" in str(caught[0].message)
    assert "model_00003.pt had no .sha256 marker; it loads and is consistent" in str(caught[1].message)
    assert ckpt.verify(tmp_path / "model_00003.pt") is None  # its marker is written again
    (tmp_path / "model_00003.pt.sha256").unlink()
    (tmp_path / "model_00003.pt").write_bytes((tmp_path / "model_00003.pt").read_bytes()[:5000])
    with pytest.warns(UserWarning), pytest.raises(ckpt.CheckpointError, match="holds 2 checkpoint"):
        ckpt.latest_checkpoint(tmp_path)


@pytest.mark.long
def test_a_failed_save_leaves_the_previous_checkpoint_intact(tmp_path):
    assert main([*BASE, "--log-dir", str(tmp_path), "train.stop_at=3"]) == 0
    before = {p.name: p.read_bytes() for p in tmp_path.glob("model_*")}
    size = (tmp_path / "model_00003.pt").stat().st_size

    def small_files():  # the disk "fills up": no file may grow past half a checkpoint
        import resource
        import signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size // 2, size // 2))

    result = subprocess.run([sys.executable, str(REPO_ROOT / "train.py"), *BASE, "--log-dir", str(tmp_path),
                             "--resume", "auto"], capture_output=True, text=True, timeout=300, preexec_fn=small_files)
    assert result.returncode == 1  # it trained, then could not save: failed, not refused
    assert "could not write checkpoint" in result.stderr and "are intact" in result.stderr
    assert result.stderr.count("error:") == 1 and "Traceback" not in result.stderr
    assert {p.name: p.read_bytes() for p in tmp_path.glob("model_*")} == before
    assert not list(tmp_path.glob(".model_*")) and ckpt.verify(tmp_path / "model_00003.pt") is None


FLAKY = """
    import torch
    from gptlab.modules import MLP

    class FlakyMLP(MLP):
        # returns NaN during training forward passes number {first} to {last} (counting from 1)
        calls = 0

        def forward(self, x):
            out = super().forward(x)
            if torch.is_grad_enabled():
                FlakyMLP.calls += 1
                if {first} <= FlakyMLP.calls <= {last}:
                    return out * float("nan")
            return out

    MLP_CLASS = FlakyMLP
"""


def test_a_non_finite_step_is_skipped_and_counted(tmp_path):
    exp = tmp_path / "flaky.py"
    # smoke: 2 layers x 2 micro-steps = 4 MLP calls per step; step 2 (calls 9-12) gets NaN
    exp.write_text(textwrap.dedent(FLAKY.format(first=9, last=9)))
    args = ["--experiment", str(exp), *BASE, "model.dropout=0.0", "--log-dir", str(tmp_path / "run")]
    assert main([*args, "train.stop_at=2"]) == 0
    before = final_state(tmp_path / "run", 2)
    assert main([*args[:-2], "--log-dir", str(tmp_path / "run2"), "train.stop_at=3"]) == 0
    after = final_state(tmp_path / "run2", 3)
    assert_bitwise_equal(before["model"], after["model"])  # step 2 changed nothing
    assert "2 skipped_nonfinite 1" in (tmp_path / "run2" / "log.txt").read_text()


@pytest.mark.long
def test_consecutive_non_finite_steps_stop_the_run_keeping_the_last_checkpoint(tmp_path, capsys):
    exp = tmp_path / "diverge.py"
    exp.write_text(textwrap.dedent(FLAKY.format(first=17, last=10**9)))  # from step 4 on
    code = main(["--experiment", str(exp), *BASE, "--log-dir", str(tmp_path), "--max-steps", "20",
                 "train.max_bad_steps=3"])
    assert code == 4  # diverged
    err = capsys.readouterr().err
    # steps 4 and 5 are skipped, step 6's checkpoint holds the weights of step 4, step 6 is the third
    assert "3 consecutive steps had a non-finite loss or gradient norm (last at step 6)" in err
    assert "model_00006.pt" in err
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["model_00006.pt", "model_00003.pt"]
    assert ckpt.verify(tmp_path / "model_00006.pt") is None
    last = final_state(tmp_path, 6)
    assert all(torch.isfinite(t).all() for t in last["model"].values()) and last["bad_steps"] == 2


@pytest.mark.long
@pytest.mark.parametrize("before, after", [(2, 1), (1, 2)])
def test_resume_on_another_number_of_processes_continues_the_same_data(tmp_path, before, after):
    def launch(nproc, *args):
        launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
                    if nproc > 1 else [sys.executable])
        result = subprocess.run([*launcher, str(REPO_ROOT / "train.py"), *BASE, "model.dropout=0.0", *args],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]

    launch(1, "--log-dir", str(tmp_path / "whole"))
    launch(before, "--log-dir", str(tmp_path / "split"), "train.stop_at=3")
    launch(after, "--log-dir", str(tmp_path / "split"), "--resume", "auto")
    whole, split = read_log(tmp_path / "whole" / "log.txt"), read_log(tmp_path / "split" / "log.txt")
    for key in ("train", "val"):
        for (s1, a), (s2, b) in zip(whole[key], split[key], strict=True):
            assert s1 == s2 and abs(a - b) < 1e-4, (key, s1, a, b)
    a, b = final_state(tmp_path / "whole"), final_state(tmp_path / "split")
    assert a["loader"] == b["loader"]
    for name in a["model"]:
        torch.testing.assert_close(a["model"][name], b["model"][name], atol=1e-5, rtol=1e-4)


def test_resume_without_a_preset_continues_the_runs_own_preset(tmp_path, capsys):
    """`--resume auto` after a smoke run continues it as a smoke run (its log says it was one): refusing it for
    differing from the full recipe in every field helped nobody."""
    run = ["--experiment", "rope", "--log-dir", str(tmp_path), "train.num_samples=0", "train.hellaswag=false"]
    assert main([*run, "--preset", "smoke", "train.stop_at=2"]) == 0
    capsys.readouterr()
    assert main([*run, "--resume", "auto", "train.stop_at=3"]) == 0
    assert "--resume: the run was trained with --preset smoke" in capsys.readouterr().out
    assert read_log(tmp_path / "log.txt")["train"][-1][0] == 2
    # an override the run was not trained with is refused, naming the overrides that continue it as it was
    assert main([*run, "--resume", "auto", "train.stop_at=4", "model.n_layer=3", "train.max_lr=0.001"]) == 2
    err = capsys.readouterr().err
    assert "model.n_layer was 2, now 3" in err
    assert "to continue it as it was trained, add: model.n_layer=2 train.max_lr=0.003" in err
