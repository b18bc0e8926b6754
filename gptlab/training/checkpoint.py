"""Checkpoints: `model_<step:05d>.pt` in the run's log directory.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, read back with
`torch.load(weights_only=True)`: no pickled class, so loading one cannot run code. It
holds the model, optimizer, step, both configs, the component class names, every rank's
data-loader position and RNG states. Saving is atomic (temporary file in the same
directory, fsync, rename), and a `.sha256` file written after the rename marks the
checkpoint complete; `latest_checkpoint` takes only checkpoints whose sum matches.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch

FORMAT_VERSION = 1
NAME = re.compile(r"model_(\d{5,})\.pt")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written or used; the message says which and what to do."""


def checkpoint_path(log_dir: Path, step: int) -> Path:
    return Path(log_dir) / f"model_{step:05d}.pt"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(directory: Path) -> None:
    if os.name == "posix":
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def save_checkpoint(path: Path, state: dict) -> None:
    """Write state to path atomically, then its checksum. A failure (a full disk) removes
    the partial file and leaves every earlier checkpoint as it was."""
    path = Path(path)
    try:
        _atomic_write(path, lambda f: torch.save({"format_version": FORMAT_VERSION, **state}, f))
        digest = _sha256(path)
        _atomic_write(path.with_name(path.name + ".sha256"), lambda f: f.write(f"{digest}  {path.name}\n".encode()))
    except (OSError, RuntimeError) as e:  # torch's zip writer reports a failed write as RuntimeError
        path.unlink(missing_ok=True)
        path.with_name(path.name + ".sha256").unlink(missing_ok=True)
        reason = getattr(e, "strerror", None) or str(e).splitlines()[0][:200]
        free = shutil.disk_usage(path.parent).free / 2**20
        raise CheckpointError(f"could not write checkpoint {path} ({reason}; {free:,.0f} MiB free there). "
                              f"Earlier checkpoints in {path.parent} are intact; free disk space (or fix "
                              f"permissions) and continue with --resume auto") from None


def verify(path: Path) -> str | None:
    """None when path is a complete checkpoint, else what is wrong with it."""
    path = Path(path)
    marker = path.with_name(path.name + ".sha256")
    if not path.is_file():
        return "it does not exist"
    if not marker.is_file():
        return "its .sha256 completion marker is missing (the save did not finish)"
    expected = (marker.read_text().split() or [""])[0]
    if _sha256(path) != expected:
        return "its contents do not match its stored sha256 (truncated or corrupted)"
    return None


def load_checkpoint(path: Path, check: bool = True) -> dict:
    """The checkpoint's dict, on the CPU. check=False skips the sha256 (for files that
    were copied without their .sha256); a file torch cannot read is still refused."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; give the path of a model_NNNNN.pt file, "
                              f"or --resume auto to take the newest one of the experiment")
    problem = verify(path) if check else None
    if problem and not problem.startswith("its .sha256"):
        raise CheckpointError(f"checkpoint {path} is damaged: {problem}. Use an earlier checkpoint "
                              f"(--resume auto picks the newest intact one)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                              f"it is damaged or not a gptlab checkpoint. Use an earlier one") from None
    if not isinstance(state, dict) or "model" not in state or "format_version" not in state:
        raise CheckpointError(f"{path} is not a gptlab checkpoint (no model/format_version entries)")
    return state


def list_checkpoints(log_dir: Path) -> list[Path]:
    """model_NNNNN.pt files in log_dir, newest step first."""
    found = [p for p in Path(log_dir).glob("model_*.pt") if NAME.fullmatch(p.name)]
    return sorted(found, key=lambda p: int(NAME.fullmatch(p.name).group(1)), reverse=True)


def latest_checkpoint(log_dir: Path) -> Path | None:
    """The newest complete checkpoint; damaged or partial ones are skipped with a warning."""
    for path in list_checkpoints(log_dir):
        problem = verify(path)
        if problem is None:
            return path
        warnings.warn(f"skipping checkpoint {path}: {problem}", stacklevel=2)
    return None


def prune_checkpoints(log_dir: Path, keep_last: int) -> None:
    if keep_last <= 0:
        return
    for path in list_checkpoints(log_dir)[keep_last:]:
        path.unlink(missing_ok=True)
        path.with_name(path.name + ".sha256").unlink(missing_ok=True)


def remove_stale_temporaries(log_dir: Path) -> None:
    """Delete what saves that were killed midway left behind (never a finished checkpoint)."""
    for tmp in Path(log_dir).glob(".model_*.pt*.tmp*"):
        tmp.unlink(missing_ok=True)


def rng_state(device_type: str) -> dict:
    """This process's RNG states as plain data (no pickled numpy objects)."""
    np_state = np.random.get_state()
    state = {"python": list(random.getstate()[1]), "python_pos": random.getstate()[2],
             "numpy": torch.from_numpy(np_state[1].astype(np.int64)), "numpy_pos": int(np_state[2]),
             "torch": torch.get_rng_state()}
    if device_type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict, device_type: str) -> None:
    random.setstate((3, tuple(state["python"]), state["python_pos"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    torch.set_rng_state(state["torch"])
    if device_type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"])
