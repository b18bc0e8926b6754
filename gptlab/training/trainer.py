"""The training loop: data, forward, backward, clip, lr, step, log; evaluation and a
checkpoint every `eval_interval` steps and at the end (build-nanogpt's loop). Each concern
it calls lives in its own module: the evaluator, the checkpointer, the metrics path, the
train state, preemption."""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from gptlab.data.loader import DeviceBatches
from gptlab.data.sources import open_data
from gptlab.evaluation.evaluator import Evaluator
from gptlab.models.gpt import build_gpt
from gptlab.optim import optimizer_class
from gptlab.training import checkpoint as ckpt
from gptlab.training.distributed import Dist, mean_over_ranks
from gptlab.training.logger import RunLog, resumed
from gptlab.training.metrics import Metrics
from gptlab.training.schedule import set_learning_rates
from gptlab.training.preemption import Preempted, Preemption
from gptlab.training.record import STUDY_ENV, RunRecord
from gptlab.training.run import Diverged, Run, TrainingError, autocast_context, describe, grad_accum_steps
from gptlab.training.state import TrainState
from gptlab.training.trackers import open_trackers


def train(run: Run, ctx: Dist, compile_model: bool = True) -> Path | None:
    """Train to max_steps (or stop_at); returns the last checkpoint's path."""
    cfg, device = run.train_config, ctx.device
    accum = grad_accum_steps(cfg, ctx.world_size)
    torch.manual_seed(cfg.seed)
    if ctx.device_type == "cuda":
        torch.cuda.manual_seed(cfg.seed)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    data = open_data(cfg, cfg.micro_batch_size, cfg.sequence_length, ctx.rank, ctx.world_size, accum,
                     run.model_config.vocab_size)
    same_data = run.resume_state is None or ckpt.check_same_data(run.resume_state, data.fingerprint, run)
    model = build_gpt(run.experiment, run.model_config)
    if run.init_weights is not None and run.resume_state is None:  # a warm start: the weights only
        try:
            model.load_state_dict(run.init_weights)
        except RuntimeError as e:
            raise TrainingError(f"--init-from {run.init_from['source']}: its weights do not fit the model "
                                f"({str(e).splitlines()[-1].strip()[:300]}); a component class changed since "
                                f"they were saved") from None
    run.init_weights = None
    model = model.to(device)
    optimizer = optimizer_class(run.experiment.optimizer_class)(model, cfg, ctx.device_type)
    batches = DeviceBatches(data.train, device)
    state = TrainState(model, optimizer, batches, ctx)
    resumed_at = run.resume_state["step"] if run.resume_state is not None else None
    if resumed_at is not None and resumed_at >= cfg.max_steps:
        if ctx.master:
            print(f"the run is already complete: {run.resume} is at step {resumed_at} of {cfg.max_steps}")
        return run.resume

    description = describe(run, model, ctx, accum, data, optimizer)
    stop = min(cfg.stop_at or cfg.max_steps, cfg.max_steps)
    trackers = open_trackers(run, ctx, resumed_at)
    for tracker in trackers:  # the W&B run id goes into every checkpoint: a resume continues that run
        description.update(tracker.identity())
    with Metrics(RunLog(run.log_dir, enabled=ctx.master), ctx, cfg.total_batch_size, description["flops_per_token"],
                 stop, RunRecord(run.log_dir, enabled=ctx.master), trackers) as metrics:  # closes the trackers
        checkpointer = ckpt.Checkpointer(run.log_dir, cfg.keep_last, ctx, description)
        if ctx.master:
            ckpt.remove_stale_temporaries(run.log_dir)
            _log_start(run, metrics, description, resumed_at)
        metrics.update_record(resumed_at or 0)
        try:
            return _train_loop(run, ctx, state, metrics, checkpointer, model, optimizer, data, batches, same_data,
                               compile_model, resumed_at, stop)
        except Preempted as e:
            metrics.update_record(state.step, "stopped", f"preempted: {e}")
            raise
        except KeyboardInterrupt:
            metrics.update_record(state.step, "stopped", "interrupted (Ctrl-C)")
            raise
        except Diverged as e:
            metrics.update_record(state.step, "diverged", str(e).splitlines()[0])
            raise
        except BaseException as e:
            metrics.update_record(state.step, "failed", f"{type(e).__name__}: {e}".splitlines()[0])
            raise


def _train_loop(run: Run, ctx: Dist, state: TrainState, metrics: Metrics, checkpointer, model, optimizer, data,
                batches: DeviceBatches, same_data: bool, compile_model: bool, resumed_at: int | None,
                stop: int) -> Path | None:
    cfg, device = run.train_config, ctx.device
    accum = grad_accum_steps(cfg, ctx.world_size)
    compiled = torch.compile(model) if compile_model else model
    run_model = DDP(compiled, device_ids=[ctx.local_rank] if ctx.device_type == "cuda" else None) if ctx.ddp else compiled
    autocast = autocast_context(cfg, ctx.device_type)
    evaluate = Evaluator(cfg, data.val, ctx, autocast, forward=compiled)
    if run.resume_state is not None:  # last, so that nothing in the set-up draws from the restored RNG
        state.load_state_dict(run.resume_state)
        run.resume_state = None  # the weights are in the model now; free the CPU copy
        if not same_data:
            batches.reset()
            metrics.print("the data differs from the checkpoint's (train.allow_data_change): reading it from its start")
    last_checkpoint, started = run.resume, time.perf_counter()

    with Preemption() as preemption:
        while True:
            step, fresh = state.step, state.step != resumed_at  # a resumed step was evaluated and saved before
            full = step % cfg.eval_interval == 0 or step == cfg.max_steps
            if fresh and (full or (cfg.val_interval and step % cfg.val_interval == 0)):
                results = evaluate(model, step, full)
                metrics.evaluation(step, results)
                if not math.isfinite(results["val"]):
                    raise Diverged(f"the validation loss is {results['val']} at step {step}: the run has "
                                        f"diverged, and no checkpoint is written of it. The last good checkpoint is "
                                        f"{last_checkpoint or 'not yet written'}; lower max_lr or check the data")
            if fresh and step > 0 and (step % cfg.eval_interval == 0 or step == stop):
                last_checkpoint = checkpointer.save(state)
            if step == stop:
                metrics.summary(step, time.perf_counter() - started, last_checkpoint)
                if step < cfg.max_steps:
                    metrics.print(f"stopped at step {step} of {cfg.max_steps} (train.stop_at); continue with --resume auto")
                    metrics.update_record(step, "stopped", f"at train.stop_at={cfg.stop_at}")
                else:
                    metrics.update_record(step, "complete")
                return last_checkpoint
            if preemption.requested(ctx):
                if last_checkpoint != ckpt.checkpoint_path(run.log_dir, step):
                    last_checkpoint = checkpointer.save(state)
                raise Preempted(f"stopped by {preemption.name} at step {step}; checkpoint {last_checkpoint}; "
                                f"continue with --resume auto")

            metrics.step_started(step)
            t0 = time.perf_counter()
            run_model.train()
            optimizer.zero_grad(set_to_none=True)
            loss_accum, extras = torch.zeros((), device=device), {}
            data_time = 0.0
            for micro_step in range(accum):
                t_data = time.perf_counter()
                x, y = batches.next_batch()
                data_time += time.perf_counter() - t_data
                # DDP averages gradients over ranks only on the last micro-step
                defer_sync = ctx.ddp and micro_step < accum - 1
                with run_model.no_sync() if defer_sync else contextlib.nullcontext(), autocast:
                    out = run_model(x, y)
                (out.loss / accum).backward()  # the accumulated gradient is the mean over micro-batches
                loss_accum += out.ce.detach() / accum
                for name, value in {**out.losses, **out.metrics}.items():
                    extras[name] = extras.get(name, 0.0) + value.detach().float() / accum
            mean_over_ranks(loss_accum, ctx)
            for value in extras.values():
                mean_over_ranks(value, ctx)
            norm, clipped_norm = clip_gradients(model, optimizer, cfg.grad_clip)
            lr = set_learning_rates(optimizer, step, cfg)
            finite = bool(torch.isfinite(loss_accum).item() and torch.isfinite(norm).item())
            if finite:
                optimizer.step()
                state.bad_steps = 0
            else:  # skip the update; a run of them means the run has diverged
                state.bad_steps += 1
                metrics.skipped_step(step, state.bad_steps)
                if state.bad_steps >= cfg.max_bad_steps:
                    raise Diverged(f"{state.bad_steps} consecutive steps had a non-finite loss or gradient "
                                        f"norm (last at step {step}); the run stops. The last good checkpoint is "
                                        f"{last_checkpoint or 'not yet written'}; lower max_lr or check the data")
            if ctx.device_type == "cuda":
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            metrics.training_step(step, loss_accum.item(), lr, norm.item(), dt, data_time,
                                  {name: value.item() for name, value in extras.items()},
                                  None if clipped_norm is None else clipped_norm.item())
            state.step += 1


def clip_gradients(model, optimizer, max_norm: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Clip the gradients the optimizer clips (every one, unless it says otherwise: Muon's matrices
    are not) to max_norm (0: none); returns the norm of every gradient before clipping, and where the
    optimizer clips only some (Muon: AdamW's), the norm of those, the one the clipping compared."""
    clipped = optimizer.clipped_parameters()
    limit = max_norm if max_norm > 0 else math.inf
    if clipped is None:
        return torch.nn.utils.clip_grad_norm_(model.parameters(), limit), None
    norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
    return norm, torch.nn.utils.clip_grad_norm_(clipped, limit)


def _log_start(run: Run, metrics: Metrics, description: dict, resumed_at: int | None) -> None:
    metrics.header("run", resumed(run.resume, resumed_at) if run.resume else "started")
    for key, value in description.items():
        metrics.header(key, value)
    if os.environ.get(STUDY_ENV):  # the study this run belongs to: in the log too, which outlives a damaged run.json
        metrics.header("study", json.loads(os.environ[STUDY_ENV]))
    batch = description["batch"]
    active = description["params_active"]
    params = f"{description['params']:,} parameters" + (f" ({active:,} active per token)"
                                                         if active != description["params"] else "")
    metrics.print(f"experiment {run.experiment.name} ({run.preset}): {params}, "
                  f"{batch['processes']} process(es) on {description['environment']['device']}, "
                  f"grad accumulation {batch['grad_accum_steps']}")
    for warning in run.warnings:
        metrics.print(f"warning: {warning}")
    metrics.print(f"data: {description['data']}; data fingerprint {description['data_fingerprint']} (of every "
                  f"shard's name, length and first tokens: what resumes and reports compare)")
    if description["environment"]["device"] == "cpu" and description["params"] > 50_000_000:
        metrics.print(f"note: {description['params'] / 1e6:.0f}M parameters on a CPU, {batch['grad_accum_steps']} "
                      f"micro-batches a step: expect minutes a step. --preset smoke or --preset small train the same "
                      f"experiment in minutes")
    if run.init_from and not run.resume:
        source = run.init_from
        at = f" (experiment {source['experiment']}, step {source['step']})" if source["kind"] == "checkpoint" else ""
        metrics.print(f"initialised from {source['source']}{at}: its weights, a new optimizer, from step 0")
    if run.resume:
        metrics.print(resumed(run.resume, resumed_at))
    metrics.print(f"log: {metrics.log.path}")
