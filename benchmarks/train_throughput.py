"""Training throughput of real `train.py` runs: median tokens/s, MFU and peak memory per
experiment, measured on steps after the first few (compilation and warm-up excluded).

    python benchmarks/train_throughput.py [--experiments baseline rope ...] [--steps 20]
        [--preset gpt2] [--nproc 1] [-- extra train.py arguments]

On a GPU the default preset is the full GPT-2 124M recipe (compile, bf16); on a CPU, smoke.
Each run writes into a temporary directory, removed afterwards; the figures are read from
its log.txt (tok_per_sec, mfu and mem_gib records), never from printed text.
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from gptlab.training.logger import read_header, read_log

ROOT = Path(__file__).resolve().parents[1]


def measure(experiment: str, args, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as log_dir:
        launcher = [sys.executable, str(ROOT / "train.py")]
        if args.nproc > 1:
            launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                        f"--nproc_per_node={args.nproc}", str(ROOT / "train.py")]
        command = [*launcher, "--experiment", experiment, "--preset", args.preset, "--log-dir", log_dir,
                   "--max-steps", str(args.steps), f"train.eval_interval={10 * args.steps}",
                   "train.hellaswag=false", "train.num_samples=0", "train.val_tokens=1024", *extra]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            return {"error": result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "failed"}
        log = Path(log_dir) / "log.txt"
        series, params = read_log(log), read_header(log)["params"]

    def steady(key: str) -> list[float]:
        values = series.get(key, [])
        return [v for step, v in values if step >= args.warmup] or [v for _, v in values]

    return {"params": f"{params:,}", "tok/s": statistics.median(steady("tok_per_sec")),
            "mfu": statistics.median(steady("mfu")) if steady("mfu") else None,
            "mem": max(steady("mem_gib"), default=None)}


def main():
    gpu = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--experiments", nargs="+", default=["baseline", "rope", "alibi", "gqa", "mla", "swiglu"])
    parser.add_argument("--preset", default="gpt2" if gpu else "smoke")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5, help="first steps left out of the median")
    parser.add_argument("--nproc", type=int, default=1)
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    device = torch.cuda.get_device_name() if gpu else f"CPU ({torch.get_num_threads()} threads)"
    print(f"{device}, torch {torch.__version__}, preset {args.preset}, {args.nproc} process(es), "
          f"{args.steps} steps (median of steps >= {args.warmup})")
    print(f"{'experiment':<12} {'params':>13} {'tok/s':>12} {'MFU %':>7} {'peak GiB':>9}")
    for name in args.experiments:
        r = measure(name, args, extra)
        if "error" in r:
            print(f"{name:<12} error: {r['error']}")
            continue
        mfu = f"{r['mfu']:.1f}" if r["mfu"] is not None else "-"
        mem = f"{r['mem']:.1f}" if r["mem"] is not None else "-"
        print(f"{name:<12} {r['params']:>13} {r['tok/s']:>12,.0f} {mfu:>7} {mem:>9}", flush=True)


if __name__ == "__main__":
    main()
