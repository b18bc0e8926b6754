"""Trackers (W&B, TensorBoard) as sinks of the metrics path, and the console's progress bar.

The default tier checks the decisions and the fan-out with an in-memory tracker; the long
tier trains: TensorBoard's event files and W&B's offline run read back with their own
readers and compared with log.txt, parsed here on its own."""

import dataclasses
import io
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import pytest
import torch

from gptlab.core.config import TrainingConfig, parse_overrides
from gptlab.core.experiment import load_experiment
from gptlab.paths import REPO_ROOT
from gptlab.study.plan import unfair_fields
from gptlab.training import checkpoint as ckpt
from gptlab.training.cli import main
from gptlab.training.distributed import Dist
from gptlab.training import metrics as metrics_module
from gptlab.training.logger import RunLog
from gptlab.training.metrics import Metrics, ProgressBar, progress_line, show_progress
from gptlab.training.preemption import PREEMPTED_EXIT, Preempted
from gptlab.training.run import Run, TrainingError
from gptlab.training.trackers import INSTALL, check_installed

SMOKE = ["--preset", "smoke", "train.hellaswag=false", "train.num_samples=1", "train.sample_length=4"]


def log_numbers(path: Path) -> dict[str, dict[int, list[float]]]:
    """{key: {step: [values in the order written]}} of log.txt's numeric lines, read here
    without gptlab's reader; text values (samples, `hella skipped`) are left out. A resumed
    attempt (`# run resumed from ... at step N`) redoes the steps after N: what was logged there is dropped."""
    found: dict[str, dict[int, list[float]]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# run resumed from "):
            since = int(line.rsplit(" ", 1)[1])
            found = {key: {step: v for step, v in steps.items() if step <= since} for key, steps in found.items()}
        if line.startswith("# "):
            continue
        step, key, text = line.split(" ", 2)
        try:
            value = float(text)
        except ValueError:
            continue
        found.setdefault(key, {}).setdefault(int(step), []).append(value)
    return {key: steps for key, steps in found.items() if steps}


def same_number(a: float, b: float) -> bool:
    """log.txt writes 6 decimals, TensorBoard keeps float32."""
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-6, abs_tol=6e-7)


class RecordingTracker:
    """A tracker that keeps what it is given, in memory."""

    def __init__(self, fail_on: str = ""):
        self.calls: list[tuple] = []
        self.fail_on = fail_on

    def __getattr__(self, method):
        if method not in ("metadata", "scalars", "text", "flush", "close"):
            raise AttributeError(method)

        def call(*args):
            if method == self.fail_on:
                raise OSError("disk full")
            self.calls.append((method, *args))
        return call

    def of(self, method: str) -> list[tuple]:
        return [call[1:] for call in self.calls if call[0] == method]


def metrics_for(tmp_path: Path, trackers=(), progress=False, last_step=10) -> Metrics:
    return Metrics(RunLog(tmp_path), Dist(), tokens_per_step=1024, flops_per_token=1000, last_step=last_step,
                   trackers=trackers, progress=progress)


def a_few_steps(metrics: Metrics) -> None:
    """What a run sends the metrics path: a header, steps with extras, a skipped step, two evaluations."""
    metrics.header("run", "started")
    metrics.header("training_config", {"max_lr": 6e-4, "wandb": "p"})
    metrics.evaluation(0, {"val": 10.87654321, "hella": "skipped", "hella_why": "train.hellaswag is off",
                           "samples": ["Hello, I'm a", "Hello, it"]})
    metrics.training_step(0, 10.9, 6e-6, 1.25, 0.5, 0.01, {"moe_balance": 0.0123, "moe_load_0": 0.6, "moe_load_1": 0.4})
    metrics.skipped_step(1, 1)
    metrics.training_step(1, float("nan"), 1.2e-5, float("inf"), 0.25, 0.0, {})
    metrics.record(2, {"mfu": 41.57, "mem_gib": 3.25})
    metrics.evaluation(2, {"val": 9.5, "hella": 0.2875, "hella_acc": 0.25, "hella_correct": 23, "hella_n": 80,
                           "samples": []})


def test_trackers_get_every_number_of_log_txt_with_its_step_and_key(tmp_path):
    tracker = RecordingTracker()
    with metrics_for(tmp_path, [tracker]) as metrics:
        a_few_steps(metrics)
    sent: dict[str, dict[int, list[float]]] = {}
    for step, values in tracker.of("scalars"):
        for key, value in values.items():
            assert isinstance(value, (int, float)) and not isinstance(value, bool), (key, value)
            sent.setdefault(key, {}).setdefault(step, []).append(value)
    logged = log_numbers(tmp_path / "log.txt")
    assert sent.keys() == logged.keys()
    assert {"train", "val", "hella", "lr", "norm", "tok_per_sec", "mfu", "mem_gib", "train_moe_balance",
            "train_moe_load_0", "skipped_nonfinite", "hella_correct"} <= sent.keys()
    for key in logged:
        assert sent[key].keys() == logged[key].keys(), key
        for step, values in logged[key].items():
            assert all(same_number(a, b) for a, b in zip(sent[key][step], values, strict=True)), (key, step)
    # text is not a number: the samples go as text, `hella skipped` nowhere but log.txt
    assert tracker.of("text") == [(0, "samples", ["Hello, I'm a", "Hello, it"])]
    assert all("hella" not in values or values["hella"] != "skipped" for _, values in tracker.of("scalars"))
    # the header is the run's metadata, value for value
    lines = (tmp_path / "log.txt").read_text().splitlines()
    header = [line[2:].split(" ", 1) for line in lines if line.startswith("# ")]
    assert [(key, value if isinstance(value, str) else json.dumps(value, sort_keys=True))
            for key, value in tracker.of("metadata")] == [tuple(pair) for pair in header]
    assert len(tracker.of("flush")) == 2  # at each evaluation
    assert tracker.of("close") == [("done",)]


@pytest.mark.parametrize("error, outcome", [(None, "done"), (Preempted("by SIGTERM"), "preempted"),
                                            (KeyboardInterrupt(), "interrupted"), (ValueError("bad"), "failed")])
def test_trackers_are_closed_with_how_the_run_ended(tmp_path, error, outcome):
    tracker = RecordingTracker()
    try:
        with metrics_for(tmp_path, [tracker]):
            if error is not None:
                raise error
    except BaseException as e:  # noqa: BLE001 - the one raised above, passed through the context
        assert e is error
    assert tracker.of("close") == [(outcome,)]


def test_a_failing_tracker_is_turned_off_and_the_log_goes_on(tmp_path, capsys):
    broken, working = RecordingTracker(fail_on="scalars"), RecordingTracker()
    with metrics_for(tmp_path, [broken, working]) as metrics:
        a_few_steps(metrics)
    assert "warning: Recording failed (OSError: disk full); it is off" in capsys.readouterr().err
    assert broken.of("scalars") == [] and broken.of("close") == [] and len(broken.of("metadata")) == 3  # + why no hella
    assert len(working.of("scalars")) == 6 and working.of("close") == [("done",)]
    assert "2 hella 0.287500" in (tmp_path / "log.txt").read_text()


@pytest.mark.parametrize("isatty, environ, shown", [
    (True, {}, True), (True, {"TERM": "xterm-256color"}, True), (False, {}, False), (True, {"CI": "true"}, False),
    (True, {"CI": "1"}, False), (True, {"CI": ""}, True), (True, {"CI": "false"}, True),
    (True, {"TERM": "dumb"}, False), (False, {"CI": "true"}, False)])
def test_the_progress_bar_is_shown_only_on_an_interactive_terminal_outside_ci(isatty, environ, shown):
    assert show_progress(isatty, environ) is shown


def test_progress_line_shows_step_total_percent_and_time_left():
    line = progress_line(1200, 19073, 2 * 3600 + 41 * 60, 100)
    assert line.startswith("step 1200/19073 [") and line.endswith(f" {100 * 1200 / 19073:.1f}% | 2h 41m left")
    assert line.count("#") == int(40 * 1200 / 19073) and len(line) <= 99
    assert progress_line(0, 50, None, 80).endswith("0.0% | time left ?")
    narrow = progress_line(7, 50, 30.0, 30)
    assert len(narrow) <= 29 and narrow.startswith("step 7/50") and "[" not in narrow  # no room for a bar


def screen(text: str) -> list[str]:
    """The lines a terminal shows for `text`: a carriage return goes back to the line's start."""
    lines = []
    for raw in text.split("\n"):
        cells: list[str] = []
        column = 0
        for char in raw:
            if char == "\r":
                column = 0
                continue
            cells[column:column + 1] = [char]
            column += 1
        lines.append("".join(cells).rstrip())
    return lines


def test_the_progress_bar_never_garbles_the_console_lines(tmp_path, capsys):
    with metrics_for(tmp_path, progress=True, last_step=3) as metrics:
        assert isinstance(metrics.progress, ProgressBar)
        metrics.evaluation(0, {"val": 10.5, "hella": "skipped", "hella_why": "off", "samples": []})
        for step in range(3):
            metrics.step_started(step)
            metrics.training_step(step, 10.0 - step, 1e-3, 1.0, 0.1, 0.0, {})
        metrics.step_started(3)  # the bar is up when the run ends: leaving clears it
    out = capsys.readouterr().out
    assert "step 2/3 [" in out  # it was drawn
    shown = [line for line in screen(out) if line]
    assert shown[0] == "step     0 | val 10.5000 | hella skipped (off)"
    assert [line.split(" | ")[0] for line in shown[1:]] == ["step     0", "step     1", "step     2"]
    assert all("[" not in line and "left" not in line for line in shown)
    assert "[" not in (tmp_path / "log.txt").read_text()  # and never in the log


def test_progress_bar_counts_time_left_from_the_second_step(monkeypatch):
    clock = iter([100.0, 160.0, 161.0, 163.0])  # step 0 compiles for a minute; then 1 s, 2 s a step
    monkeypatch.setattr(metrics_module, "time", types.SimpleNamespace(monotonic=lambda: next(clock)))
    stream = io.StringIO()
    bar = ProgressBar(total=10, stream=stream)
    for step in range(4):
        bar.draw(step)
    assert stream.getvalue().endswith("step 3/10 [" + "#" * int(40 * 0.3) + "-" * (40 - int(40 * 0.3)) +
                                      f"] 30.0% | {1.5 * 7:.1f}s left")


def test_the_tracker_fields_are_set_on_the_command_line_and_are_not_part_of_the_recipe(tmp_path):
    overrides = parse_overrides(["train.wandb=myproject", "train.tensorboard=true"])["train"]
    assert overrides == {"wandb": "myproject", "tensorboard": True}
    assert TrainingConfig().wandb == "" and TrainingConfig().tensorboard is False  # off by default
    experiment = load_experiment("baseline")
    plain = Run(experiment, experiment.model_config, TrainingConfig(), tmp_path)
    tracked = Run(experiment, experiment.model_config, TrainingConfig(**overrides), tmp_path)
    assert unfair_fields(tracked, plain) == []  # a study compares them as equals
    for saved, resumed in ((plain, tracked), (tracked, plain)):  # a resume may turn trackers on or off
        state = {"experiment": saved.experiment_record(), "model_config": dataclasses.asdict(saved.model_config),
                 "training_config": dataclasses.asdict(saved.train_config), "sources": []}
        ckpt.check_resumable(state, resumed)


@pytest.mark.parametrize("field, override", [("wandb", "myproject"), ("tensorboard", True)])
def test_a_tracker_without_its_package_is_one_clear_error(monkeypatch, field, override):
    monkeypatch.setitem(sys.modules, field, None)  # as if not installed
    with pytest.raises(TrainingError) as raised:
        check_installed(TrainingConfig(**{field: override}))
    assert f"train.{field}=" in str(raised.value) and f"needs the {field} package" in str(raised.value)
    assert INSTALL == 'pip install -e ".[track]"' and INSTALL in str(raised.value)
    check_installed(TrainingConfig())  # off: nothing is needed


# --- the long tier: real runs, the trackers' files read back with their own readers ---

def tensorboard_scalars(directory: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    accumulator = EventAccumulator(str(directory))  # purges what a SessionLog.START hides, as TensorBoard does
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def assert_tensorboard_matches_log(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every number of log.txt is in the event files with its step and key, the last written
    for a step winning in both (a resumed run repeats the steps after its checkpoint)."""
    events, logged = tensorboard_scalars(log_dir / "tensorboard"), log_numbers(log_dir / "log.txt")
    assert events.keys() == logged.keys()
    for key, points in events.items():
        last = {step: value for step, value in points}
        assert last.keys() == logged[key].keys(), key
        for step, values in logged[key].items():
            assert same_number(last[step], values[-1]), (key, step, last[step], values[-1])
    return events


@pytest.mark.long
def test_tensorboard_event_files_hold_log_txt_and_continue_after_a_resume(tmp_path):
    pytest.importorskip("tensorboard")
    log_dir = tmp_path / "run"
    args = [*SMOKE, "--max-steps", "6", "train.eval_interval=3", "train.val_interval=0", "train.tensorboard=true",
            "--log-dir", str(log_dir)]
    assert main([*args, "train.stop_at=4"]) == 0
    events = assert_tensorboard_matches_log(log_dir)
    assert [s for s, _ in events["train"]] == [0, 1, 2, 3] and [s for s, _ in events["val"]] == [0, 3]

    assert main([*args, "--resume", "auto"]) == 0  # continues in the same directory, a second event file
    assert len(list((log_dir / "tensorboard").glob("events.out.tfevents.*"))) == 2
    events = assert_tensorboard_matches_log(log_dir)
    assert [s for s, _ in events["train"]] == [0, 1, 2, 3, 4, 5] and [s for s, _ in events["val"]] == [0, 3, 6]

    # as after a crash at the end: resumed from step 3, the old events after it are hidden, not doubled
    assert main([*args, "--resume", str(log_dir / "model_00003.pt")]) == 0
    events = assert_tensorboard_matches_log(log_dir)
    assert [s for s, _ in events["train"]] == [0, 1, 2, 3, 3, 4, 5]  # step 3's train was logged after its checkpoint
    assert [s for s, _ in events["val"]] == [0, 3, 6]

    # text, as TensorBoard's server reads it (the plain EventAccumulator does not purge text)
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
    accumulator = EventAccumulator(str(log_dir / "tensorboard"))
    accumulator.Reload()
    config = accumulator.Tensors("header/training_config/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert '"tensorboard": true' in config
    experiment = accumulator.Tensors("header/experiment/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert '"name": "baseline"' in experiment and "gptlab.modules.attention.BaseAttention" in experiment
    assert [e.step for e in accumulator.Tensors("samples/text_summary")] == [3, 6]  # none from the untrained model


@pytest.mark.long
def test_under_ddp_only_rank_0_writes_tensorboard_events(tmp_path):
    pytest.importorskip("tensorboard")
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             str(REPO_ROOT / "train.py"), *SMOKE, "--max-steps", "2", "train.eval_interval=2",
                             "train.tensorboard=true", "--log-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert_tensorboard_matches_log(tmp_path)


def wandb_env(tmp_path: Path) -> dict:
    """W&B offline, its per-user files under tmp_path: nothing leaves the machine or the test."""
    return {**os.environ, "WANDB_MODE": "offline", "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"),
            "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"), "WANDB_DATA_DIR": str(tmp_path / "wandb-data"),
            "TMPDIR": str(tmp_path)}


def wandb_records(run_dir: Path, env: dict) -> list[dict]:
    """The records of an offline run's .wandb transaction log, by wandb's own reader."""
    result = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(run_dir)],
                            capture_output=True, text=True, timeout=120, env=env)
    if result.returncode and "No such command" in result.stderr:
        pytest.skip("this wandb has no `wandb leet inspect` to read its offline runs with")
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def train_py(*args, env, cwd):
    return subprocess.run([sys.executable, str(REPO_ROOT / "train.py"), *args], capture_output=True, text=True,
                          timeout=300, env=env, cwd=cwd)


@pytest.mark.long
def test_wandb_offline_run_holds_log_txt_and_a_resumed_run_continues_it(tmp_path):
    pytest.importorskip("wandb")
    env, log_dir, cwd = wandb_env(tmp_path), tmp_path / "run", tmp_path / "cwd"
    cwd.mkdir()
    args = [*SMOKE, "--max-steps", "8", "train.eval_interval=3", "train.val_interval=0", "train.wandb=gptlab-test",
            "--log-dir", str(log_dir)]
    first = train_py(*args, "train.stop_at=3", env=env, cwd=cwd)
    assert first.returncode == 0, first.stderr
    run_id = torch.load(log_dir / "model_00003.pt", weights_only=True)["wandb_run_id"]
    assert f"# wandb_run_id {run_id}\n" in (log_dir / "log.txt").read_text()

    # preempted while resumed (SIGTERM: a checkpoint, exit 3), then resumed to the end
    proc = subprocess.Popen([sys.executable, str(REPO_ROOT / "train.py"), *args, "--resume", "auto"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
    deadline = time.time() + 240
    while "\n4 train " not in (log_dir / "log.txt").read_text():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == PREEMPTED_EXIT, err
    last = train_py(*args, "--resume", "auto", env=env, cwd=cwd)
    assert last.returncode == 0, last.stderr

    assert not (cwd / "wandb").exists()  # W&B's files live in the run's directory
    runs = sorted((log_dir / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(runs) == 3 and len(list((log_dir / "wandb").glob("offline-run-*"))) == 3  # one W&B run, three processes
    records = [wandb_records(run, env) for run in runs]
    for process in records:
        (run,) = [r["run"] for r in process if r["type"] == "run"]
        assert (run["run_id"], run["display_name"], run["run_group"], run["project"]) == \
            (run_id, "baseline/seed1337", "baseline", "gptlab-test")
    assert [[r["exit"].get("exit_code", 0) for r in process if r["type"] == "exit"] for process in records] == \
        [[0], [PREEMPTED_EXIT], [0]]
    assert any(r["type"] == "preempting" for r in records[1])

    config = {}
    for r in records[0]:
        config.update(r["run"]["config"]["update"] if r["type"] == "run" else
                      r["config"]["update"] if r["type"] == "config" else {})
    assert config["experiment"]["name"] == "baseline"
    assert config["experiment"]["attention_class"] == "gptlab.modules.attention.BaseAttention"
    assert config["training_config"]["wandb"] == "gptlab-test" and config["params"] > 0 and config["run"] == "started"

    history: dict[str, dict[int, float]] = {}  # the last value W&B holds for each step, in the processes' order
    for process in records:
        for r in process:
            if r["type"] == "history":
                item = r["history"]["item"]
                for key, value in item.items():
                    if not key.startswith("_") and key != "step":
                        history.setdefault(key, {})[item["step"]] = value
    samples = history.pop("samples")  # text, beside the numbers; none at step 0 (the untrained model's)
    logged = log_numbers(log_dir / "log.txt")
    assert sorted(samples) == sorted(logged["val"])[1:] and all(s.startswith("Hello, I'm a language model,")
                                                            for s in samples.values())
    assert history.keys() == logged.keys()
    for key, steps in logged.items():
        assert history[key].keys() == steps.keys(), key
        assert all(same_number(history[key][step], values[-1]) for step, values in steps.items()), key


FAILING = """
    import torch
    from gptlab.modules import MLP

    class FailingMLP(MLP):
        calls = 0

        def forward(self, x):
            if torch.is_grad_enabled():
                FailingMLP.calls += 1
                if FailingMLP.calls == 9:  # step 2's first micro-step (2 layers x 2 micro-steps a step)
                    raise RuntimeError("injected failure")
            return super().forward(x)

    MLP_CLASS = FailingMLP
"""


@pytest.mark.long
def test_a_failed_run_finishes_its_wandb_run_as_failed(tmp_path):
    pytest.importorskip("wandb")
    env, log_dir = wandb_env(tmp_path), tmp_path / "run"
    experiment = tmp_path / "failing.py"
    experiment.write_text(textwrap.dedent(FAILING))
    result = train_py("--experiment", str(experiment), *SMOKE, "--max-steps", "6", "train.wandb=gptlab-test",
                      "--log-dir", str(log_dir), env=env, cwd=tmp_path)
    assert result.returncode == 1 and "injected failure" in result.stderr
    (run,) = (log_dir / "wandb").glob("offline-run-*")
    assert [r["exit"]["exit_code"] for r in wandb_records(run, env) if r["type"] == "exit"] == [1]


PROBE = """
import sys
{block}
from gptlab.training.cli import main
code = main(sys.argv[1:])
print("CODE", code)
print("IMPORTED", sorted({{m.split(".")[0] for m in sys.modules if m.startswith(("wandb", "tensorboard"))}} |
                         {{m for m in sys.modules if m.startswith("torch.utils.tensorboard")}}))
"""


def probe(tmp_path: Path, *args, block: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROBE.format(block=block), *SMOKE, *args, "--log-dir",
                           str(tmp_path / "run")], capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)


@pytest.mark.long
def test_a_run_without_trackers_imports_neither_package(tmp_path):
    result = probe(tmp_path, "--max-steps", "1")
    assert "CODE 0" in result.stdout, result.stderr
    assert "IMPORTED []" in result.stdout


@pytest.mark.long
@pytest.mark.parametrize("package, override", [("tensorboard", "train.tensorboard=true"),
                                               ("wandb", "train.wandb=myproject")])
def test_a_missing_tracker_package_stops_the_run_before_it_trains(tmp_path, package, override):
    result = probe(tmp_path, "--max-steps", "1", override, block=f"sys.modules[{package!r}] = None")
    assert "CODE 2" in result.stdout, result.stderr
    assert f"{override.split('=')[0]}=" in result.stderr and f'needs the {package} package' in result.stderr
    assert 'pip install -e ".[track]"' in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "log.txt").exists() and not list((tmp_path / "run").glob("model_*"))
