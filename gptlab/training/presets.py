"""Named sets of overrides applied on top of an experiment: (model fields, training fields)."""

PRESETS: dict[str, tuple[dict, dict]] = {
    # the GPT-2 124M recipe on FineWeb-Edu 10B: the experiment's own configs unchanged
    "gpt2": ({}, {}),
    # GPT-2 medium (350M): 24 layers, 16 heads, 1024 wide, at GPT-3's learning rate for that size
    # (Brown et al. 2020, table 2.1: 3e-4 at a 0.5M-token batch); the rest of the 124M recipe
    "gpt2-medium": (dict(n_layer=24, n_head=16, n_embd=1024), dict(max_lr=3e-4)),
    # any experiment, tiny, on the embedded corpus: a full run with evaluations, 34 s on 2 CPU cores (AMD EPYC); the
    # validation loss every 5 steps draws a curve (11 points), HellaSwag, samples and checkpoints every 25
    "smoke": (dict(n_layer=2, n_head=8, n_embd=64, block_size=64),
              dict(total_batch_size=1024, micro_batch_size=8, sequence_length=64, max_steps=50,
                   warmup_steps=5, max_lr=3e-3, eval_interval=25, val_interval=5, val_tokens=2048, hellaswag_limit=50,
                   num_samples=2, sample_length=16, data="embedded")),
    # a small model that learns visibly: 13 minutes on 2 CPU cores (AMD EPYC, measured)
    "small": (dict(n_layer=4, n_head=8, n_embd=128, block_size=128),
              dict(total_batch_size=4096, micro_batch_size=16, sequence_length=128, max_steps=300,
                   warmup_steps=30, max_lr=2e-3, eval_interval=100, val_interval=20, val_tokens=16384, hellaswag_limit=200,
                   num_samples=2, sample_length=32, data="embedded")),
}
