"""Export to Hugging Face transformers: `gptlab export CKPT OUT_DIR` (gptlab.export.cli).
Which class computes which experiment is gptlab.export.families; writing and checking the
directory is gptlab.export.huggingface."""
