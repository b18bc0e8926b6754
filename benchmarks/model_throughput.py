"""Forward+backward tokens/s of every experiment at one small size, on this machine.

    python benchmarks/model_throughput.py [--device cpu] [--steps 5]
"""

import argparse
import time

import torch

from gptlab import build_model, load_experiment
from gptlab.core.experiment import available_experiments

SIZE = dict(n_layer=6, n_head=6, n_embd=384, block_size=256)
EXTRA = {"gqa": dict(n_kv_head=2)}  # gqa.py's 4 groups do not divide 6 heads: 3 heads per K/V head


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    print(f"device {args.device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"batch {args.batch} x {SIZE['block_size']}, {SIZE}")
    print(f"{'experiment':<10} {'params':>12} {'fwd+bwd tok/s':>14} {'ms/step':>9}")
    for name in available_experiments():
        torch.manual_seed(0)
        model = build_model(load_experiment(name), **SIZE, **EXTRA.get(name, {})).to(args.device)
        idx = torch.randint(0, model.config.vocab_size, (args.batch, SIZE["block_size"] + 1), device=args.device)
        for step in range(args.steps + 1):  # the first step warms up
            if step == 1:
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                start = time.perf_counter()
            _, loss = model(idx[:, :-1], idx[:, 1:])
            loss.backward()
            model.zero_grad(set_to_none=True)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        elapsed = (time.perf_counter() - start) / args.steps
        print(f"{name:<10} {model.num_params():>12,} {args.batch * SIZE['block_size'] / elapsed:>14,.0f} "
              f"{elapsed * 1000:>9.1f}")


if __name__ == "__main__":
    main()
