"""`gptlab`: one command for the framework's tools.

    gptlab train ...                 train.py (see gptlab train --help)
    gptlab study ...                 experiments over seeds, trained fairly, then the report
    gptlab report [DIR ...]          compare runs: a table (Markdown, CSV, JSON) and figures
    gptlab eval-lengths CKPT|DIR     validation loss at 1x, 2x, 4x, 8x the training length
    gptlab bench                     training and generation speed of every experiment, beside a plain GPT-2
    gptlab check EXPERIMENT          build and call the experiment's components on a tiny input
    gptlab prepare --input PATH      a corpus of your own (.jsonl, .json, .parquet) as training shards in --out

Each takes --help.
"""

from __future__ import annotations

import argparse
import sys


def check(argv: list[str]) -> int:
    from gptlab.core.config import ConfigError, parse_overrides, replace_config
    from gptlab.core.experiment import ExperimentError, load_experiment
    from gptlab.models.check import check_experiment, user_components

    p = argparse.ArgumentParser(prog="gptlab check", description="Check an experiment's components: built and "
                                "called as gptlab does, on a tiny input, they must give logits of the right shape, "
                                "be causal, and agree with and without the KV cache.")
    p.add_argument("experiment", help="a name in experiments/ or a path to a .py file")
    p.add_argument("overrides", nargs="*", metavar="model.FIELD=VALUE")
    args = p.parse_args(argv)
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


def _command(module: str):
    def run(argv: list[str]) -> int:
        import importlib
        return importlib.import_module(module).main(argv)
    return run


COMMANDS = {"train": _command("gptlab.training.cli"), "study": _command("gptlab.study.cli"),
            "report": _command("gptlab.reporting.report"), "eval-lengths": _command("gptlab.evaluation.lengths"),
            "bench": _command("gptlab.bench.cli"),
            "check": check, "prepare": _command("gptlab.data.prepare")}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] not in COMMANDS and argv[0] not in ("-h", "--help"):
        print(f"gptlab: no command {argv[0]!r}\n", file=sys.stderr)
    if not argv or argv[0] not in COMMANDS:
        print(__doc__.strip(), file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
