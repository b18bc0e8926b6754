"""Every command shown in the README, its Chinese front page and docs/ is a command that works.

The commands are the lines of the ```bash blocks (and the `$ ` lines of ```console blocks);
a block that is not a command to type (a script gptlab writes, a file's contents) is fenced
```text. Each command of gptlab's own tools is parsed by that tool's own argument parser (an
unknown flag, a misspelt subcommand, override, SLURM setting, extra, experiment or study fails);
the cheap ones also run, as written, with tiny overrides, in a temporary directory (never the
checkout's log_train/). Commands of other tools are on a short allow-list. The Chinese front
page shows exactly the English one's commands.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import io
import os
import re
import runpy
import shlex
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]  # the checkout: the docs are typed from its root
README = REPO_ROOT / "README.md"
README_ZH = REPO_ROOT / "README.zh-CN.md"
DOCS = [README, README_ZH, *sorted((REPO_ROOT / "docs").glob("*.md"))]

# tools that are not gptlab's: allowed as they are (a wrapper's own command is checked as well)
OTHER_TOOLS = {"pip", "tail", "cp", "git", "nohup", "sbatch", "eval", "lm_eval", "tensorboard", "wandb", "tmux"}
SHELL_OPERATORS = {"&&", "||", ";", "|", "&"}
REDIRECTIONS = {">", ">>", "<", ">&", "&>", ">|"}
# what a cheap run appends: one step, one validation batch, no HellaSwag download, no samples; one seed a study
TINY_TRAIN = ["train.max_steps=1", "train.val_tokens=512", "train.hellaswag=false", "train.num_samples=0"]
TINY_STUDY = ["--seeds", "1"]
TINY_GENERATE = ["--max-new-tokens", "8", "--num-samples", "1"]
# what python -m gptlab.reporting.summary appends: every experiment at a tiny size
TINY_MODEL = ["model.n_layer=1", "model.n_embd=96", "model.block_size=64", "model.vocab_size=512"]


# ---------------------------------------------------------------------------------------------
# extraction


@dataclass(frozen=True)
class Command:
    doc: str  # the file, relative to the checkout
    line: int  # where the command's line starts
    text: str  # the command as shown, without its comment
    env: tuple[tuple[str, str], ...]  # NAME=VALUE prefixes
    argv: tuple[str, ...]
    group: int = 0  # commands joined on one line (a && b) share a group and run in order

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: {self.text}"


@dataclass
class Block:
    lang: str
    line: int  # of the block's first line of content
    lines: list[str]
    before: str = ""  # the text just above the fence


def blocks(text: str) -> list[Block]:
    found, current, before = [], None, []
    for number, line in enumerate(text.splitlines(), 1):
        fence = re.match(r"^\s*```\s*([\w.+-]*)", line)
        if current is None and fence:
            current = Block(fence.group(1).lower(), number + 1, [], "\n".join(before[-4:]))
        elif current is not None and re.match(r"^\s*```\s*$", line):
            found.append(current)
            current, before = None, []
        elif current is not None:
            current.lines.append(line)
        else:
            before.append(line)
    return found


def split_words(line: str) -> list[str]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True  # comments after # go; quotes, $(...) and ~ stay in their word
    return list(lexer)


def commands_in(text: str, doc: str) -> list[Command]:
    """The commands of a Markdown text's ```bash blocks (a trailing backslash continues a line,
    a comment ends it, NAME=VALUE words before a command are its environment) and of the `$ `
    lines of its ```console blocks."""
    commands, group = [], 0
    for block in blocks(text):
        if block.lang not in ("bash", "shell", "sh", "console"):
            continue
        joined, start = [], None
        pending = ""
        for offset, raw in enumerate(block.lines):
            if block.lang == "console":
                if not raw.startswith("$ "):
                    continue
                raw = raw[2:]
            if not pending:
                start = block.line + offset
            if raw.rstrip().endswith("\\"):
                pending += raw.rstrip()[:-1] + " "
                continue
            joined.append((start, pending + raw))
            pending = ""
        for number, line in joined:
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            group += 1
            for env, argv in split_commands(split_words(line)):
                shown = shlex.join([f"{k}={v}" for k, v in env] + list(argv))
                commands.append(Command(doc, number, shown, tuple(env), tuple(argv), group))
    return commands


def split_commands(words: list[str]) -> list[tuple[list, list]]:
    """a && b ; c > out 2>&1 & -> [(env, argv), ...], redirections dropped."""
    found, current = [], []
    skip = False
    for word in words:
        if skip:
            skip = False
            continue
        if word in SHELL_OPERATORS:
            found.append(current)
            current = []
        elif word in REDIRECTIONS:
            if current and current[-1].isdigit():  # the 2 of 2>&1
                current.pop()
            skip = True
        else:
            current.append(word)
    found.append(current)
    result = []
    for argv in filter(None, found):
        env = []
        while argv and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", argv[0]):
            key, _, value = argv.pop(0).partition("=")
            env.append((key, value))
        if argv:
            result.append((env, argv))
    return result


def doc_commands(path: Path) -> list[Command]:
    return commands_in(path.read_text(encoding="utf-8"), str(path.relative_to(REPO_ROOT)))


def all_commands() -> list[Command]:
    return [c for path in DOCS for c in doc_commands(path)]


def tour_commands() -> list[Command]:
    """The README's commands under '## A short tour', up to the next section."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = lines.index("## A short tour") + 1
    end = next((i + 1 for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
    return [c for c in doc_commands(README) if start < c.line < end]


def made_experiments(paths=DOCS) -> dict[str, str]:
    """Experiment files the docs have you write: a python block introduced as experiments/NAME.py
    (or marked <!-- example: NAME.py -->) whose NAME is not shipped -> its text; `cp ... experiments/NAME.py`
    -> None (a copy)."""
    shipped = {p.stem for p in (REPO_ROOT / "experiments").glob("*.py")}
    made = {}
    for path in paths:
        text = path.read_text(encoding="utf-8")
        for block in blocks(text):
            name = re.search(r"example: (\w+)\.py -->|`experiments/(\w+)\.py`", block.before)
            if block.lang == "python" and name and (name.group(1) or name.group(2)) not in shipped:
                made.setdefault(name.group(1) or name.group(2), "\n".join(block.lines) + "\n")
        for command in commands_in(text, ""):
            if command.argv[0] == "cp" and command.argv[-1].startswith("experiments/"):
                made.setdefault(Path(command.argv[-1]).stem, None)
    return made


# ---------------------------------------------------------------------------------------------
# parsing: each command by its own tool's parser, without running it


class Parsed(Exception):
    """Raised by a parser once it has parsed: the command line is valid, nothing runs."""


@contextlib.contextmanager
def stop_after_parsing():
    """While active, the outermost parse_args / parse_known_args / parse_intermixed_args of any
    argparse parser parses and then raises Parsed: a script's main() is checked, not run."""
    names = ("parse_args", "parse_known_args", "parse_intermixed_args", "parse_known_intermixed_args")
    originals = {name: getattr(argparse.ArgumentParser, name) for name in names}
    depth = [0]

    def wrap(original):
        def parse(self, *args, **kwargs):
            depth[0] += 1
            try:
                result = original(self, *args, **kwargs)
            finally:
                depth[0] -= 1
            if depth[0] == 0:
                raise Parsed(result)
            return result
        return parse

    for name, original in originals.items():
        setattr(argparse.ArgumentParser, name, wrap(original))
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(argparse.ArgumentParser, name, original)


def argparse_problem(parse) -> str | None:
    """Run parse(); an argparse error (SystemExit 2) -> its message; --help (SystemExit 0) is fine."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parse()
    except Parsed:
        return None
    except SystemExit as e:
        if e.code in (0, None):
            return None
        return err.getvalue().strip() or f"exit status {e.code}"
    return None


def resolve(argv: list[str]) -> tuple[str, list[str]]:
    """(the tool, its arguments): 'train', a gptlab subcommand, 'gptlab', 'module:NAME', 'script:PATH',
    'bash:PATH', 'torchrun', or another program's name."""
    prog, rest = argv[0], list(argv[1:])
    if prog in ("python", "python3"):
        if rest[:1] == ["-m"] and len(rest) > 1:
            module, rest = rest[1], rest[2:]
            if module == "gptlab":
                return gptlab_subcommand(rest)
            return MODULE_COMMANDS().get(module, f"module:{module}"), rest
        script, rest = rest[0], rest[1:]
        return {"train.py": "train", "plot_training_log.py": "plot"}.get(script, f"script:{script}"), rest
    if prog == "gptlab":
        return gptlab_subcommand(rest)
    if prog == "bash" and rest:
        return f"bash:{rest[0]}", rest[1:]
    return prog, rest


def gptlab_subcommand(rest: list[str]) -> tuple[str, list[str]]:
    from gptlab.cli import COMMANDS
    if not rest or rest[0] in ("-h", "--help", "help"):
        return "gptlab", rest
    if rest[0] in COMMANDS:
        return rest[0], rest[1:]
    return f"gptlab-unknown:{rest[0]}", rest[1:]


def MODULE_COMMANDS() -> dict[str, str]:
    from gptlab.cli import COMMANDS
    table = {c.module: name for name, c in COMMANDS.items() if c.module != "gptlab.cli"}
    return {**table, "gptlab.study": "study", "gptlab.bench": "bench"}


def experiment_problem(name: str, made) -> str | None:
    from gptlab.core.experiment import available_experiments
    if name.endswith(".py") or "/" in name:
        return None if (REPO_ROOT / name).is_file() else f"no experiment file {name}"
    if name in available_experiments() or name in made:
        return None
    return f"no experiment {name!r} in experiments/ (nor one the docs have you write)"


def overrides_problem(overrides: list[str]) -> str | None:
    from gptlab.core.config import ConfigError, parse_overrides
    try:
        parse_overrides(overrides)
    except ConfigError as e:
        return str(e)
    return None


def first(*problems) -> str | None:
    return next((p for p in problems if p), None)


def parse_problem(command: Command, made) -> str | None:
    """Why the command would not be accepted as written, or None. 'skip: ...' when the tool
    that would parse it is not installed."""
    tool, args = resolve(list(command.argv))
    env = dict(command.env)
    check = CHECKS.get(tool.split(":")[0] if tool.startswith(("module:", "script:", "bash:")) else tool)
    if tool.startswith("gptlab-unknown:"):
        return f"gptlab has no command {tool.split(':', 1)[1]!r}"
    if check is None:
        return f"{command.argv[0]!r} is neither one of gptlab's tools nor on the allow-list {sorted(OTHER_TOOLS)}"
    return check(tool, args, env, made)


def check_train(tool, args, env, made):
    from gptlab.training.cli import parser
    namespace = {}
    problem = argparse_problem(lambda: namespace.setdefault("args", parser().parse_intermixed_args(args)))
    if problem or "args" not in namespace:
        return problem
    a = namespace["args"]
    return first(experiment_problem(a.experiment, made), overrides_problem(a.overrides))


def check_study(tool, args, env, made):
    from gptlab.study.cli import parser
    from gptlab.study.plan import available_studies
    from gptlab.study.slurm import SlurmError, SlurmOptions
    namespace = {}
    problem = argparse_problem(lambda: namespace.setdefault("args", parser().parse_intermixed_args(args)))
    if problem or "args" not in namespace:
        return problem
    a = namespace["args"]
    overrides = list(a.overrides)  # where the study's main() finds them
    if a.study and "=" in a.study:
        overrides, a.study = [a.study, *overrides], None
    experiments = [e for e in a.experiments or [] if "=" not in e]
    overrides += [e for e in a.experiments or [] if "=" in e]
    slurm = [s for s in a.slurm or [] if not s.startswith(("model.", "train."))]
    overrides += [s for s in a.slurm or [] if s.startswith(("model.", "train."))]
    problems = [experiment_problem(e, made) for e in experiments]
    if a.study and not a.study.endswith(".py") and a.study not in available_studies():
        problems.append(f"no study {a.study!r} in studies/ (there are {', '.join(available_studies())})")
    try:
        SlurmOptions.parse(slurm)
    except SlurmError as e:
        problems.append(str(e))
    return first(*problems, overrides_problem(overrides))


def check_check(tool, args, env, made):
    from gptlab.cli import check_parser
    namespace = {}
    problem = argparse_problem(lambda: namespace.setdefault("args", check_parser().parse_args(args)))
    if problem or "args" not in namespace:
        return problem
    return first(experiment_problem(namespace["args"].experiment, made), overrides_problem(namespace["args"].overrides))


def check_subcommand(tool, args, env, made):
    """report, status, plot, bench, eval-lengths, export, prepare, generate: their own parser()."""
    from gptlab.cli import COMMANDS
    namespace = {}
    problem = argparse_problem(lambda: namespace.setdefault("args", COMMANDS[tool].build_parser().parse_args(args)))
    if problem or "args" not in namespace:
        return problem
    experiments = getattr(namespace["args"], "experiments", None) or []
    return first(*(experiment_problem(e, made) for e in experiments if e != "all"))


def check_gptlab(tool, args, env, made):
    return None if args in ([], ["-h"], ["--help"], ["help"]) else f"gptlab {' '.join(args)}: not a command"


def check_module(tool, args, env, made):
    module = tool.split(":", 1)[1]
    if module == "pytest":
        return check_pytest(args)
    if module == "gptlab.reporting.summary":  # bare FIELD=VALUE is model.FIELD=VALUE, as its main() reads it
        words = [a for a in args if a not in ("-h", "--help")]
        return overrides_problem([a if a.startswith("model.") else f"model.{a}" for a in words])
    if module == "gptlab.evaluation.harness":
        return check_harness(args)
    if module == "gptlab.study.slurm":
        usage = "usage: python -m gptlab.study.slurm task MANIFEST INDEX"
        return None if len(args) == 3 and args[0] == "task" else usage
    if importlib.util.find_spec(module) is None:
        return f"no module {module}"
    target = importlib.import_module(module)
    if hasattr(target, "parser"):
        return argparse_problem(lambda: target.parser().parse_args(args))
    with stop_after_parsing(), argv_as(module, args), warnings.catch_warnings():  # its parser, built as __main__
        warnings.simplefilter("ignore", RuntimeWarning)  # runpy: the module was imported already (by its package)
        return argparse_problem(lambda: runpy.run_module(module, run_name="__main__"))


def check_script(tool, args, env, made):
    script = tool.split(":", 1)[1]
    path = REPO_ROOT / script
    if not path.is_file():
        return f"no script {script}"
    with stop_after_parsing(), argv_as(str(path), args):
        return argparse_problem(lambda: runpy.run_path(str(path), run_name="__main__"))


@contextlib.contextmanager
def argv_as(prog: str, args: list[str]):
    saved = sys.argv
    sys.argv = [prog, *args]
    try:
        yield
    finally:
        sys.argv = saved


def check_bash(tool, args, env, made):
    script = tool.split(":", 1)[1]
    path = REPO_ROOT / script
    if not path.is_file():
        return f"no script {script}"
    if script == "train_nightly.sh":  # its arguments and TRAIN_ARGS go to train.py; EXPERIMENT names the run
        if "--help" in args or "-h" in args:
            return None
        train_args = ["--experiment", env.get("EXPERIMENT", "baseline"), *shlex.split(env.get("TRAIN_ARGS", "")), *args]
        return check_train("train", train_args, env, made)
    if script == "tools/slurm_cluster.sh":
        subcommands = re.findall(r"^\s+(\w+)\) \w+ ;;", path.read_text(), re.M)
        return None if args[:1] and args[0] in subcommands and len(args) == 1 else \
            f"tools/slurm_cluster.sh takes one of {', '.join(subcommands)}"
    return None if not args else f"{script} takes no arguments"


def check_torchrun(tool, args, env, made):
    from torch.distributed.run import get_args_parser
    namespace = {}
    problem = argparse_problem(lambda: namespace.setdefault("args", get_args_parser().parse_args(args)))
    if problem or "args" not in namespace:
        return problem
    a = namespace["args"]
    if a.module or a.training_script != "train.py":
        return "the docs launch train.py under torchrun"
    return check_train("train", a.training_script_args, env, made)


def check_harness(args):
    try:
        from lm_eval._cli.harness import HarnessCLI
        from gptlab.evaluation.harness import MODEL_ARGS
    except ImportError:
        return "skip: lm-eval is not installed (pip install -e \".[eval]\")"
    namespace = {}
    with argv_as("lm_eval", args):
        problem = argparse_problem(lambda: namespace.setdefault("args", HarnessCLI().parse_args()))
    if problem or "args" not in namespace:
        return problem
    a = namespace["args"]
    if a.model != "gptlab":
        return f"--model {a.model}: the docs evaluate gptlab checkpoints (--model gptlab)"
    model_args = a.model_args if isinstance(a.model_args, dict) else \
        dict(kv.split("=", 1) for kv in (a.model_args or "").split(",") if kv)
    unknown = set(model_args) - set(MODEL_ARGS)
    return f"--model_args {', '.join(sorted(unknown))}: not a model_arg of --model gptlab ({', '.join(MODEL_ARGS)})" \
        if unknown else None


def check_pytest(args):
    declared = re.findall(r'^\s*"(\w+): ', (REPO_ROOT / "pyproject.toml").read_text(), re.M)  # [tool.pytest] markers
    problems = []
    for i, word in enumerate(args):
        if args[i - 1] == "-m" and i > 0:
            unknown = set(re.findall(r"\w+", word)) - {"not", "and", "or"} - set(declared)
            problems += [f"-m {word}: no marker {m!r} (pyproject.toml declares {', '.join(declared)})" for m in unknown]
        elif not word.startswith("-") and args[i - 1] != "-m" and not (REPO_ROOT / word.split("::")[0]).exists():
            problems.append(f"no test path {word}")
    return first(*problems)


def check_other(tool, args, env, made):
    if tool == "pip":  # the extras it names exist
        extras = set(re.findall(r"^(\w[\w-]*) = \[", optional_dependencies(), re.M))
        for word in args:
            for name in re.findall(r"^\.\[([\w,-]+)\]$", word)[:1]:
                unknown = set(name.split(",")) - extras
                if unknown:
                    return (f"pip install {word}: gptlab has no extra {', '.join(sorted(unknown))} "
                            f"({', '.join(sorted(extras))})")
    if tool == "nohup":  # the command it runs
        return parse_problem(Command("", 0, shlex.join(args), tuple(), tuple(args)), made)
    if tool == "eval":  # eval "$(command)"
        inner = re.fullmatch(r"\$\((.*)\)", " ".join(args))
        if not inner:
            return "eval: the docs eval the output of one command, eval \"$(...)\""
        return first(*(parse_problem(Command("", 0, "", tuple(e), tuple(a)), made)
                       for e, a in split_commands(split_words(inner.group(1)))))
    if tool == "cp" and len(args) == 2:  # a shipped file copied into the checkout
        return None if (REPO_ROOT / args[0]).exists() else f"cp: no {args[0]} in the checkout"
    return None


def optional_dependencies() -> str:
    """pyproject.toml's [project.optional-dependencies] table, as text."""
    text = (REPO_ROOT / "pyproject.toml").read_text()
    return text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]


CHECKS = {"train": check_train, "study": check_study, "check": check_check, "gptlab": check_gptlab,
          "module": check_module, "script": check_script, "bash": check_bash, "torchrun": check_torchrun,
          **{name: check_subcommand for name in ("report", "status", "plot", "bench", "eval-lengths", "export",
                                                  "prepare", "generate", "coordcheck")},
          **{name: check_other for name in OTHER_TOOLS}}


# ---------------------------------------------------------------------------------------------
# running: the cheap commands, as written, with tiny overrides, in a temporary directory


@dataclass
class Sandbox:
    """Where a doc's commands run: cwd is a temporary directory; log_train/, data/ and the
    experiment files the docs have you write live there, never in the checkout."""
    root: Path
    made: dict = field(default_factory=dict)

    def __post_init__(self):
        (self.root / "experiments").mkdir(parents=True, exist_ok=True)
        for name, text in self.made.items():
            if text is not None:
                (self.root / "experiments" / f"{name}.py").write_text(text)

    def experiment(self, name: str) -> str:
        mine = self.root / "experiments" / f"{name}.py"
        return str(mine) if name in self.made and mine.exists() else name

    def path(self, word: str) -> str:
        """A path typed from the checkout's root: log_train/, data/, hf/ go to the sandbox; a
        file of the checkout (experiments/baseline.py) is read from there."""
        if word.startswith(("log_train/", "data/", "hf/")) or word == "log_train":
            return str(self.root / word)
        if word.startswith("experiments/"):
            return str(REPO_ROOT / word) if (REPO_ROOT / word).exists() else str(self.root / word)
        return word

    def argv(self, command: Command) -> list[str]:
        tool, args = resolve(list(command.argv))
        if tool in ("train", "study"):
            args = self.experiments_in(args)
        if tool == "check" and args and not args[0].startswith("-"):
            args = [self.experiment(args[0]), *args[1:]]
        args = [self.path(a) for a in args]
        if tool == "train" and "--help" not in args:
            args += TINY_TRAIN
            if "--log-dir" not in args:
                name = Path(self.option(args, "--experiment") or "baseline").stem
                seed = self.option(args, "--seed")
                args += ["--log-dir", str(self.root / "log_train" / name / (f"seed{seed}" if seed else "log"))]
        if tool == "study" and "--help" not in args and "--dry-run" not in args:  # a dry run as written
            args += TINY_TRAIN + TINY_STUDY
        if tool == "study" and "--help" not in args:
            if "--out" not in args:
                args += ["--out", str(self.root / "log_train" / "study")]
        if tool == "generate" and "--help" not in args:
            args += TINY_GENERATE
        if tool == "module:gptlab.reporting.summary" and not any("=" in a for a in args):
            args += TINY_MODEL
        python = [sys.executable]
        if tool == "train":
            return python + [str(REPO_ROOT / "train.py"), *args]
        if tool == "plot":
            return python + [str(REPO_ROOT / "plot_training_log.py"), *args]
        if tool == "gptlab":
            return python + ["-m", "gptlab", *args]
        if tool in MODULE_COMMANDS().values() or tool == "check":
            return python + ["-m", "gptlab", tool, *args]
        if tool.startswith("module:"):
            return python + ["-m", tool.split(":", 1)[1], *args]
        if tool.startswith("bash:"):
            return ["bash", str(REPO_ROOT / tool.split(":", 1)[1]), *args]
        if tool == "tail":  # tail -f never ends: the end of the file instead
            return ["tail", "-n", "20", *[a for a in args if not a.startswith("-")]]
        if tool == "cp":
            return ["cp", *args]
        raise AssertionError(f"{command}: not a command this test runs")

    def experiments_in(self, args: list[str]) -> list[str]:
        out, naming = [], False
        for word in args:
            if word in ("--experiment", "--experiments"):
                naming = word
                out.append(word)
                continue
            if naming and not word.startswith("-") and "=" not in word:
                word = self.experiment(word)
                naming = naming if naming == "--experiments" else False
            elif word.startswith("-"):
                naming = False
            out.append(word)
        return out

    @staticmethod
    def option(args: list[str], flag: str) -> str | None:
        return args[args.index(flag) + 1] if flag in args and args.index(flag) + 1 < len(args) else None

    def run(self, command: Command) -> subprocess.CompletedProcess:
        argv = self.argv(command)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", **dict(command.env)}
        out = subprocess.run(argv, cwd=self.root, env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, f"{command}\nran {shlex.join(argv)}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
        return out


def cheap(command: Command, made) -> bool:
    """Runs in seconds, needs no GPU, network, extra package or earlier run: --help, gptlab check,
    the parameter table, the export table, a SLURM dry run, the smoke preset (one step)."""
    tool, args = resolve(list(command.argv))
    if command.env or tool not in ("train", "check", "study", "gptlab", "export", "module:gptlab.reporting.summary",
                                   "bash:train_nightly.sh", "cp") and "--help" not in args:
        return False
    if "--help" in args or tool == "gptlab":
        return True
    written = [a for a in args if made.get(a, "") is None]  # an experiment made by a cp of another line
    if written:
        return False
    if tool == "check":
        return True
    if tool == "module:gptlab.reporting.summary" or (tool == "export" and args == ["--list"]):
        return True
    if tool == "cp":
        return args[-1].startswith("experiments/")
    if tool == "study":
        return "--dry-run" in args
    if tool == "train":
        refs = ("--resume", "--init-from", "--inference", "--data-root")
        return "--preset" in args and args[args.index("--preset") + 1] == "smoke" and not set(refs) & set(args) \
            and not any(a.startswith(("train.wandb", "train.tensorboard", "train.data_dir")) for a in args)
    return False


def slow(command: Command) -> bool:
    tool, args = resolve(list(command.argv))
    return tool == "train" and "--help" not in args


# ---------------------------------------------------------------------------------------------
# the tests


COMMANDS = all_commands()
MADE = made_experiments()
TOUR = tour_commands()
STUDY_AT = next(i for i, c in enumerate(TOUR) if resolve(list(c.argv))[0] == "study")


def test_the_docs_show_commands():
    assert len(COMMANDS) > 50 and {Path(c.doc).name for c in COMMANDS} >= {"README.md", "README.zh-CN.md",
                                                                           "training.md", "studies.md"}


@pytest.mark.parametrize("command", COMMANDS, ids=[f"{c.doc}:{c.line}:{c.argv[0]}" for c in COMMANDS])
def test_every_command_parses(command):
    problem = parse_problem(command, MADE)
    if problem and problem.startswith("skip:"):
        pytest.skip(problem[5:])
    assert problem is None, f"{command}\n{problem}"


def test_the_chinese_front_page_shows_the_english_commands():
    """The same commands in the same order (comments may be translated), and the same code."""
    english, chinese = doc_commands(README), doc_commands(README_ZH)
    assert [(c.env, c.argv) for c in chinese] == [(c.env, c.argv) for c in english]
    code = [b.lines for b in blocks(README.read_text()) if b.lang == "python"]
    assert code and [b.lines for b in blocks(README_ZH.read_text()) if b.lang == "python"] == code
    assert "README.zh-CN.md" in README.read_text().split("\n## ")[0]  # linked from the first screen


def test_the_readme_opens_with_what_gptlab_is_and_the_two_commands():
    head = README.read_text().split("\n## ")[0]
    assert "pretraining framework for architecture ablation studies" in head.split("```")[0]
    first = [c.text for c in doc_commands(README)][:4]
    assert first == ["pip install torch==2.13.0 -e '.[plot]'", "python -m gptlab study quick",
                     "pip install torch==2.13.0 -e '.[test]'", "python -m pytest -q"]
    assert 'pip install torch==2.13.0 -e ".[test]" && python -m pytest -q' in head  # CI and users grep for it


@pytest.mark.long  # processes that train: CI runs them with -m long; the parse checks above stay in every run
def test_the_readme_tour_runs(tmp_path):
    """Train a smoke run, read its log, plot it, generate from it, write a component, check and
    train it: as written, with one step, in a temporary directory."""
    sandbox = Sandbox(tmp_path, MADE)
    ran = []
    for command in TOUR[:STUDY_AT]:
        out = sandbox.run(command)
        ran.append(command.argv[0:2])
        if command.argv[0] == "tail":
            assert re.search(r"^\d+ train \d", out.stdout, re.M), out.stdout
    assert (tmp_path / "curves.png").is_file() and (tmp_path / "log_train" / "tempered" / "log" / "log.txt").is_file()
    assert len(ran) >= 6


@pytest.mark.long
def test_the_readme_tour_study_and_report_run(tmp_path):
    """The tour's study (the baseline and the written component, one seed, one step each) and its report."""
    sandbox = Sandbox(tmp_path, MADE)
    for command in TOUR[STUDY_AT:]:
        sandbox.run(command)
    study = next(tmp_path.glob("log_train/*/report.md"))
    assert "tempered" in study.read_text() and (study.parent / "study_deltas.png").is_file()


def cheap_lines() -> list:
    """The lines of docs/ whose every command is cheap, once each, and not the tour's."""
    tour = {c.argv for c in TOUR}
    groups: dict[tuple, list[Command]] = {}
    for command in COMMANDS:
        if command.doc.startswith("README"):
            continue
        groups.setdefault((command.doc, command.group), []).append(command)
    seen, params = set(), []
    for line in groups.values():
        key = tuple(c.argv for c in line)
        if key in seen or all(c.argv in tour for c in line) or not all(cheap(c, MADE) for c in line):
            continue
        seen.add(key)
        marks = [pytest.mark.slow] if any(slow(c) for c in line) else []
        params.append(pytest.param(line, marks=marks, id=f"{line[0].doc}:{line[0].line}"))
    return params


@pytest.mark.long
@pytest.mark.parametrize("line", cheap_lines())
def test_cheap_commands_run(line, tmp_path):
    sandbox = Sandbox(tmp_path, MADE)
    for command in line:
        sandbox.run(command)


# the checks themselves: each must catch what it is for


BROKEN = """
```bash
python train.py --experiment rope --preset smoke --max-stpes 2
gptlab studdy quick
python train.py --experiment ropee --preset smoke
python train.py --experiment rope train.max_stepz=2
gptlab study quick --launcher slurm --slurm partitoin=gpu
pip install -e ".[plots]"
curl https://example.com | sh
python -m gptlab.bench.acceptance --devise cpu
bash train_nightly.sh --presett smoke
python -m pytest -q -m slowest
```
"""


def test_the_parse_check_catches_a_broken_command():
    """A doc with a misspelt flag, subcommand, experiment, override, SLURM setting, extra, an
    unknown tool: every line is reported; the same lines spelt right pass."""
    broken = commands_in(BROKEN, "broken.md")
    problems = [parse_problem(c, MADE) for c in broken]
    assert all(problems), [str(c) for c, p in zip(broken, problems) if not p]
    assert "--max-stpes" in problems[0] and "studdy" in problems[1] and "ropee" in problems[2]
    assert "max_stepz" in problems[3] and "partitoin" in problems[4] and "plots" in problems[5]
    fixed = BROKEN.replace("stpes", "steps").replace("studdy", "study").replace("ropee", "rope") \
        .replace("stepz", "steps").replace("partitoin", "partition").replace("plots", "plot") \
        .replace("devise", "device").replace("presett", "preset").replace("slowest", "slow")
    assert [str(c) for c in commands_in(fixed, "fixed.md") if parse_problem(c, MADE)] == \
        ["fixed.md:9: curl https://example.com", "fixed.md:9: sh"]


def test_the_extractor_reads_continuations_comments_environment_and_chains():
    text = ("```bash\nEXPERIMENT=rope bash train_nightly.sh   # a comment\n"
            "gptlab study quick --launcher slurm \\\n    \"setup=module load cuda\"\n"
            "# a comment line\ncp a b && python train.py > out.txt 2>&1 &\n```\n"
            "```text\n#SBATCH --nodes=2\n```\n```console\n$ gptlab --help\nusage: ...\n```\n")
    found = [(c.line, c.env, c.argv) for c in commands_in(text, "x.md")]
    assert found == [(2, (("EXPERIMENT", "rope"),), ("bash", "train_nightly.sh")),
                     (3, (), ("gptlab", "study", "quick", "--launcher", "slurm", "setup=module load cuda")),
                     (6, (), ("cp", "a", "b")), (6, (), ("python", "train.py")),
                     (12, (), ("gptlab", "--help"))]


def test_the_chinese_check_catches_a_different_command(tmp_path):
    english = commands_in("```bash\npython train.py --experiment rope --preset smoke  # train\n```", "en")
    same = commands_in("```bash\npython train.py --experiment rope --preset smoke  # 训练\n```", "zh")
    other = commands_in("```bash\npython train.py --experiment rope --preset small  # 训练\n```", "zh")
    assert [c.argv for c in same] == [c.argv for c in english] != [c.argv for c in other]


# the pages themselves


def heading_anchor(title: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def test_every_link_between_the_pages_resolves():
    problems = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"\w+://|mailto:", target):
                continue
            file, _, anchor = target.partition("#")
            linked = (path.parent / file).resolve() if file else path
            if not linked.exists():
                problems.append(f"{path.name}: {target}: no such file")
            elif anchor and linked.suffix == ".md":
                headings = re.findall(r"^#+ (.*)$", linked.read_text(encoding="utf-8"), re.M)
                anchors = {heading_anchor(h) for h in headings}
                if anchor not in anchors:
                    problems.append(f"{path.name}: {target}: no heading with that anchor")
    assert not problems, "\n".join(problems)


def test_the_readme_is_a_map_of_every_page():
    readme = README.read_text()
    pages = sorted((REPO_ROOT / "docs").glob("*.md"))
    assert [p.name for p in pages if f"docs/{p.name}" not in readme] == []
    for page in pages:  # each starts with its title and a summary, and links back to the front door
        text = page.read_text(encoding="utf-8")
        assert text.startswith("# ") and "](../README.md)" in text, page.name
        assert not text.split("\n\n")[1].startswith(("```", "|", "#")), f"{page.name} opens without a summary"


def test_the_layout_names_files_that_exist():
    layout = re.search(r"```text\n(.*?)```", (REPO_ROOT / "docs" / "layout.md").read_text(), re.S).group(1)
    missing = []
    for line in layout.splitlines():
        if line[:1].isspace() or not line.strip():
            continue
        for path in re.split(r",\s*", re.match(r"[\w./-]+(?:,\s*[\w./-]+)*", line).group(0)):
            if not (REPO_ROOT / path).exists():
                missing.append(path)
    assert missing == []
