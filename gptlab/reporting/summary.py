"""A table of every experiment's model: components, parameters, KV-cache bytes per token (in
bfloat16, as the report counts them).

    python -m gptlab.reporting.summary [model.FIELD=VALUE ...]    e.g. model.n_layer=2 model.n_embd=128
"""

import sys

from gptlab import build_model, load_experiment
from gptlab.core.config import ConfigError, parse_overrides
from gptlab.core.experiment import ExperimentError, available_experiments


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        return 0
    try:  # bare FIELD=VALUE is taken as model.FIELD=VALUE: the table is of models only
        overrides = parse_overrides([a if a.startswith("model.") else f"model.{a}" for a in argv])["model"]
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = [("experiment", "attention", "position", "mlp", "norm", "params", "KV bytes/token (bf16)")]
    for name in available_experiments():
        try:
            exp = load_experiment(name)
            model = build_model(exp, **overrides)
        except (ExperimentError, ConfigError) as e:  # one broken file does not hide the others
            rows.append((name, f"cannot be built: {str(e).splitlines()[-1].strip(' -')}"))
            continue
        rows.append((name, exp.attention_class.__name__, exp.position_encoding_class.__name__, exp.mlp_class.__name__,
                     exp.norm_class.__name__, f"{model.num_params():,}", f"{model.kv_cache_bytes_per_token():,}"))
    widths = [max(len(r[i]) for r in rows if len(r) == 7) for i in range(7)]
    for r in rows:  # text left, numbers right, each column as wide as its widest cell
        if len(r) < 7:
            print(f"{r[0]:<{widths[0]}} {r[1]}")
            continue
        print(" ".join(f"{cell:<{w}}" if i < 5 else f"{cell:>{w}}" for i, (cell, w) in enumerate(zip(r, widths))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
