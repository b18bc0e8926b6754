"""A table of every experiment's model: components, parameters, KV-cache bytes per token.

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
    print(f"{'experiment':<10} {'attention':<14} {'position':<30} {'mlp':<8} {'norm':<10} "
          f"{'params':>13} {'KV B/token':>11}")
    for name in available_experiments():
        try:
            exp = load_experiment(name)
            model = build_model(exp, **overrides)
        except (ExperimentError, ConfigError) as e:  # one broken file does not hide the others
            print(f"{name:<10} cannot be built: {str(e).splitlines()[-1].strip(' -')}")
            continue
        print(f"{name:<10} {exp.attention_class.__name__:<14} {exp.position_encoding_class.__name__:<30} "
              f"{exp.mlp_class.__name__:<8} {exp.norm_class.__name__:<10} {model.num_params():>13,} "
              f"{model.kv_cache_bytes_per_token():>11,}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
