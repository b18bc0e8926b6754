"""The README's first study: six variants of the smoke model, two seeds each, on the embedded
corpus; about ten minutes on two CPU cores."""

EXPERIMENTS = ["baseline", "rope", "alibi", "swiglu", "gqa", "mla"]
SEEDS = 2
PRESET = "smoke"
