"""A toy ladder of sizes on the CPU: is RoPE worth more compute than it costs, and does that hold as the
model grows?

Baseline and RoPE, two seeds, at three rungs of the smoke preset (d2, d3, d4: 2 to 4 layers, 128 to 256
wide, heads of 64) on the embedded corpus, every experiment at a rung trained on the baseline's tokens there
(0.02 per non-embedding parameter: 16, 52 and 123 steps of 512 tokens). Three rungs cannot check a law of
three free parameters, so its floor L_inf is pinned at 0 (a pure power law of compute).

What it can show: the method end to end on real runs (each rung's table, the baseline's law, RoPE's worth in
the baseline's compute at each rung with its interval, and its trend). What it cannot: its numbers are a
2-to-4-layer model's after at most 63k tokens; they do not predict RoPE at GPT-2's scale, which a ladder
near that scale measures (docs/ladders.md gives one's cost: 9.4 GPU hours for d6 to d12).
"""

EXPERIMENTS = ["baseline", "rope"]
SEEDS = 2
PRESET = "smoke"
# HellaSwag scores near chance at this size: the runs are about the loss; 512 tokens a step, one micro-batch
OVERRIDES = ["train.hellaswag=false", "train.total_batch_size=512"]
LADDER = ["d2", "d3", "d4"]
BUDGET = {"rule": "tokens", "tokens_per_param": 0.02}
LAW = {"l_inf": 0.0}
