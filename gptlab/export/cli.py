"""`gptlab export CKPT OUT_DIR`: a checkpoint as a Hugging Face transformers model directory.

    gptlab export log_train/llama/log/model_19072.pt hf/llama     # a checkpoint
    gptlab export log_train/rope hf/rope --dtype bfloat16         # a run's newest intact checkpoint
    gptlab export --list                                          # which experiment exports as what
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from gptlab.core.config import GPT2_VOCAB
from gptlab.export.families import FAMILIES, family_of
from gptlab.export.huggingface import DTYPES, ExportError, check_summary, export_model


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gptlab export", description=(
        "Write a gptlab checkpoint as a Hugging Face transformers model: config.json, model.safetensors, "
        "generation_config.json, the GPT-2 tokenizer files and a model card, loadable with "
        "AutoModelForCausalLM/AutoTokenizer.from_pretrained(OUT_DIR) without gptlab. The class is the one that "
        "computes the experiment exactly (" + ", ".join(f.hf_class for f in FAMILIES) + "); an experiment no class "
        "computes is refused, naming the component in the way. The export is loaded back and its logits compared "
        f"with gptlab's before OUT_DIR appears; the vocabulary is GPT-2's {GPT2_VOCAB} tokens (the padding rows are "
        "dropped). Needs pip install -e \".[hf]\"."), allow_abbrev=False)
    p.add_argument("checkpoint", nargs="?", type=Path,
                   help="a checkpoint (model_NNNNN.pt), or a run's log directory: its newest intact checkpoint")
    p.add_argument("out_dir", nargs="?", type=Path, help="a new (or empty) directory to write")
    p.add_argument("--dtype", choices=list(DTYPES), default="float32",
                   help="of the weights written (default float32, as trained checkpoints hold them)")
    p.add_argument("--list", action="store_true", help="list the experiments in experiments/ and the class each "
                   "exports as, or what stops it; then exit")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.list:
        if args.checkpoint or args.out_dir:
            p.error("--list lists the experiments and exports nothing: give it alone")
        list_experiments()
        return 0
    if args.checkpoint is None or args.out_dir is None:
        p.error("give a checkpoint (or a run's log directory) and an output directory, or --list")
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # unwinds: the partial export goes
    from gptlab.training.checkpoint import CheckpointError, find_checkpoint, load_checkpoint, model_from_state
    try:
        checkpoint = find_checkpoint(args.checkpoint)
        state = load_checkpoint(checkpoint)
        model = model_from_state(state)
        name = state["experiment"]["name"]
        exported = export_model(model, args.out_dir, args.dtype, {"experiment": name, "step": state.get("step"),
                                                                  "checkpoint": str(checkpoint.resolve())})
    except (CheckpointError, ExportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: cannot write {args.out_dir}: {e}; nothing was written", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"error: interrupted; nothing was written to {args.out_dir}", file=sys.stderr)
        return 130
    out = exported.directory
    print(f"exported {checkpoint} (experiment {name}, step {state.get('step')}) to {out} as "
          f"{exported.family.hf_class}, {args.dtype}")
    print("  checked: loaded back with transformers, " + check_summary(
        exported.max_difference, exported.logit_scale, exported.probe_tokens, exported.rounding_difference, args.dtype))
    print(f"  use it:  AutoModelForCausalLM.from_pretrained({str(out)!r}); AutoTokenizer.from_pretrained({str(out)!r})")
    return 0


def list_experiments() -> None:
    """Each experiment in experiments/ and the transformers class it exports as, or why none."""
    import torch

    from gptlab.core.experiment import available_experiments, load_experiment
    from gptlab.core.config import replace_config
    from gptlab.models.gpt import build_gpt
    print("experiment       exports as")
    for name in available_experiments():
        exp = load_experiment(name)
        with torch.device("meta"):  # the classes and shapes are what matter, not the weights
            model = build_gpt(exp, replace_config(exp.model_config, n_layer=1))
        family, why = family_of(model)
        print(f"{name:16s} {family.hf_class if family else 'refused: ' + '; '.join(why)}")


if __name__ == "__main__":
    sys.exit(main())
