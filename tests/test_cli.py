"""The `gptlab` command: its commands listed in order, each with a --help, a misspelt command
answered with the close one, and every command's flags frozen (STYLE.md 13: the command line
overrides, it does not grow; torchtitan freezes its CLI options the same way)."""

import os
import shutil
import subprocess
import sys

import pytest

from gptlab.cli import COMMANDS, main, usage
from gptlab.paths import REPO_ROOT

ORDER = ["train", "study", "status", "report", "plot", "bench", "eval-lengths", "export", "prepare", "generate", "check",
         "coordcheck"]

# Each command's option strings, and the names of its positional arguments (no dashes), -h and
# --help left out. A flag added or removed fails test_the_flags_of_every_command_are_frozen: a
# new flag is a deliberate change, made here in the same commit; a new behaviour is usually a
# config field (model.X= / train.X=) instead.
FROZEN = {
    "train": {"--compile", "--data-root", "--device", "--experiment", "--inference", "--init-from", "--log-dir",
              "--max-new-tokens", "--max-steps", "--no-compile", "--no-launch", "--num-samples", "--preset", "--prompt",
              "--resume", "--seed", "--temperature", "--top-k", "overrides"},
    "study": {"--allow-unfair", "--baseline", "--budget", "--dry-run", "--experiments", "--ladder", "--ladder-lr",
              "--launcher", "--lr-sweep", "--out", "--parallel", "--preset", "--seeds", "--slurm", "--verbose",
              "overrides", "study"},
    "status": {"--json", "dir"},
    "report": {"--baseline", "--detect", "--law", "--no-figures", "--out", "dirs"},
    "plot": {"arguments"},
    "bench": {"--batch", "--compile", "--device", "--dtype", "--experiments", "--fixed-cost", "--json", "--new-tokens",
              "--no-generation", "--seq-len", "--sizes", "--steps", "--warmup"},
    "eval-lengths": {"--device", "--factors", "--tokens", "path"},
    "export": {"--dtype", "--list", "checkpoint", "out_dir"},
    "prepare": {"--input", "--max-length", "--min-length", "--no-eot", "--out", "--prefix", "--shard-size",
                "--skip-bad", "--split-field", "--text-field", "--val-ratio", "--val-value", "--workers"},
    "generate": {"--device", "--ignore-eot", "--max-new-tokens", "--num-samples", "--prompt", "--seed",
                 "--temperature", "--top-k", "source"},
    "check": {"experiment", "overrides"},
    "coordcheck": {"--depth-parametrization", "--depth-width", "--depths", "--lr", "--out", "--parametrization", "--steps", "--transfer", "--widths", "experiment"},
}


def flags(parser) -> set[str]:
    """Option strings, and positional arguments by their dest."""
    found = set()
    for action in parser._actions:
        found |= set(action.option_strings) or {action.dest}
    return found - {"-h", "--help"}


def flag_change(name: str, actual: set[str]) -> str | None:
    """What differs from the frozen set of command name, said so that the fix is plain; None if nothing."""
    frozen = FROZEN.get(name)
    if frozen is None:
        return (f"gptlab {name} has no frozen flag set: add FROZEN[{name!r}] = {sorted(actual)} to "
                f"tests/test_cli.py")
    if actual == frozen:
        return None
    added, removed = sorted(actual - frozen), sorted(frozen - actual)
    return (f"the flags of gptlab {name} changed: added {added or 'none'}, removed {removed or 'none'}. The command "
            f"line grows only on purpose: prefer a config field (model.X= / train.X=); if the flag is meant, update "
            f"FROZEN[{name!r}] in tests/test_cli.py in the same change")


@pytest.mark.parametrize("name", list(COMMANDS))
def test_the_flags_of_every_command_are_frozen(name):
    problem = flag_change(name, flags(COMMANDS[name].build_parser()))
    assert problem is None, problem


@pytest.mark.parametrize("name", list(COMMANDS))
def test_no_command_takes_an_abbreviated_flag(name):
    """`gptlab study ... --seed 7` was read as --seeds 7: a flag typed short must be refused, never quietly taken
    for a longer one."""
    assert COMMANDS[name].build_parser().allow_abbrev is False


def test_study_refuses_train_pys_seed_flag(capsys):
    from gptlab.study.cli import parser
    with pytest.raises(SystemExit):
        parser().parse_intermixed_args(["--experiments", "baseline", "--seed", "7"])
    assert "unrecognized arguments: --seed" in capsys.readouterr().err


def test_a_new_or_lost_flag_is_named_with_what_to_do():
    parser = COMMANDS["check"].build_parser()
    parser.add_argument("--verbose", action="store_true")
    message = flag_change("check", flags(parser))
    assert "added ['--verbose'], removed none" in message and "FROZEN['check']" in message
    assert "removed ['overrides']" in flag_change("check", {"experiment"})
    assert "has no frozen flag set" in flag_change("new-command", {"--x"})


def test_help_lists_every_command_once_in_order(capsys):
    assert main(["help"]) == 0 and main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.count("usage: gptlab COMMAND") == 2
    out = out[len(out) // 2:]
    assert out == usage() + "\n"
    listed = [line.split()[0] for line in out.split("commands:\n")[1].split("\n\n")[0].splitlines()]
    assert listed == list(COMMANDS) == ORDER
    for name, command in COMMANDS.items():
        assert f"  {name}" in out and command.summary in out


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_has_its_own_help(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([name, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:")
    for flag in FROZEN[name]:
        assert flag in out or not flag.startswith("-"), flag  # every flag is documented


@pytest.mark.parametrize("argv, phrases", [
    (["trian"], ["no command 'trian'; did you mean train?"]),
    (["genrate", "x.pt"], ["did you mean generate?"]),
    (["eval_lengths"], ["did you mean eval-lengths?"]),
    (["EXPORT"], ["did you mean export?"]),
    (["frobnicate"], ["no command 'frobnicate'\n", "commands: train, study"]),
    ([], ["usage: gptlab COMMAND", "  generate"]),
])
def test_an_unknown_or_missing_command_exits_2_and_names_the_choices(argv, phrases, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    for phrase in phrases:
        assert phrase in captured.err, captured.err


def test_the_nightly_loop_calls_train_py_with_frozen_flags():
    script = (REPO_ROOT / "train_nightly.sh").read_text()
    for flag in ("--experiment", "--log-dir", "--resume", "--no-launch"):
        assert flag in script and flag in FROZEN["train"]


def test_train_nightly_help_runs():
    result = subprocess.run(["bash", str(REPO_ROOT / "train_nightly.sh"), "--help"], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0 and result.stdout.startswith("usage:") and "EXPERIMENT" in result.stdout


def run(*command):
    return subprocess.run(list(command), capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})


@pytest.mark.long  # each is a Python process that imports torch (seconds)
@pytest.mark.parametrize("script, command", [("train.py", "train"), ("plot_training_log.py", "plot")])
def test_the_root_scripts_still_answer_help_with_their_commands_flags(script, command):
    result = run(sys.executable, str(REPO_ROOT / script), "--help")
    assert result.returncode == 0 and result.stdout.startswith(f"usage: {script}"), result.stderr
    assert result.stdout == run(sys.executable, "-m", "gptlab", command, "--help").stdout
    for flag in FROZEN[command]:
        assert flag in result.stdout or not flag.startswith("-")


@pytest.mark.long
def test_python_m_gptlab_and_the_console_script_are_the_same_command():
    commands = [[sys.executable, "-m", "gptlab"]]
    if shutil.which("gptlab"):  # installed by pip install -e . ([project.scripts])
        commands.append([shutil.which("gptlab")])
    for command in commands:
        result = run(*command, "--help")
        assert result.returncode == 0 and result.stdout == usage() + "\n", result.stderr
        result = run(*command, "trian")
        assert result.returncode == 2 and "did you mean train?" in result.stderr
        result = run(*command, "generate", "--help")
        assert result.returncode == 0 and "--ignore-eot" in result.stdout
