"""train.py end to end: real runs of the smoke preset in temporary directories."""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from gptlab import load_model
from gptlab.data import embedded
from gptlab.paths import REPO_ROOT
from gptlab.training.checkpoint import CheckpointError
from gptlab.training import checkpoint as ckpt
from gptlab.training.cli import main
from gptlab.training.distributed import torchrun_command
from gptlab.training.logger import read_log
from tests.conftest import EXPERIMENTS

OFFLINE = ["train.hellaswag=false"]


def run_train(*args, timeout=300):
    return subprocess.run([sys.executable, str(REPO_ROOT / "train.py"), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=os.getcwd())


def test_help_documents_the_flags_and_the_override_syntax():
    out = run_train("--help").stdout
    for text in ("--experiment", "--preset", "--resume", "--inference", "--max-steps", "--log-dir", "--seed",
                 "--device", "--no-compile", "model.FIELD=VALUE", "n_kv_head", "total_batch_size"):
        assert text in out


@pytest.mark.slow
def test_smoke_run_writes_the_log_and_checkpoints_then_generates(tmp_path):
    log_dir = tmp_path / "run"
    result = run_train("--experiment", "rope", "--preset", "smoke", "--log-dir", str(log_dir), "--max-steps", "4",
                       "train.eval_interval=2", *OFFLINE)
    assert result.returncode == 0, result.stderr
    assert "data: embedded corpus" in result.stdout and "tok/sec" in result.stdout
    series = read_log(log_dir / "log.txt")
    assert [s for s, _ in series["train"]] == [0, 1, 2, 3]
    assert [s for s, _ in series["val"]] == [0, 2, 4]
    assert series["val"][-1][1] < series["val"][0][1]
    text = (log_dir / "log.txt").read_text()
    assert "0 hella skipped" in text and "# experiment" in text and "# data embedded corpus" in text
    assert text.count("hella skipped") == 1 and result.stdout.count("hella skipped") == 1  # said once per run
    assert "s a step: the remaining 2 steps take about" in result.stdout  # the time estimate
    assert "done: step 4 of 4 in" in result.stdout and f"plot: python plot_training_log.py {log_dir / 'log.txt'}" in result.stdout
    assert [p.name for p in ckpt.list_checkpoints(log_dir)] == ["model_00004.pt", "model_00002.pt"]
    state = torch.load(log_dir / "model_00004.pt", weights_only=True)
    assert state["step"] == 4 and state["model_config"]["n_layer"] == 2
    assert state["experiment"]["position_encoding_class"] == "gptlab.modules.position.RoPE"

    result = run_train("--inference", str(log_dir / "model_00004.pt"), "--num-samples", "2",
                       "--max-new-tokens", "8", "--prompt", "The function")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("--- sample") == 2 and result.stdout.count("The function") == 2


@pytest.mark.long
def test_every_shipped_experiment_trains_a_few_smoke_steps(tmp_path, capsys):
    for name in EXPERIMENTS:
        code = main(["--experiment", name, "--preset", "smoke", "--log-dir", str(tmp_path / name),
                     "--max-steps", "2", "train.num_samples=1", *OFFLINE])
        assert code == 0, capsys.readouterr().err
        assert (tmp_path / name / "model_00002.pt").is_file()


@pytest.mark.slow
def test_a_new_run_never_overwrites_an_existing_one(tmp_path, capsys):
    args = ["--preset", "smoke", "--log-dir", str(tmp_path), "--max-steps", "1", "train.num_samples=0", *OFFLINE]
    assert main(args) == 0
    before = (tmp_path / "log.txt").read_bytes()
    assert main(args) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (tmp_path / "log.txt").read_bytes() == before


@pytest.mark.parametrize("override, message", [
    ("model.n_layers=3", "GPTConfig has no field 'n_layers'; did you mean n_layer"),
    ("train.max_lr=fast", "TrainingConfig.max_lr takes a number, got 'fast'"),
    ("n_layer=3", "not of the form model.FIELD=VALUE"),
    ("train.total_batch_size=1000", "total_batch_size=1000 is not divisible by"),
    ("model.n_head=5", "n_embd=64 is not divisible by n_head=5"),
    ("model.n_kv_head=4", "n_kv_head=4 would be ignored: BaseAttention uses 8 K/V head(s)"),
    ("model.rope_theta=500", "rope_theta=500.0 would be ignored"),
])
def test_bad_overrides_are_one_clear_error(tmp_path, capsys, override, message):
    assert main(["--preset", "smoke", "--log-dir", str(tmp_path), override, *OFFLINE]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "log.txt").exists()


@pytest.mark.slow
def test_a_mixture_of_experts_logs_its_balance_loss_load_and_drops(tmp_path, capsys):
    log_dir = tmp_path / "moe"
    assert main(["--experiment", "moe", "--preset", "smoke", "--log-dir", str(log_dir), "--max-steps", "2",
                 "train.num_samples=0", "model.moe_z_weight=0.001", *OFFLINE]) == 0
    out = capsys.readouterr().out
    assert "parameters (" in out and "active per token)" in out
    assert "| moe_balance " in out and "| moe_z " in out and "| moe_load " in out and "| moe_dropped " in out
    series = read_log(log_dir / "log.txt")
    for step in (0, 1):
        loads = [dict(series[f"train_moe_load_{i}"])[step] for i in range(8)]
        assert sum(loads) == pytest.approx(1.0, abs=1e-5)
        assert 0.0 <= dict(series["train_moe_dropped"])[step] < 1.0
        assert 0.0 < dict(series["train_moe_balance"])[step] < 1.0  # summed over 2 layers, weight 0.01
        assert 0.0 < dict(series["train_moe_z"])[step]
    text = (log_dir / "log.txt").read_text()
    assert "# params_active " in text


@pytest.mark.long
@pytest.mark.parametrize("experiment", ["baseline", "moe", "muon"])
def test_torchrun_two_ranks_match_one_process_with_the_same_global_batch(tmp_path, experiment):
    # moe: every expert gets a gradient on every rank (zeros when it received no token), so DDP needs no
    # find_unused_parameters; capacity and the balance loss are per micro-batch, the same in both runs
    torchrun = Path(sys.executable).parent / "torchrun"
    launcher = [str(torchrun)] if torchrun.exists() else [sys.executable, "-m", "torch.distributed.run"]
    common = ["--experiment", experiment, "--preset", "smoke", "--max-steps", "6", "train.eval_interval=3", *OFFLINE]
    ddp = subprocess.run([*launcher, "--standalone", "--nproc_per_node=2", str(REPO_ROOT / "train.py"),
                          "--log-dir", str(tmp_path / "ddp"), *common], capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = run_train("--log-dir", str(tmp_path / "single"), *common)
    assert single.returncode == 0, single.stderr

    # Muon orthogonalises its update in bfloat16 (torch.optim.Muon): a gradient summed in another order (over ranks,
    # or over micro-batches) rounds differently there, by up to 2^-8 of each update, so it agrees to that, not 1e-5
    loss_tol, weight_tol = (2e-3, 5e-3) if experiment == "muon" else (1e-4, 1e-5)
    ddp_log, single_log = read_log(tmp_path / "ddp" / "log.txt"), read_log(tmp_path / "single" / "log.txt")
    # total batch 1024 = 8 x 64 x 2: one process accumulates 2 micro-batches, two ranks read one each
    assert "# batch" in (tmp_path / "ddp" / "log.txt").read_text()
    for key in ("train", "val"):
        for (s1, a), (s2, b) in zip(ddp_log[key], single_log[key], strict=True):
            assert s1 == s2 and abs(a - b) < loss_tol, (key, s1, a, b)
    assert all(spread == 0.0 for _, spread in ddp_log["rank_param_spread"])  # ranks hold identical weights
    a = torch.load(tmp_path / "ddp" / "model_00006.pt", weights_only=True)
    b = torch.load(tmp_path / "single" / "model_00006.pt", weights_only=True)
    assert len(a["rng"]) == 2 and a["loader"] == b["loader"]  # one position for every rank, as for one process
    for name in b["model"]:
        torch.testing.assert_close(a["model"][name], b["model"][name], atol=weight_tol, rtol=1e-4)


def test_plain_start_on_several_gpus_relaunches_under_torchrun():
    command = torchrun_command("train.py", ["--experiment", "rope"], 8)
    assert command[1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=8", "train.py",
                           "--experiment", "rope"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.long
def test_two_nodes_of_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    # total batch 1024 = 4 x 64 x 4 ranks; one process accumulates 4 micro-batches of 4
    common = ["--experiment", "rope", "--preset", "smoke", "--max-steps", "4", "train.eval_interval=2",
              "train.micro_batch_size=4", "train.num_samples=0", *OFFLINE]
    port = free_port()
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=2",
                               "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=gptlab-test",
                               str(REPO_ROOT / "train.py"), "--log-dir", str(tmp_path / "nodes"), *common],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for node in nodes:
        out, err = node.communicate(timeout=600)
        assert node.returncode == 0, err[-3000:]
    single = run_train("--log-dir", str(tmp_path / "single"), *common)
    assert single.returncode == 0, single.stderr
    nodes_log, single_log = read_log(tmp_path / "nodes" / "log.txt"), read_log(tmp_path / "single" / "log.txt")
    assert '"processes": 4' in (tmp_path / "nodes" / "log.txt").read_text()
    for key in ("train", "val"):
        for (s1, a), (s2, b) in zip(nodes_log[key], single_log[key], strict=True):
            assert s1 == s2 and abs(a - b) < 1e-4, (key, s1, a, b)


EXTRAS = """
    import torch
    from gptlab.modules import MLP, Extras

    class ReportingMLP(MLP):
        # a stand-in for a mixture of experts: an extra loss and a metric, as a component reports them
        def forward(self, x):
            out = super().forward(x)
            return out, Extras(losses={"balance": 0.01 * out.pow(2).mean()}, metrics={"out_rms": out.pow(2).mean().sqrt()})

    MLP_CLASS = ReportingMLP
"""


@pytest.mark.slow
def test_extra_losses_reach_the_log_and_validation_stays_cross_entropy(tmp_path, capsys):
    exp = tmp_path / "reporting.py"
    exp.write_text(textwrap.dedent(EXTRAS))
    log_dir = tmp_path / "run"
    assert main(["--experiment", str(exp), "--preset", "smoke", "--max-steps", "3", "train.eval_interval=3",
                 "train.num_samples=0", *OFFLINE, "--log-dir", str(log_dir)]) == 0
    assert "| balance " in capsys.readouterr().out
    series = read_log(log_dir / "log.txt")
    assert [s for s, _ in series["train_balance"]] == [0, 1, 2] and all(v > 0 for _, v in series["train_balance"])
    assert [s for s, _ in series["train_out_rms"]] == [0, 1, 2]
    # the checkpoint's class is found again in the experiment file, and validation is plain cross-entropy
    model = load_model(log_dir / "model_00003.pt")
    assert type(model.transformer.h[0].mlp).__name__ == "ReportingMLP"
    val = embedded.embedded_splits()["val"]
    losses = []
    for i in range(4):  # the smoke preset's val_tokens=2048: 4 batches of 8 x 64
        buf = torch.from_numpy(val[i * 512:(i + 1) * 512 + 1].astype("int64"))
        logits = model(buf[:-1].view(8, 64)).logits
        losses.append(torch.nn.functional.cross_entropy(logits.flatten(0, 1), buf[1:]).item())
    assert dict(series["val"])[3] == pytest.approx(sum(losses) / 4, abs=2e-6)
    exp.unlink()
    with pytest.raises(CheckpointError, match="ReportingMLP was defined in the experiment file .*reporting.py, "
                                              "which no longer exists"):
        load_model(log_dir / "model_00003.pt")


@pytest.mark.long
def test_bf16_autocast_on_the_cpu_trains_close_to_float32(tmp_path):
    """train.dtype=bf16 autocasts on any device: the losses follow float32's to bf16's
    precision (not bitwise), and the record says which dtype the run used."""
    runs = {}
    for dtype in ("fp32", "bf16"):
        assert main(["--preset", "smoke", "--max-steps", "3", "train.eval_interval=3", "train.num_samples=0",
                     *OFFLINE, f"train.dtype={dtype}", "--log-dir", str(tmp_path / dtype)]) == 0
        runs[dtype] = read_log(tmp_path / dtype / "log.txt")
    for key in ("train", "val"):
        ours, reference = [v for _, v in runs["bf16"][key]], [v for _, v in runs["fp32"][key]]
        assert ours != reference and ours == pytest.approx(reference, abs=0.05)
    assert json.loads((tmp_path / "bf16" / "run.json").read_text())["dtype"] == "bfloat16 autocast"
    assert json.loads((tmp_path / "fp32" / "run.json").read_text())["dtype"] == "float32"


@pytest.mark.slow
def test_load_model_finds_gptlab_classes_without_running_the_experiment_file(tmp_path, capsys):
    exp = tmp_path / "myrope.py"
    exp.write_text((REPO_ROOT / "experiments" / "rope.py").read_text())
    log_dir = tmp_path / "run"
    assert main(["--experiment", str(exp), "--preset", "smoke", "--max-steps", "1", "train.num_samples=0",
                 *OFFLINE, "--log-dir", str(log_dir)]) == 0
    exp.write_text("raise RuntimeError('the experiment file was executed')\n")
    model = load_model(log_dir / "model_00001.pt")
    state = torch.load(log_dir / "model_00001.pt", weights_only=True)
    assert type(model.transformer.wpe).__name__ == "RoPE" and not model.training
    for name, tensor in state["model"].items():
        assert torch.equal(model.state_dict()[name], tensor)
    # the weights of a compiled model's state dict, as other tools write them, load too
    state["model"] = {f"_orig_mod.{name}": tensor for name, tensor in state["model"].items()}
    ckpt.save_checkpoint(tmp_path / "compiled.pt", state)
    for name, tensor in load_model(tmp_path / "compiled.pt").state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor)


@pytest.mark.slow
def test_inference_seed_zero_is_seed_zero(tmp_path, capsys):
    log_dir = tmp_path / "run"
    assert main(["--preset", "smoke", "--max-steps", "1", "train.num_samples=0", *OFFLINE,
                 "--log-dir", str(log_dir)]) == 0
    capsys.readouterr()

    def samples(*seed):
        assert main(["--inference", str(log_dir / "model_00001.pt"), "--num-samples", "1", "--max-new-tokens", "12",
                     *seed]) == 0
        return capsys.readouterr().out.split("--- sample 0")[1]

    assert samples("--seed", "0") == samples("--seed", "0") != samples("--seed", "42") == samples()
