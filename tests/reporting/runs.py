"""Run directories written the way the trainer writes them, without training."""

import dataclasses
import json

from gptlab.core.config import GPTConfig, TrainingConfig
from gptlab.training.logger import RunLog


def fake_run(log_dir, experiment="baseline", seed=1337, vals=(), hellas=None, steps=None, max_steps=50,
             model=None, train=None, preset="smoke", status=None, study=None, extra_lines=(), header=None):
    """A log.txt of a run whose evaluations gave `vals` at steps 0, 25, 50 ... and (if status) its run.json."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = RunLog(log_dir)
    train_cfg = dataclasses.asdict(TrainingConfig(**{"max_steps": max_steps, "seed": seed, "eval_interval": 25,
                                                     **(train or {})}))
    header = {"experiment": {"name": experiment, "path": f"/x/{experiment}.py", "preset": preset,
                             "attention_class": "A", "position_encoding_class": "P", "mlp_class": "M", "norm_class": "N"},
              "model_config": dataclasses.asdict(GPTConfig(**(model or {}))), "training_config": train_cfg,
              "params": 1000, "params_non_embedding": 600, "flops_per_token": 9000, "kv_cache_bytes_per_token": 512,
              "batch": {"processes": 1}, "data_fingerprint": "f00d", "environment": {"device": "cpu", "git_commit": "abc"},
              **(header or {})}
    for key, value in header.items():
        log.header(key, value)
    if study:  # as the trainer writes it for a study's run
        log.header("study", study)
    steps = max_steps if steps is None else steps
    for s in range(steps):
        log.record(s, "train", 10.0 - s / 10)
        log.record(s, "tok_per_sec", 1000 + s)
    for i, v in enumerate(vals):
        log.record(25 * i, "val", v)
        if hellas is not None:
            log.record(25 * i, "hella", hellas[i])
            log.record(25 * i, "hella_acc", hellas[i] - 0.01)
        else:
            log.record(25 * i, "hella", "skipped")
    for line in extra_lines:
        log._write(line)
    if status:
        from gptlab.training.record import summarize
        record = {**summarize(log.path, steps), "status": status}
        if study:
            record["study"] = study
        (log_dir / "run.json").write_text(json.dumps(record))
    return log_dir
