"""What a comparison can show at its scale, said where the reader looks (the report's header, the
figures' titles): a verdict holds for the model and budget that were trained, and a toy study checks
the pipeline, not an architecture at GPT-2's scale. And what a study that answers that costs: the
GPT-2 124M recipe's FLOPs, counted by the project's own FLOPs per token, in GPU hours at a stated MFU.
"""

from __future__ import annotations

import functools

# a model below either bound checks the pipeline: its loss is far from language modelling at GPT-2's scale
TOY_NON_EMBEDDING_PARAMS = 10_000_000
TOY_TOKENS = 100_000_000
STATED_MFU = 0.40  # of a GPU's dense bf16 peak: a well-tuned GPT-2 124M run on an H100 (nanoGPT-class code)
STATED_GPU = "H100"


@functools.lru_cache(maxsize=1)
def recipe_cost() -> dict:
    """The GPT-2 124M recipe's one run: its FLOPs per token (the project's count), tokens, FLOPs and GPU hours
    at STATED_MFU of STATED_GPU's data-sheet peak."""
    import torch

    from gptlab.core.config import GPTConfig, TrainingConfig
    from gptlab.core.experiment import load_experiment
    from gptlab.models.gpt import build_gpt
    from gptlab.training.distributed import PEAK_FLOPS

    train = TrainingConfig()
    with torch.device("meta"):
        model = build_gpt(load_experiment("baseline"), GPTConfig())
    per_token = model.flops_per_token(train.sequence_length)
    tokens = train.max_steps * train.total_batch_size
    flops = per_token * tokens
    return {"params": model.num_params(), "flops_per_token": per_token, "tokens": tokens, "flops": flops,
            "gpu": STATED_GPU, "mfu": STATED_MFU,
            "gpu_hours": flops / (STATED_MFU * PEAK_FLOPS[STATED_GPU]) / 3600}


def scale_notes(table, short: bool = False) -> list[str]:
    """One or two sentences on what the table's comparison can show at its scale (none for the GPT-2
    124M recipe itself, whose published references the report prints); `short`: a figure's version."""
    if table.recipe:
        return []
    base = table.rows[0].runs[0] if table.rows and table.rows[0].runs else None
    if base is None:
        return []
    params, non_embedding = base.get("params"), base.get("params_non_embedding")
    model, train = base.get("model_config") or {}, base.get("training_config") or {}
    tokens = (train.get("max_steps") or 0) * (train.get("total_batch_size") or 0)
    if not isinstance(params, int) or not isinstance(non_embedding, int) or not tokens:
        return []
    losses = table.rows[0].values("val_loss")
    loss = f" to a val loss of {sum(losses) / len(losses):.2f}" if losses else ""
    share = 1 - non_embedding / params if params else 0
    size = (f"a {model.get('n_layer')}-layer, {model.get('n_embd')}-wide model of {_count(params)} parameters "
            f"({share:.0%} of them embeddings), trained on {_count(tokens)} tokens{loss}")
    toy_size = toy(non_embedding, tokens)
    if short:
        return [f"Scale: {size}" + (": a check of the pipeline, not a verdict at GPT-2 124M's scale (the report says "
                                    "what one costs)" if toy_size else "")]
    if not toy_size:
        return [f"Scale: the baseline is {size}. The verdicts hold for this model at this budget; whether they hold "
                f"as the model grows is what a ladder of sizes answers (docs/ladders.md)."]
    cost = recipe_cost()
    return [f"Scale: the baseline is {size}. At this size a study checks the pipeline and its statistics; its verdicts "
            f"say nothing about these variants at GPT-2 124M's scale ({_count(cost['params'])} parameters, "
            f"{_count(cost['tokens'])} tokens, val loss about 3.3). A study that answers that trains the gpt2 preset: "
            f"{cost['gpu_hours']:.1f} GPU hours a run at {cost['mfu']:.0%} MFU on an {cost['gpu']} "
            f"({cost['flops']:.2g} FLOPs), times experiments x seeds; or a ladder of sizes fitted to a scaling law "
            f"(docs/ladders.md)."]


def toy(non_embedding: int, tokens: int) -> bool:
    """A model and budget this small check the pipeline; they say nothing of GPT-2's scale."""
    return non_embedding < TOY_NON_EMBEDDING_PARAMS or tokens < TOY_TOKENS


def _count(n: float) -> str:
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.3g}{suffix}"
    return f"{n:g}"
