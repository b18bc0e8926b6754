"""The README's first study: do RoPE and ALiBi beat learned positions on the smoke model?

Six seeds of three experiments (18 runs of the smoke preset, 50 steps on the embedded corpus,
about ten minutes on two CPU cores). Why these numbers: at this size the seed-to-seed std of the
final val loss is about 0.011, and the two position encodings differ from the baseline by about
0.02. With two comparisons (Holm's strictest alpha 0.025) and 80% power, six seeds a side detect
differences of about 0.023; the old six variants x two seeds detected nothing (two seeds are too
few to test) and still drew a "significant" bar. The report states what the study could resolve,
whatever the outcome.
"""

EXPERIMENTS = ["baseline", "rope", "alibi"]
SEEDS = 6
PRESET = "smoke"
