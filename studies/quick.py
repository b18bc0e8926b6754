"""The README's first study: does RoPE beat learned positions on the smoke model?

Five seeds of two experiments: 10 runs of the smoke preset (a 2-layer, 64-wide model, 50 steps on
the embedded corpus), each about half a minute on two CPU cores. It checks the pipeline and shows
what a verdict rests on; at this size (3.3M parameters, 97% of them embeddings, 51k tokens, loss 7.1)
it says nothing about RoPE at GPT-2's scale, and the report's header says so.

Why these numbers: at this size the seed-to-seed std of the final val loss is about 0.009 and RoPE
differs from learned positions by about 0.022. With one comparison (alpha 0.05) and 80% power, five
seeds a side detect differences of about 0.018 (Welch's test; four would detect 0.022, three 0.031).
ALiBi is one more experiment: `gptlab study quick --experiments baseline rope alibi` (15 runs; its two
comparisons are then corrected together by Holm's method).
"""

EXPERIMENTS = ["baseline", "rope"]
SEEDS = 5
PRESET = "smoke"
