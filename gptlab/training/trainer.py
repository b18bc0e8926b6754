"""The training loop: data, forward, backward, clip, lr, step, log; evaluation, samples and
a checkpoint every `eval_interval` steps and at the end (build-nanogpt's loop)."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from gptlab.core.config import GPTConfig, TrainingConfig
from gptlab.core.experiment import Experiment
from gptlab.data.sources import open_data
from gptlab.data.tokenizer import gpt2_encoding
from gptlab.evaluation import hellaswag
from gptlab.evaluation.samples import generate_samples
from gptlab.models.gpt import GPT
from gptlab.paths import REPO_ROOT
from gptlab.training import checkpoint as ckpt
from gptlab.training.distributed import Dist, barrier, gather_objects, mean_over_ranks, sum_over_ranks
from gptlab.training.logger import RunLog
from gptlab.training.optim import build_optimizer, learning_rate


class TrainingError(RuntimeError):
    """The run cannot go on; the message says why and what to do."""


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

    def experiment_record(self) -> dict:
        """What logs and checkpoints record of the experiment: name, file, preset, class names."""
        exp = self.experiment
        return {"name": exp.name, "path": str(exp.path), "preset": self.preset, **exp.class_names()}


def grad_accum_steps(train: TrainingConfig, world_size: int) -> int:
    per_step = train.micro_batch_size * train.sequence_length * world_size
    if train.total_batch_size % per_step:
        raise TrainingError(f"total_batch_size={train.total_batch_size} is not divisible by micro_batch_size x "
                            f"sequence_length x processes = {train.micro_batch_size} x {train.sequence_length} x "
                            f"{world_size} = {per_step}; change total_batch_size or micro_batch_size")
    return train.total_batch_size // per_step


# dense bf16 peak FLOP/s of the GPUs MFU is reported for
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "A10G": 125e12, "L4": 121e12, "4090": 165e12}


def peak_flops(ctx: Dist) -> float | None:
    if ctx.device_type != "cuda":
        return None
    name = torch.cuda.get_device_name(ctx.device)
    return next((flops for key, flops in PEAK_FLOPS.items() if key in name), None)


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def train(run: Run, ctx: Dist, compile_model: bool = True) -> Path | None:
    """Train to max_steps; returns the final checkpoint's path (on rank 0)."""
    cfg, device = run.train_config, ctx.device
    if cfg.sequence_length > run.model_config.block_size:
        raise TrainingError(f"sequence_length={cfg.sequence_length} is longer than block_size="
                            f"{run.model_config.block_size}; lower train.sequence_length or raise model.block_size")
    accum = grad_accum_steps(cfg, ctx.world_size)
    torch.manual_seed(cfg.seed)
    if ctx.device_type == "cuda":
        torch.cuda.manual_seed(cfg.seed)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    log = RunLog(run.log_dir, enabled=ctx.master)

    data = open_data(cfg, cfg.micro_batch_size, cfg.sequence_length, ctx.rank, ctx.world_size)
    exp = run.experiment
    model = GPT(run.model_config, exp.attention_class, exp.position_encoding_class, exp.mlp_class,
                exp.norm_class).to(device)
    optimizer = build_optimizer(model, cfg, ctx.device_type)

    start_step, bad_steps = 0, 0
    if run.resume is not None:
        state = run.resume_state if run.resume_state is not None else ckpt.load_checkpoint(run.resume)
        run.resume_state = None  # the weights are copied into the model below; free the CPU copy
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_step = state["step"]
        if len(state["loader"]) != ctx.world_size:
            raise TrainingError(f"{run.resume} was written by {len(state['loader'])} process(es), this run has "
                                f"{ctx.world_size}; resume with the same number of processes")
        data.train.load_state_dict(state["loader"][ctx.rank])
        rng = state["rng"][ctx.rank]
        bad_steps = state.get("bad_steps", 0)
        del state

    if start_step >= cfg.max_steps:
        if ctx.master:
            print(f"the run is already complete: {run.resume} is at step {start_step} of {cfg.max_steps}")
        return run.resume
    if ctx.master:
        ckpt.remove_stale_temporaries(run.log_dir)
        _describe(run, ctx, model, accum, data.description, log, start_step)
    compiled = torch.compile(model) if compile_model else model
    run_model = compiled  # what the training step calls: wrapped in DDP when there are several ranks
    if ctx.ddp:
        run_model = DDP(compiled, device_ids=[ctx.local_rank] if ctx.device_type == "cuda" else None)
    autocast = (torch.autocast(device_type="cuda", dtype=torch.bfloat16) if ctx.device_type == "cuda"
                else contextlib.nullcontext())
    hella_file, hella_why = (hellaswag.fetch() if cfg.hellaswag else (None, "train.hellaswag is off"))
    tokens_per_step = cfg.total_batch_size
    flops_per_step = model.flops_per_token(cfg.sequence_length) * tokens_per_step
    peak = peak_flops(ctx)
    last_checkpoint = None

    if run.resume is not None:
        ckpt.set_rng_state(rng, ctx.device_type)  # last, so that nothing in the set-up draws from it
    stop = min(cfg.stop_at or cfg.max_steps, cfg.max_steps)
    for step in range(start_step, stop + 1):
        last = step == cfg.max_steps
        resumed_here = step == start_step and run.resume is not None  # evaluated and saved before
        if not resumed_here and (step % cfg.eval_interval == 0 or last):
            _evaluate(step, model, compiled, data, cfg, ctx, log, autocast, hella_file, hella_why)
            if step > 0:
                last_checkpoint = _save(run, step, model, optimizer, data, ctx, bad_steps)
        elif not resumed_here and step == stop:
            last_checkpoint = _save(run, step, model, optimizer, data, ctx, bad_steps)
        if step == stop:
            if not last and ctx.master:
                print(f"stopped at step {step} of {cfg.max_steps} (train.stop_at); continue with --resume auto")
            break

        t0 = time.perf_counter()
        run_model.train()
        optimizer.zero_grad(set_to_none=True)
        loss_accum = torch.zeros((), device=device)
        data_time = 0.0
        for micro_step in range(accum):
            t_data = time.perf_counter()
            x, y = data.train.next_batch()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            data_time += time.perf_counter() - t_data
            # DDP averages gradients over ranks only on the last micro-step
            defer_sync = ctx.ddp and micro_step < accum - 1
            with run_model.no_sync() if defer_sync else contextlib.nullcontext(), autocast:
                _, loss = run_model(x, y)
                loss = loss / accum  # the accumulated gradient is the mean over micro-batches
                loss_accum += loss.detach()
                loss.backward()
        mean_over_ranks(loss_accum, ctx)
        max_norm = cfg.grad_clip if cfg.grad_clip > 0 else math.inf
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        lr = learning_rate(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        finite = bool(torch.isfinite(loss_accum).item() and torch.isfinite(norm).item())
        if finite:
            optimizer.step()
            bad_steps = 0
        else:  # skip the update; a run of them means the run has diverged
            bad_steps += 1
            log.record(step, "skipped_nonfinite", bad_steps)
            if bad_steps >= cfg.max_bad_steps:
                raise TrainingError(f"{bad_steps} consecutive steps had a non-finite loss or gradient norm "
                                    f"(last at step {step}); the run stops. The last good checkpoint is "
                                    f"{last_checkpoint or 'not yet written'}; lower max_lr or check the data")
        if ctx.device_type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        tok_per_sec = tokens_per_step / dt
        gpu = f" | mfu {100 * flops_per_step / dt / (peak * ctx.world_size):.1f}%" if peak else ""
        if ctx.device_type == "cuda":
            gpu += f" | mem {torch.cuda.max_memory_allocated(device) / 2**30:.1f}GiB"
        if ctx.master:
            print(f"step {step:5d} | loss {loss_accum.item():.6f} | lr {lr:.4e} | norm {norm.item():.4f} | "
                  f"dt {dt * 1000:.1f}ms | tok/sec {tok_per_sec:,.0f}{gpu} | data {100 * data_time / dt:.1f}%",
                  flush=True)
        log.record(step, "train", loss_accum.item())
        log.record(step, "lr", lr)
        log.record(step, "norm", norm.item())
        log.record(step, "tok_per_sec", round(tok_per_sec))
    return last_checkpoint


def _describe(run: Run, ctx: Dist, model: GPT, accum: int, data_description: str, log: RunLog,
              start_step: int) -> None:
    exp = run.experiment
    lines = {
        "run": f"resumed from {run.resume} at step {start_step}" if run.resume else "started",
        "experiment": run.experiment_record(),
        "model_config": dataclasses.asdict(run.model_config),
        "training_config": dataclasses.asdict(run.train_config),
        "params": model.num_params(),
        "kv_cache_bytes_per_token": model.kv_cache_bytes_per_token(),
        "batch": {"micro_batch": run.train_config.micro_batch_size, "sequence_length": run.train_config.sequence_length,
                  "processes": ctx.world_size, "grad_accum_steps": accum},
        "data": data_description,
        "environment": {"git_commit": git_commit(), "torch": torch.__version__, "python": platform.python_version(),
                        "device": ctx.device if ctx.device_type != "cuda" else torch.cuda.get_device_name(ctx.device),
                        "host": platform.node()},
    }
    for key, value in lines.items():
        log.header(key, value)
    print(f"experiment {exp.name} ({run.preset}): {model.num_params():,} parameters, "
          f"{ctx.world_size} process(es) on {ctx.device}, grad accumulation {accum}")
    print(f"data: {data_description}")
    print(f"log: {log.path}")


@torch.no_grad()
def _evaluate(step, model, compiled, data, cfg: TrainingConfig, ctx: Dist, log: RunLog, autocast,
              hella_file, hella_why) -> None:
    compiled.eval()
    data.val.reset()  # the same val_steps batches every time, whatever the number of ranks:
    val = torch.zeros(2, device=ctx.device)  # (loss sum, batches); batch i is scored by rank i % world
    for i in range(cfg.val_steps):
        x, y = data.val.next_batch()
        if i % ctx.world_size == ctx.rank:
            with autocast:
                _, loss = compiled(x.to(ctx.device), y.to(ctx.device))
            val += torch.stack([loss.detach().float(), torch.ones((), device=ctx.device)])
    sum_over_ranks(val, ctx)
    val_loss = val[0] / val[1]
    log.record(step, "val", val_loss.item())
    message = f"step {step:5d} | val {val_loss.item():.4f}"
    if hella_file is not None:
        n, correct, correct_norm = hellaswag.score(model, hella_file, gpt2_encoding().encode_ordinary, ctx.device,
                                                   ctx.rank, ctx.world_size, cfg.hellaswag_limit, autocast)
        counts = sum_over_ranks(torch.tensor([n, correct, correct_norm], device=ctx.device), ctx).tolist()
        acc_norm, acc = counts[2] / max(1, counts[0]), counts[1] / max(1, counts[0])
        log.record(step, "hella", f"{acc_norm:.4f}")
        log.record(step, "hella_acc", f"{acc:.4f}")
        message += f" | hella acc_norm {acc_norm:.4f} ({int(counts[2])}/{int(counts[0])})"
    else:
        log.record(step, "hella", "skipped")
        message += f" | hella skipped ({hella_why})"
    if ctx.master:
        print(message, flush=True)
        if cfg.num_samples:
            for i, text in enumerate(generate_samples(model, cfg.sample_prompt, cfg.num_samples,
                                                      cfg.sample_length, ctx.device)):
                print(f"sample {i}: {text!r}")
                log.record(step, "sample", repr(text))
    if ctx.ddp:  # every rank must hold the same weights: a cheap check that DDP kept them in sync
        checksum = torch.stack([p.detach().float().sum() for p in model.parameters()]).sum().view(1)
        spread = gather_objects(checksum.item(), ctx)
        log.record(step, "rank_param_spread", max(spread) - min(spread))


def _save(run: Run, step: int, model: GPT, optimizer, data, ctx: Dist, bad_steps: int) -> Path:
    loaders = gather_objects(data.train.state_dict(), ctx)
    rngs = gather_objects(ckpt.rng_state(ctx.device_type), ctx)
    path = ckpt.checkpoint_path(run.log_dir, step)
    if ctx.master:
        state = {
            "step": step,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "experiment": run.experiment_record(),
            "model_config": dataclasses.asdict(run.model_config),
            "training_config": dataclasses.asdict(run.train_config),
            "loader": loaders,
            "rng": [{k: v.cpu() if torch.is_tensor(v) else v for k, v in r.items()} for r in rngs],
            "bad_steps": bad_steps,
        }
        ckpt.save_checkpoint(path, state)
        ckpt.prune_checkpoints(run.log_dir, run.train_config.keep_last)
        print(f"checkpoint {path}", flush=True)
    barrier(ctx)
    return path
