"""What a run is (experiment, configs, log directory, where it resumes from) and the
description of it that the log header and every checkpoint record, built once."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

import torch

from gptlab.core.config import GPT2_VOCAB, GPTConfig, TrainingConfig, autocasts_to_bf16
from gptlab.core.experiment import Experiment
from gptlab.data.tokenizer import gpt2_encoding
from gptlab.paths import REPO_ROOT
from gptlab.optim import AdamW, check_optimizer, optimizer_class
from gptlab.training.distributed import Dist, cpu_name, cpus_available, peak_flops


class TrainingError(RuntimeError):
    """The run cannot go on; the message says why and what to do."""


class Diverged(TrainingError):
    """The run's loss or gradient went non-finite and stayed so: resuming repeats it (exit status 4)."""


@dataclass
class Run:
    """Everything a run is made of, resolved."""
    experiment: Experiment
    model_config: GPTConfig
    train_config: TrainingConfig
    log_dir: Path
    preset: str = "gpt2"
    resume: Path | None = None  # a checkpoint to continue from
    resume_state: dict | None = None  # its contents, read once when the run was resolved
    lock: object = None  # the log directory's lock, held (by rank 0) while the run lives
    init_from: dict | None = None  # what a warm start's weights came from (gptlab.training.warmstart)
    init_weights: dict | None = None  # those weights, read once when the run was resolved
    warnings: list[str] = dataclasses.field(default_factory=list)  # settings that work but look like mistakes

    def experiment_record(self) -> dict:
        """What logs and checkpoints record of the experiment: name, file, preset, class names."""
        exp = self.experiment
        return {"name": exp.name, "path": str(exp.path), "preset": self.preset, **exp.class_names()}


def autocast_context(train: TrainingConfig, device_type: str):
    """The autocast train.dtype asks the forward passes for on this device (a no-op for float32)."""
    if autocasts_to_bf16(train.dtype, device_type):
        return torch.autocast(device_type=device_type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def grad_accum_steps(train: TrainingConfig, world_size: int) -> int:
    per_step = train.micro_batch_size * train.sequence_length * world_size
    if train.total_batch_size % per_step:
        raise TrainingError(f"total_batch_size={train.total_batch_size} is not divisible by micro_batch_size x "
                            f"sequence_length x processes = {train.micro_batch_size} x {train.sequence_length} x "
                            f"{world_size} = {per_step}; change total_batch_size or micro_batch_size")
    return train.total_batch_size // per_step


def check_run(run: Run, world_size: int) -> None:
    """What can be known wrong before anything is written: the model's components against
    its config, and the batch shape against the model and the number of processes."""
    from gptlab.models.gpt import build_gpt, check_components
    check_components(run.model_config, **run.experiment.components())
    cfg = run.train_config
    problems = check_optimizer(run.experiment.optimizer_class, cfg)
    optimizer = optimizer_class(run.experiment.optimizer_class)
    if run.model_config.parametrization != "standard" and not optimizer.follows_parametrization:
        problems.append(f"model.parametrization={run.model_config.parametrization} gives each parameter its own rate; "
                        f"{optimizer.__name__} does not say it follows them (follows_parametrization = True, its build "
                        f"using gptlab.optim.base.adamw_groups): use AdamW or Muon, or parametrization=standard")
    if not problems and optimizer is not AdamW:  # which parameters it takes, on a model of shapes only
        with torch.device("meta"):
            try:
                model = build_gpt(run.experiment, run.model_config)
            except Exception:  # noqa: BLE001 - a component that cannot be built: the component check says why
                model = None
            try:
                if model is not None:
                    optimizer(model, cfg)
            except Exception as e:  # noqa: BLE001 - a user's optimizer: whatever its build raises, said in words
                problems.append(str(e) if isinstance(e, ValueError) else f"building it failed: {type(e).__name__}: {e}")
    if problems:
        raise TrainingError(f"the optimizer {run.experiment.optimizer_class.__name__} cannot run:\n  - "
                            + "\n  - ".join(problems))
    if cfg.hellaswag and cfg.hellaswag_file:
        from gptlab.evaluation.hellaswag import problem_with
        problem = problem_with(Path(cfg.hellaswag_file)) if Path(cfg.hellaswag_file).is_file() else "it is not a file"
        if problem:
            raise TrainingError(f"train.hellaswag_file={cfg.hellaswag_file}: {problem}; give a HellaSwag .jsonl, or "
                                f"leave it empty for the official validation set")
    problems = []
    if cfg.sequence_length > run.model_config.block_size:
        problems.append(f"sequence_length={cfg.sequence_length} is longer than block_size={run.model_config.block_size}; "
                        f"lower train.sequence_length or raise model.block_size")
    if run.model_config.vocab_size < GPT2_VOCAB:
        problems.append(f"vocab_size={run.model_config.vocab_size} is below the GPT-2 tokenizer's {GPT2_VOCAB:,} tokens, "
                        f"so token ids of the data would fall outside the embedding; use at least {GPT2_VOCAB} "
                        f"(50304, the default, pads it to a multiple of 128)")
    if cfg.num_samples:
        prompt = gpt2_encoding().encode(cfg.sample_prompt, allowed_special={"<|endoftext|>"})
        if not prompt:
            problems.append("sample_prompt is empty; give one (the default is \"Hello, I'm a language model,\") or set "
                            "train.num_samples=0 for no samples")
        elif len(prompt) + cfg.sample_length > run.model_config.block_size:
            problems.append(f"sample_prompt ({len(prompt)} tokens) + sample_length ({cfg.sample_length}) is longer "
                            f"than block_size={run.model_config.block_size}; shorten one of them")
        if cfg.sample_length < 1:
            problems.append("sample_length=0 generates nothing; give at least 1, or train.num_samples=0 for no samples")
    if problems:
        raise TrainingError("the run cannot start:\n  - " + "\n  - ".join(problems))
    grad_accum_steps(run.train_config, world_size)


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def code_digest() -> str:
    """sha256 of gptlab's own sources (every .py under gptlab/, with its path): what a run's steps were computed
    by, beside the commit (which an edit does not change)."""
    digest = hashlib.sha256()
    for path in sorted((REPO_ROOT / "gptlab").rglob("*.py")):
        digest.update(str(path.relative_to(REPO_ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def sources(experiment: Experiment) -> list[dict]:
    """The files that define the run and that no git commit records: the experiment file, and
    the file of every component class that is not gptlab's or PyTorch's; each with its text."""
    paths = [experiment.path]
    for cls in [*experiment.components().values(), experiment.optimizer_class]:
        if not cls.__module__.startswith(("gptlab.", "torch.")):
            try:
                paths.append(Path(inspect.getsourcefile(cls)).resolve())
            except (TypeError, OSError):
                continue
    found = []
    for path in dict.fromkeys(paths):
        text = Path(path).read_text(encoding="utf-8")
        found.append({"path": str(path), "sha256": hashlib.sha256(text.encode()).hexdigest(), "text": text})
    return found


def describe(run: Run, model, ctx: Dist, accum: int, data, optimizer) -> dict:
    """The run's description: the log header's lines and part of every checkpoint. FLOPs per token
    are the model's training FLOPs and the optimizer's own (Muon's Newton-Schulz iterations) shared
    out over the tokens of a step."""
    breakdown = model.flops_breakdown(run.train_config.sequence_length)
    # every process runs the whole update (Muon's orthogonalisation is not sharded): what runs is counted
    update = round(optimizer.flops_per_step() * ctx.world_size / run.train_config.total_batch_size)
    if update:
        breakdown = {**breakdown, "optimizer": update}
    device = torch.cuda.get_device_name(ctx.device) if ctx.device_type == "cuda" else ctx.device
    return {
        "experiment": run.experiment_record(),
        # the model fields the experiment file itself sets: its named change, beside its classes
        "experiment_model_fields": {f.name: getattr(run.experiment.model_config, f.name)
                                    for f in dataclasses.fields(GPTConfig)
                                    if getattr(run.experiment.model_config, f.name) != getattr(GPTConfig(), f.name)},
        **({"init_from": run.init_from} if run.init_from else {}),
        "model_config": dataclasses.asdict(run.model_config),
        "training_config": dataclasses.asdict(run.train_config),
        "params": model.num_params(),
        "params_non_embedding": model.num_params(non_embedding=True),
        "params_active": model.active_params(),
        "flops_per_token": model.flops_per_token(run.train_config.sequence_length) + update,
        "flops_breakdown": breakdown,
        "optimizer_flops_per_step": optimizer.flops_per_step(),
        "peak_flops": peak_flops(ctx),
        "kv_cache_bytes_per_token": model.kv_cache_bytes_per_token(),
        "batch": {"micro_batch": run.train_config.micro_batch_size, "sequence_length": run.train_config.sequence_length,
                  "processes": ctx.world_size, "grad_accum_steps": accum},
        "data": data.description,
        "data_fingerprint": data.fingerprint,
        "sources": sources(run.experiment),
        "environment": {"git_commit": git_commit(), "code": code_digest()[:16], "torch": str(torch.__version__),
                        "python": platform.python_version(),
                        "device": device, "host": platform.node(), "cpu": cpu_name(), "cpus": cpus_available(),
                        "threads": torch.get_num_threads()},
    }
