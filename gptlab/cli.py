"""`gptlab`: one command for the framework's tools; `gptlab --help` lists them.

Each command is a module with `parser()`, its options (tests/test_cli.py freezes them), and
`main(argv)`, which returns the exit status. This file only dispatches, and imports a
command's module only to run it, so `gptlab --help` is quick.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    module: str  # the module that holds the command's main(argv) and parser()
    summary: str  # its line in `gptlab --help`
    main: str = "main"
    parser: str = "parser"

    def run(self, argv: list[str]) -> int:
        return getattr(importlib.import_module(self.module), self.main)(argv)

    def build_parser(self) -> argparse.ArgumentParser:
        return getattr(importlib.import_module(self.module), self.parser)()


# in the order `gptlab --help` lists them
COMMANDS = {
    "train": Command("gptlab.training.cli", "train an experiment, resume it, or sample from a checkpoint (train.py)"),
    "study": Command("gptlab.study.cli", "a baseline and its variants over seeds, trained fairly, then the report"),
    "status": Command("gptlab.study.status", "every run of a study (local or SLURM) at a glance"),
    "report": Command("gptlab.reporting.report", "compare runs: a table (Markdown, CSV, JSON) and figures"),
    "plot": Command("gptlab.reporting.plots", "training curves of log.txt files, overlaid (plot_training_log.py)"),
    "bench": Command("gptlab.bench.cli", "training and generation speed of experiments, beside a plain GPT-2"),
    "eval-lengths": Command("gptlab.evaluation.lengths", "validation loss at 1x, 2x, 4x, 8x the training length"),
    "export": Command("gptlab.export.cli", "a checkpoint as a Hugging Face transformers model, checked"),
    "prepare": Command("gptlab.data.prepare", "a corpus of your own (.jsonl, .json, .parquet) as training shards"),
    "generate": Command("gptlab.generate", "text from a checkpoint, a run's newest checkpoint, or OpenAI's GPT-2"),
    "check": Command("gptlab.cli", "build and call an experiment's components on a tiny input",
                     main="check", parser="check_parser"),
    "coordcheck": Command("gptlab.evaluation.coordcheck", "the coordinate check across widths (and depths), and the "
                          "learning-rate transfer, under each parametrization"),
}


def usage() -> str:
    width = max(map(len, COMMANDS)) + 2
    lines = [f"  {name:<{width}}{command.summary}" for name, command in COMMANDS.items()]
    return ("usage: gptlab COMMAND [ARGS ...]\n\nThe tools of gptlab, a GPT-2 framework for architecture "
            "ablations.\n\ncommands:\n" + "\n".join(lines) +
            "\n\n`gptlab COMMAND --help` shows a command's own options; `python -m gptlab` is the same command.")


def check_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gptlab check", description="Check an experiment's components: built and "
                                "called as gptlab does, on a tiny input, they must give logits of the right shape, "
                                "be causal, and agree with and without the KV cache.", allow_abbrev=False)
    p.add_argument("experiment", help="a name in experiments/ or a path to a .py file")
    p.add_argument("overrides", nargs="*", metavar="model.FIELD=VALUE")
    return p


def check(argv: list[str]) -> int:
    from gptlab.core.config import ConfigError, parse_overrides, replace_config
    from gptlab.core.experiment import ExperimentError, load_experiment
    from gptlab.models.check import check_experiment, user_components

    args = check_parser().parse_args(argv)
    try:
        exp = load_experiment(args.experiment)
        config = replace_config(exp.model_config, **parse_overrides(args.overrides)["model"])
        problems = check_experiment(exp, config)
    except (ExperimentError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if problems:
        print("error: experiment " + exp.name + " fails the component check:\n  - " + "\n  - ".join(problems),
              file=sys.stderr)
        return 2
    own = ", ".join(cls.__name__ for cls in user_components(exp).values()) or "gptlab's own components only"
    print(f"{exp.name}: ok ({own}): logits of the right shape, causal, cached generation equal to the full pass")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if not argv:
        print(usage(), file=sys.stderr)
        return 2
    if argv[0] not in COMMANDS:
        close = difflib.get_close_matches(argv[0].lower(), COMMANDS, n=1)
        print(f"gptlab: no command {argv[0]!r}" + (f"; did you mean {close[0]}?" if close else "") +
              f"\ncommands: {', '.join(COMMANDS)} (gptlab --help says what each does)", file=sys.stderr)
        return 2
    return COMMANDS[argv[0]].run(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
