"""A table of every experiment's model: components, parameters, KV-cache bytes per token.

    python -m gptlab.reporting.summary [model.n_layer=2 model.n_embd=128 ...]
"""

import sys

from gptlab import build_model, load_experiment
from gptlab.core.config import parse_overrides
from gptlab.core.experiment import available_experiments


def main(argv: list[str]) -> None:
    # bare FIELD=VALUE is taken as model.FIELD=VALUE: the table is of models only
    overrides = parse_overrides([item if item.startswith("model.") else f"model.{item}" for item in argv])["model"]
    print(f"{'experiment':<10} {'attention':<14} {'position':<30} {'mlp':<8} {'norm':<10} "
          f"{'params':>13} {'KV B/token':>11}")
    for name in available_experiments():
        exp = load_experiment(name)
        model = build_model(exp, **overrides)
        print(f"{name:<10} {exp.attention_class.__name__:<14} {exp.position_encoding_class.__name__:<30} "
              f"{exp.mlp_class.__name__:<8} {exp.norm_class.__name__:<10} {model.num_params():>13,} "
              f"{model.kv_cache_bytes_per_token():>11,}")


if __name__ == "__main__":
    main(sys.argv[1:])
