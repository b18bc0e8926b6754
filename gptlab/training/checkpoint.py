"""Checkpoints: `model_<step:05d>.pt` in the run's log directory, and everything about them.

What a checkpoint holds (a run's `TrainState` and its description), writing it, reading it,
the rules for what may change when a run is resumed from it, and building the model it
describes (`load_model`) all live here.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, read back with
`torch.load(weights_only=True)`: no pickled class, so loading one cannot run code; component
classes are found again from the dotted names it records. Saving is atomic
(gptlab.files), and a `.sha256` file written after the rename marks the checkpoint
complete; `latest_checkpoint` takes only checkpoints whose sum matches.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import shlex
import sys
import warnings
from pathlib import Path

import torch

from gptlab.core.config import GPTConfig, TrainingConfig
from gptlab.core.experiment import Experiment, ExperimentError, experiment_from_record, recorded_classes
from gptlab.files import atomic_write, atomic_write_text, disk_full, remove_temporaries, write_failure
from gptlab.models.gpt import build_gpt
from gptlab.paths import missing
from gptlab.training.distributed import Dist, barrier
from gptlab.training.state import plain_weights

FORMAT_VERSION = 1
NAME = re.compile(r"model_(\d{5,})\.pt")
# training fields that may change when a run is resumed: they do not alter the trajectory
# (micro_batch_size too: every step reads the same tokens whatever the micro-batches and processes)
RESUMABLE_CHANGES = {"stop_at", "eval_interval", "val_interval", "val_steps", "val_tokens", "hellaswag", "hellaswag_limit", "hellaswag_file",
                     "num_samples", "sample_length", "sample_prompt", "keep_last", "max_bad_steps", "compile",
                     "data_dir", "micro_batch_size", "allow_data_change", "allow_source_change", "wandb", "tensorboard"}


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written or used; the message says which and what to do."""


class SaveFailed(CheckpointError):
    """A checkpoint could not be written while the run trained: the run stops, and its outcome is a
    failure (status 1), not a refusal; `disk_full` says whether space ran out."""

    def __init__(self, message: str, disk_full: bool = False):
        super().__init__(message)
        self.disk_full = disk_full


def checkpoint_path(log_dir: Path, step: int) -> Path:
    return Path(log_dir) / f"model_{step:05d}.pt"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(path: Path, state: dict) -> None:
    """Write state to path atomically, then its checksum. A failure (a full disk) removes
    the partial file and leaves every earlier checkpoint as it was."""
    path = Path(path)
    try:
        atomic_write(path, lambda f: torch.save({"format_version": FORMAT_VERSION, **state}, f))
        atomic_write_text(path.with_name(path.name + ".sha256"), f"{_sha256(path)}  {path.name}\n")
    except (OSError, RuntimeError) as e:  # torch's zip writer reports a failed write as RuntimeError
        path.unlink(missing_ok=True)
        path.with_name(path.name + ".sha256").unlink(missing_ok=True)
        needed = state_bytes(state)
        raise SaveFailed(f"could not write checkpoint {path}: {write_failure(e, path.parent, needed)}. Earlier "
                         f"checkpoints in {path.parent} are intact; free disk space (or fix permissions) and "
                         f"continue with --resume auto", disk_full(e, path.parent, needed)) from None


def state_bytes(state) -> int:
    """The bytes of the tensors in a checkpoint's state: about what its file needs."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(state_bytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(state_bytes(v) for v in state)
    return 0


NO_MARKER = "its .sha256 completion marker is missing (the save did not finish, or it was copied without it)"


def verify(path: Path) -> str | None:
    """None when path is a complete checkpoint, else what is wrong with it."""
    path = Path(path)
    marker = path.with_name(path.name + ".sha256")
    if not path.is_file():
        return "it does not exist"
    if not marker.is_file():
        return NO_MARKER
    expected = (marker.read_text().split() or [""])[0]
    if _sha256(path) != expected:
        return "its contents do not match its stored sha256 (truncated or corrupted)"
    return None


def load_checkpoint(path: Path, check: bool = True) -> dict:
    """The checkpoint's dict, on the CPU. check=False skips the sha256 (for files that
    were copied without their .sha256); a file torch cannot read is still refused."""
    path = Path(path)
    if path.is_dir():
        inside = list_checkpoints(path)
        raise CheckpointError(f"{path} is a directory; give the path of a model_NNNNN.pt file in it"
                              f"{' such as ' + inside[0].name if inside else ''}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {missing(path)}; give the path of a model_NNNNN.pt file, "
                              f"or --resume auto to take the newest one of the experiment")
    problem = verify(path) if check else None
    if problem and problem != NO_MARKER:
        raise CheckpointError(f"checkpoint {path} is damaged: {problem}. Use an earlier checkpoint "
                              f"(--resume auto picks the newest intact one)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch's own message would advise loading it unsafely: not for a file of unknown origin
        raise CheckpointError(f"checkpoint {path} cannot be read as a gptlab checkpoint ({type(e).__name__}); "
                              f"it is damaged, or not a checkpoint gptlab wrote. Use an earlier one") from None
    if not isinstance(state, dict) or "model" not in state or "format_version" not in state:
        raise CheckpointError(f"{path} is not a gptlab checkpoint (no model/format_version entries)")
    return state


def list_checkpoints(log_dir: Path) -> list[Path]:
    """model_NNNNN.pt files in log_dir, newest step first."""
    found = [p for p in Path(log_dir).glob("model_*.pt") if NAME.fullmatch(p.name)]
    return sorted(found, key=lambda p: int(NAME.fullmatch(p.name).group(1)), reverse=True)


def latest_checkpoint(log_dir: Path) -> Path | None:
    """The newest usable checkpoint, or None where there is no checkpoint at all.

    Damaged ones are skipped with a warning. One without its .sha256 marker (copied without
    it, or killed between the rename and the marker) is used, and given its marker, when it
    loads and is consistent. Where checkpoints exist but none is usable, CheckpointError:
    resuming must never quietly start over on top of them."""
    unusable = []
    for path in list_checkpoints(log_dir):
        problem = verify(path)
        if problem == NO_MARKER:
            problem = _check_contents(path)
            if problem is None:
                atomic_write_text(path.with_name(path.name + ".sha256"), f"{_sha256(path)}  {path.name}\n")
                warnings.warn(f"checkpoint {path} had no .sha256 marker; it loads and is consistent, so it is used "
                              f"(and its marker written)", stacklevel=2)
        if problem is None:
            return path
        warnings.warn(f"skipping checkpoint {path}: {problem}", stacklevel=2)
        unusable.append(f"{path.name}: {problem}")
    if unusable:
        raise CheckpointError(f"{log_dir} holds {len(unusable)} checkpoint(s), none usable:\n  - " +
                              "\n  - ".join(unusable) + "\nresuming will not start over on top of them: move them "
                              "away (or give the run another --log-dir) to start afresh, or --resume a good copy")
    return None


def find_checkpoint(source: Path | str) -> Path:
    """The checkpoint a command was given: a checkpoint file itself, or a run's newest intact
    one where source is its log directory (log_train/<experiment>/log) or the run's directory
    above it; each damaged checkpoint skipped is named on stderr. CheckpointError when there
    is none to use, saying what was found."""
    path = Path(source)
    if path.is_file():
        return path
    if not path.is_dir():
        raise CheckpointError(f"{missing(path)}; give a checkpoint (model_NNNNN.pt) or a run's log directory")
    log_dir = path / "log" if not list_checkpoints(path) and list_checkpoints(path / "log") else path
    if not list_checkpoints(log_dir):
        raise CheckpointError(f"{path} holds no checkpoint (model_NNNNN.pt); give a checkpoint or a run's log "
                              f"directory, such as log_train/<experiment>/log")
    with warnings.catch_warnings(record=True) as skipped:
        warnings.simplefilter("always")
        try:
            checkpoint = latest_checkpoint(log_dir)
        except CheckpointError:
            checkpoint = None
    if checkpoint is None:
        newest = list_checkpoints(log_dir)[0]
        raise CheckpointError(f"{log_dir} holds no intact checkpoint (its newest, {newest.name}: "
                              f"{verify(newest) or 'inconsistent'}); give the path of a good one")
    for w in skipped:
        print(f"warning: {w.message}", file=sys.stderr)
    return checkpoint


def _check_contents(path: Path) -> str | None:
    """None when the checkpoint at path loads and holds the step its name says."""
    try:
        state = load_checkpoint(path, check=False)
    except CheckpointError as e:
        return str(e)
    step = int(NAME.fullmatch(path.name).group(1))
    if state.get("step") != step or not all(key in state for key in ("optimizer", "loader", "rng", "experiment")):
        return f"its contents are inconsistent (step {state.get('step')} in a file named for step {step})"
    return None


def prune_checkpoints(log_dir: Path, keep_last: int) -> None:
    if keep_last <= 0:
        return
    for path in list_checkpoints(log_dir)[keep_last:]:
        path.unlink(missing_ok=True)
        path.with_name(path.name + ".sha256").unlink(missing_ok=True)


def remove_stale_temporaries(log_dir: Path) -> None:
    """Delete what saves that were killed midway left behind (never a finished checkpoint)."""
    remove_temporaries(log_dir, "model_*.pt*")


class Checkpointer:
    """Saves a run's TrainState, with the run's description, into its log directory, and keeps
    the newest `keep_last`."""

    def __init__(self, log_dir: Path, keep_last: int, ctx: Dist, description: dict):
        self.log_dir, self.keep_last, self.ctx, self.description = Path(log_dir), keep_last, ctx, description

    def save(self, state) -> Path:
        """A collective: every rank calls it, rank 0 writes. Non-finite weights are never saved."""
        bad = [name for name, p in state.model.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise CheckpointError(f"the weights at step {state.step} are not finite ({', '.join(bad[:3])}"
                                  f"{', ...' if len(bad) > 3 else ''}): the run has diverged, and no checkpoint is "
                                  f"written of it. Resume from an earlier checkpoint with a lower max_lr")
        contents = state.state_dict()
        path = checkpoint_path(self.log_dir, state.step)
        if self.ctx.master:
            save_checkpoint(path, {**self.description, **contents})
            prune_checkpoints(self.log_dir, self.keep_last)
            print(f"checkpoint {path}", flush=True)
        barrier(self.ctx)
        return path


def check_resumable(state: dict, run) -> None:
    """Refuse a checkpoint of another experiment or of a config `run` cannot continue."""
    problems = []
    saved_exp = state["experiment"]
    if saved_exp["name"] != run.experiment.name:
        problems.append(f"it belongs to experiment {saved_exp['name']!r}, not {run.experiment.name!r}")
    saved_classes = recorded_classes(saved_exp)
    for slot, name in run.experiment.class_names().items():
        if saved_classes.get(slot) != name:
            problems.append(f"{slot} was {saved_classes.get(slot)}, now {name}")
    restore = []  # the overrides that give this run the checkpoint's configs again
    for label, saved, current, allowed in (("model", state["model_config"], run.model_config, set()),
                                           ("train", state["training_config"], run.train_config, RESUMABLE_CHANGES)):
        now, default = dataclasses.asdict(current), dataclasses.asdict(type(current)())
        saved = {**{k: v for k, v in default.items() if k not in saved}, **saved}  # a field added since: its default
        for key in sorted(set(saved) | set(now)):
            if key not in allowed and saved.get(key) != now.get(key):
                problems.append(f"{label}.{key} was {saved.get(key)!r}, now {now.get(key)!r}")
                if key in default:
                    restore.append(f"{label}.{key}={saved.get(key)}")
    if not run.train_config.allow_source_change:
        now = {s["path"]: s["sha256"] for s in _current_sources(run)}
        for saved in state.get("sources", []):
            if now.get(saved["path"]) != saved["sha256"]:
                change = "has changed" if saved["path"] in now else "is no longer used or no longer exists"
                problems.append(f"{saved['path']} {change} since the checkpoint (its text at the time is in the "
                                f"checkpoint and in log.txt); restore it, or resume anyway with "
                                f"train.allow_source_change=true")
    if problems:
        saved_preset = saved_exp.get("preset")
        same = (f"--preset {saved_preset} " if saved_preset and saved_preset != run.preset else "") + " ".join(
            shlex.quote(o) for o in restore)
        hint = (f"\nto continue it as it was trained, add: {same}" if same.strip() and saved_exp["name"] ==
                run.experiment.name else "")
        raise CheckpointError(f"cannot resume from {run.resume}:\n  - " + "\n  - ".join(problems) + hint +
                              "\nrun with the same experiment, preset and overrides as the checkpoint's run, "
                              "or start a new run in another --log-dir")


def _current_sources(run) -> list[dict]:
    from gptlab.training.run import sources
    return sources(run.experiment)


def check_same_data(state: dict, fingerprint: str, run) -> bool:
    """Whether the checkpoint was reading this data. Another data set is refused, unless asked
    for (then its position means nothing here, and the caller starts the stream afresh)."""
    saved = state.get("data_fingerprint")
    if saved is None or saved == fingerprint:
        return True
    if not run.train_config.allow_data_change:
        raise CheckpointError(f"cannot resume from {run.resume}: it was reading other data (fingerprint {saved}, "
                              f"{state.get('data', 'unknown')!r}); this run's data has fingerprint {fingerprint}. "
                              f"Its saved position would be applied to other shards. Point train.data_dir at the "
                              f"checkpoint's data, or continue on this data from the start of its stream with "
                              f"train.allow_data_change=true")
    return False


def experiment_of(state: dict) -> Experiment:
    """The experiment a checkpoint was written by, its component classes found by the dotted
    names it recorded (an experiment file is executed only for a class defined in it)."""
    saved = state["experiment"]
    known = {f.name for f in dataclasses.fields(TrainingConfig)}
    try:
        model_config = GPTConfig(**state["model_config"])
        training_config = TrainingConfig(**{k: v for k, v in state["training_config"].items() if k in known})
        return experiment_from_record(saved, model_config, training_config)
    except ExperimentError as e:
        raise CheckpointError(f"the components of the checkpoint's experiment {saved['name']!r} cannot be "
                              f"found: {e}") from None
    except TypeError as e:
        raise CheckpointError(f"the checkpoint's model config does not fit this version of gptlab ({e})") from None


def model_from_state(state: dict):
    """The GPT a checkpoint's contents describe, with its weights, on the CPU."""
    model = build_gpt(experiment_of(state))
    try:
        model.load_state_dict(plain_weights(state["model"]))
    except RuntimeError as e:
        raise CheckpointError(f"the checkpoint's weights do not fit the model its components build now "
                              f"({str(e).splitlines()[-1].strip()[:300]}); a component class changed since the "
                              f"checkpoint was written: restore it") from None
    return model


def load_model(path: Path | str):
    """The GPT the checkpoint at path describes, with its weights, on the CPU, in eval mode."""
    return model_from_state(load_checkpoint(Path(path))).eval()
