import dataclasses

import pytest
import torch

from gptlab import TrainingConfig, build_model, load_experiment
from gptlab.core.experiment import available_experiments

EXPERIMENTS = available_experiments()
TINY = dict(n_layer=2, n_head=4, n_embd=32, block_size=32, vocab_size=97)


def tiny_model(name: str, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return build_model(load_experiment(name), **{**TINY, **overrides})


def save_run_checkpoint(log_dir, model, step: int, experiment: str = "baseline", sequence_length: int = 16):
    """model's checkpoint as the trainer writes it (with its .sha256 marker) into log_dir: the
    record of experiment's classes, the configs, the step, the weights. Returns its path."""
    from gptlab.training.checkpoint import save_checkpoint
    exp = load_experiment(experiment)
    train = TrainingConfig(data="embedded", sequence_length=sequence_length, micro_batch_size=4,
                           total_batch_size=4 * sequence_length)
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / f"model_{step:05d}.pt"
    save_checkpoint(path, {
        "experiment": {"name": exp.name, "path": str(exp.path), "preset": "smoke", **exp.class_names()},
        "model_config": dataclasses.asdict(model.config), "training_config": dataclasses.asdict(train),
        "step": step, "model": model.state_dict()})
    return path


@pytest.fixture(params=EXPERIMENTS)
def experiment_name(request):
    return request.param


def pytest_collection_modifyitems(items):
    for item in items:  # the long tier is part of the slow one
        if item.get_closest_marker("long") or item.get_closest_marker("slurm"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def small_disk(tmp_path):
    """A directory on a disk of its own that fills up: a tmpfs of the size asked for (in bytes),
    mounted under tmp_path; skipped where this process may not mount one (not root)."""
    import subprocess
    mounted = []

    def make(size: int):
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here ({result.stderr.strip() or 'not root'})")
        mounted.append(where)
        return where

    yield make
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(directory, leave: int = 0) -> None:
    """Fill the disk holding directory until `leave` bytes are free (a file named filler)."""
    import shutil
    free = shutil.disk_usage(directory).free
    with open(directory / "filler", "wb") as f:
        f.write(b"\0" * max(0, free - leave))


@pytest.fixture
def one_thread(monkeypatch):
    """One CPU thread for this test and the processes it starts. PyTorch's multi-threaded CPU kernels
    can differ in the last bit from one process to the next on some CPUs (measured on a 2-core Xeon:
    2 of 16 fresh processes of one fixed training loop), and training amplifies that; a test of
    bitwise resume checks the checkpoint and its rules, not the kernels, so it runs them on one thread."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MKL_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
