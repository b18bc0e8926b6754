"""A ladder's rungs and budgets: the model sizes a study climbs, and how many tokens each size trains.

Rungs. `dN` is depth N, width 64 N, heads of 64 (N heads): d12 is GPT-2 124M's shape, so the recipe's
baseline is a rung of every ladder (OLMo's and Marin's ladders name sizes the same way). A study file may
give explicit shapes instead: {"name": "wide2", "n_layer": 2, "n_embd": 256, "n_head": 4}.

Budgets (Chinchilla, Hoffmann et al. 2022; isoFLOP and data-matched comparisons as in Marin's ablations):
- tokens_per_param: each experiment trains `tokens_per_param` tokens per parameter it has (Chinchilla's 20 is
  the default for real runs); which parameters are counted is `params`: "non_embedding" (Kaplan et al.'s N,
  the default: at small sizes GPT-2's 50k-token embedding would otherwise be most of every count) or "all".
- flops: every experiment at a rung spends the baseline's FLOPs there (the baseline's tokens by the rule
  above, times its FLOPs per token, the project's own count): a variant with more FLOPs per token trains
  fewer tokens (isoFLOP).
- tokens: every experiment at a rung trains the baseline's tokens (data-matched).
A rung's steps are its tokens over the preset's batch; warm-up, evaluation and checkpoint intervals keep the
preset's share of its steps.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, fields

HEAD_DIM = 64  # a dN rung's heads, as GPT-2's
BUDGET_RULES = ("tokens_per_param", "flops", "tokens")
PARAM_COUNTS = ("non_embedding", "all")
LADDER_LR = ("shared", "sweep", "transfer")
MIN_STEPS = 10  # a rung whose budget is fewer steps is refused: too few for a schedule
# what each ladder learning-rate mode means, said in the plan and the report
LADDER_LR_WORDS = {
    "shared": "one shared learning rate at every rung (the preset's): a verdict can partly be the rate suiting "
              "one size better than another",
    "sweep": "a learning-rate sweep at every rung, each experiment at its own best rate there",
    "transfer": "a sweep at the smallest rung only, each experiment's best rate there transferred to the others",
}


class RungError(ValueError):
    """A ladder or budget setting is wrong; the message says which and what to do."""


@dataclass(frozen=True)
class Rung:
    name: str
    n_layer: int
    n_embd: int
    n_head: int

    def fields(self) -> dict:
        return {"n_layer": self.n_layer, "n_embd": self.n_embd, "n_head": self.n_head}


def parse_rungs(spec) -> list[Rung]:
    """"d2,d4,d6" (the command line), or a study file's list of "dN" names and explicit shapes; smallest first."""
    items = [s.strip() for s in spec.split(",") if s.strip()] if isinstance(spec, str) else spec
    if not isinstance(items, (list, tuple)) or not items:
        raise RungError(f"ladder={spec!r}: give the rungs, e.g. d2,d4,d6 (depth N, width 64 N, heads of 64)")
    rungs, problems = [], []
    for item in items:
        if isinstance(item, str):
            found = re.fullmatch(r"d(\d+)", item)
            if not found or int(found.group(1)) < 1:
                problems.append(f"{item!r} is not a rung: dN is depth N, width 64 N (d12 is GPT-2 124M), or give a "
                                f"shape {{'name': ..., 'n_layer': ..., 'n_embd': ..., 'n_head': ...}}")
                continue
            n = int(found.group(1))
            rungs.append(Rung(item, n, HEAD_DIM * n, n))
        elif isinstance(item, dict):
            known = {"name", "n_layer", "n_embd", "n_head"}
            unknown = [k for k in item if k not in known]
            missing = [k for k in known if k not in item]
            if unknown or missing:
                problems.append(f"rung {item!r}: " + "; ".join(
                    [f"{k!r} is not a rung field" for k in unknown] + [f"give {k}" for k in missing]))
                continue
            if not all(isinstance(item[k], int) and item[k] > 0 for k in ("n_layer", "n_embd", "n_head")):
                problems.append(f"rung {item['name']!r}: n_layer, n_embd and n_head must be positive whole numbers")
                continue
            if item["n_embd"] % item["n_head"]:
                problems.append(f"rung {item['name']!r}: n_embd={item['n_embd']} is not divisible by "
                                f"n_head={item['n_head']}")
                continue
            rungs.append(Rung(str(item["name"]), item["n_layer"], item["n_embd"], item["n_head"]))
        else:
            problems.append(f"{item!r} is not a rung (a dN name or a dict of a shape)")
    names = [r.name for r in rungs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        problems.append(f"rung(s) named twice: {', '.join(twice)}")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", "".join(names) or "x"):
        problems.append("a rung's name names its directory: letters, digits, '.', '_' and '-' only")
    if problems:
        raise RungError("ladder: " + "; ".join(problems))
    if len(rungs) < 2:
        raise RungError(f"a ladder of {len(rungs)} rung is one size: give two or more (three or more to fit a law)")
    return sorted(rungs, key=lambda r: (r.n_layer * r.n_embd ** 2, r.n_layer))


@dataclass(frozen=True)
class Budget:
    rule: str = "tokens_per_param"
    tokens_per_param: float = 20.0
    params: str = "non_embedding"

    def __post_init__(self) -> None:
        problems = []
        if self.rule not in BUDGET_RULES:
            close = difflib.get_close_matches(str(self.rule), BUDGET_RULES, n=1)
            problems.append(f"rule={self.rule!r} is not a budget rule; {f'did you mean {close[0]}? ' if close else ''}"
                            f"the rules are {', '.join(BUDGET_RULES)}")
        if not (isinstance(self.tokens_per_param, (int, float)) and not isinstance(self.tokens_per_param, bool)
                and math.isfinite(self.tokens_per_param) and self.tokens_per_param > 0):
            problems.append(f"tokens_per_param={self.tokens_per_param!r} must be a positive number (Chinchilla: 20)")
        if self.params not in PARAM_COUNTS:
            problems.append(f"params={self.params!r} must be one of {', '.join(PARAM_COUNTS)} (which parameters the "
                            f"tokens per parameter count)")
        if problems:
            raise RungError("budget: " + "; ".join(problems))

    @classmethod
    def parse(cls, items) -> Budget:
        """From `KEY=VALUE` words (--budget rule=flops tokens_per_param=20) or a study file's dict."""
        names = [f.name for f in fields(cls)]
        pairs = list(items.items()) if isinstance(items, dict) else []
        if not isinstance(items, dict):
            for item in items or []:
                key, eq, value = str(item).partition("=")
                if not eq:
                    raise RungError(f"--budget {item}: give KEY=VALUE, e.g. --budget rule=flops tokens_per_param=20")
                pairs.append((key, value))
        values = {}
        for key, value in pairs:
            if key not in names:
                close = difflib.get_close_matches(str(key), names, n=1)
                raise RungError(f"budget setting {key!r} is not one; {f'did you mean {close[0]}? ' if close else ''}"
                                f"the settings are {', '.join(names)}")
            if key == "tokens_per_param" and isinstance(value, str):
                try:
                    value = float(value)
                except ValueError:
                    raise RungError(f"budget tokens_per_param={value!r} must be a number, e.g. 20") from None
            values[key] = value
        return cls(**values)

    def describe(self) -> str:
        counted = "non-embedding parameters" if self.params == "non_embedding" else "parameters"
        return {"tokens_per_param": f"{self.tokens_per_param:g} tokens per {counted[:-1]} of each experiment",
                "flops": f"every experiment at a rung spends the baseline's FLOPs there (the baseline: "
                         f"{self.tokens_per_param:g} tokens per {counted[:-1]}; isoFLOP)",
                "tokens": f"every experiment at a rung trains the baseline's tokens ({self.tokens_per_param:g} per "
                          f"{counted[:-1]} of the baseline; data-matched)"}[self.rule]

    def tokens(self, params: int, baseline_tokens: int | None = None, baseline_flops: float | None = None,
               flops_per_token: float | None = None) -> int:
        """An experiment's tokens at a rung: `params` its own count (of the kind `params` names); for the flops and
        tokens rules, the baseline's tokens (and FLOPs, and this experiment's FLOPs per token) there."""
        if self.rule == "tokens_per_param" or baseline_tokens is None:
            return round(self.tokens_per_param * params)
        if self.rule == "tokens":
            return baseline_tokens
        return round(baseline_flops / flops_per_token)


def schedule(tokens: int, total_batch_size: int, preset_train) -> dict:
    """The training fields a budget of `tokens` sets: the steps, and the warm-up, evaluation and validation
    intervals at the preset's share of its steps."""
    steps = max(1, round(tokens / total_batch_size))
    share = steps / preset_train.max_steps
    out = {"max_steps": steps, "warmup_steps": max(1, round(preset_train.warmup_steps * share)),
           "eval_interval": max(1, round(preset_train.eval_interval * share))}
    if preset_train.val_interval:
        out["val_interval"] = max(1, round(preset_train.val_interval * share))
    return out
