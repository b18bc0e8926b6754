"""`gptlab bench`: how fast each experiment trains and generates on this machine, side by
side with a plain GPT-2 (nanoGPT's structure, written in gptlab.bench.reference) and
against this device's measured matmul peak.

    gptlab bench [--experiments all | baseline rope ...] [--sizes cpu cpu-blocks] [--compile]
                 [--dtype fp32|bf16] [--steps N] [--json PATH]

For each size: the matmul peak is measured in the dtype in use; every model is built and
warmed up; then all are timed together, one step each in turn (the order rotated every
round), so that noise from elsewhere on the machine hits them alike. Printed and written as
JSON: tokens/s (the fastest of the timed steps, the step least disturbed by the rest of the
machine; the median beside it), the ratio to the plain GPT-2's tokens/s, FLOP/s and its ratio
to the baseline's (a variant that does more arithmetic is not slower for it), each ratio with
the same ratio from the even and from the odd rounds alone (two half-length benchmarks in one:
how far a repeated run would move it), MFU against the measured peak and against the data
sheet's (known GPUs, bf16), the share of the step spent waiting for data, peak memory
(CUDA); then cached and uncached generation tokens/s and KV-cache bytes per token.
FLOPs per token come from the formula of the run records (gptlab.models.flops); the
reference's from the PaLM/nanoGPT closed formula, an independent check of it. Last, a run's
fixed cost: a fresh 1-step smoke run's seconds to its first step and to its end
(gptlab.bench.startup; --fixed-cost only|no).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import torch

from gptlab.bench import generation, peak, startup, steps
from gptlab.bench.reference import PlainGPT2
from gptlab.core.config import ConfigError, divisors, replace_config
from gptlab.core.experiment import ExperimentError, available_experiments, load_experiment
from gptlab.models.gpt import build_gpt
from gptlab.modules.mlp import MLP
from gptlab.modules.moe import MoE
from gptlab.paths import BENCH_ROOT
from gptlab.training.distributed import cpu_name

REFERENCE = "plain GPT-2"
DEFAULT_EXPERIMENTS = ["baseline", "rope", "alibi", "gqa", "mla", "swiglu"]  # one of each family; all: --experiments all
# model shape, sequence length T and micro-batch B of each benchmark size
SIZES = {
    "cpu": dict(n_layer=6, n_head=6, n_embd=384, vocab_size=50304, seq_len=256, batch=8),  # GPT-2's vocabulary
    "cpu-blocks": dict(n_layer=4, n_head=8, n_embd=512, vocab_size=8192, seq_len=256, batch=8),  # blocks dominate
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768, vocab_size=50304, seq_len=1024, batch=16),  # GPT-2 124M
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gptlab bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    p.add_argument("--experiments", nargs="+", metavar="NAME",
                   help=f"names or paths, or 'all' for every experiment in experiments/ (default: "
                        f"{' '.join(DEFAULT_EXPERIMENTS)})")
    p.add_argument("--sizes", nargs="+", choices=sorted(SIZES), help="default: cpu and cpu-blocks on a CPU, gpt2 on a GPU")
    p.add_argument("--batch", type=int, help="micro-batch size B (default: the size's)")
    p.add_argument("--seq-len", type=int, help="sequence length T (default: the size's)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    p.add_argument("--dtype", choices=sorted(DTYPES), help="autocast dtype (default: bf16 on CUDA, fp32 on a CPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile every model, the reference's too")
    p.add_argument("--steps", type=int, help="timed steps per model (default: 12 on a CPU, 20 on a GPU)")
    p.add_argument("--warmup", type=int, help="untimed steps per model first (default: 1, 3 with --compile)")
    p.add_argument("--no-generation", action="store_true", help="skip the generation measurements")
    p.add_argument("--new-tokens", type=int, help="tokens generated per measurement (default: 16 on a CPU, 128 on a GPU)")
    p.add_argument("--fixed-cost", choices=["yes", "no", "only"], default="yes",
                   help="measure a fresh 1-step smoke run's time to its first step and to its end, 3 times (only: "
                        "that alone)")
    p.add_argument("--json", type=Path, help=f"where to write the results (default: a new file in {BENCH_ROOT})")
    return p


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = parser()
    args = p.parse_args(argv)
    for name in ("batch", "seq_len", "steps", "new_tokens"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup is not None and args.warmup < 0:
        p.error("--warmup must be 0 or more")
    return args


def contenders_for(names: list[str], size: dict, notes: list[str]) -> list[steps.Contender]:
    """The reference and the experiments at one size, freshly initialised (seed 0)."""
    shape = {k: size[k] for k in ("n_layer", "n_head", "n_embd", "vocab_size")}
    torch.manual_seed(0)
    reference = PlainGPT2(block_size=size["seq_len"], **shape)
    result = [steps.Contender(REFERENCE, reference, lambda m, x, y: m(x, y), reference.flops_per_token(size["seq_len"]))]
    for name in names:
        exp = load_experiment(name)
        fields = {**shape, "block_size": size["seq_len"]}
        kv = exp.model_config.n_kv_head
        if kv and size["n_head"] % kv:
            fields["n_kv_head"] = max(d for d in divisors(size["n_head"]) if d <= kv)
            notes.append(f"{name}: n_kv_head={kv} does not divide n_head={size['n_head']}; measured with "
                         f"n_kv_head={fields['n_kv_head']}")
        torch.manual_seed(0)
        model = build_gpt(exp, replace_config(exp.model_config, **fields))
        result.append(steps.Contender(name, model, lambda m, x, y: m(x, y).loss, model.flops_per_token(size["seq_len"]),
                                      optimizer_class=exp.optimizer_class))
        if issubclass(exp.mlp_class, MoE):  # the same mixture with experts of 1/top_k the width: the dense one's FLOPs
            config = replace_config(exp.model_config, **fields)
            dense = MLP.default_hidden(exp.mlp_class.expert_class, size["n_embd"])
            torch.manual_seed(0)
            equal = build_gpt(exp, replace_config(config, mlp_hidden=max(1, dense // config.moe_top_k)))
            result.append(steps.Contender(f"{name} (active FLOPs = dense)", equal, lambda m, x, y: m(x, y).loss,
                                          equal.flops_per_token(size["seq_len"]), optimizer_class=exp.optimizer_class))
    return result


def run_size(label: str, size: dict, args, device: torch.device, dtype: torch.dtype, say, progress) -> dict:
    notes: list[str] = []
    contenders = contenders_for(args.experiments, size, notes)
    autocast = steps.autocast_for(device, dtype)
    before = peak.matmul_peak(device, dtype)
    sheet = peak.data_sheet_peak(device, dtype)
    tokens_per_step = size["batch"] * size["seq_len"]
    say(f"\n## size {label}: n_layer {size['n_layer']}, n_head {size['n_head']}, n_embd {size['n_embd']}, "
        f"vocab {size['vocab_size']}, T {size['seq_len']}, B {size['batch']} ({tokens_per_step:,} tokens a step)")
    tokens = steps.random_tokens(size["vocab_size"], 8 * tokens_per_step + 1)
    warmup = args.warmup if args.warmup is not None else (3 if args.compile else 1)
    for c in contenders:
        try:
            resident = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
            steps.prepare(c, device, tokens, size["batch"], size["seq_len"], args.compile)
            steps.warm_up(c, device, autocast, warmup, resident)
        except Exception as e:  # one model that cannot run (out of memory, a compile failure) is reported, not fatal
            c.error = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            if device.type == "cuda":
                torch.cuda.empty_cache()
        if c.error:
            say(f"{c.name} cannot run: {c.error}")
        progress(f"warmed up {c.name}")
    steps.run_interleaved(contenders, device, autocast, args.steps,
                          on_round=lambda r: progress(f"round {r + 1} of {args.steps} timed"))
    # the peak is measured before the models and again after them, and the higher taken: a
    # machine busy elsewhere during one measurement must not make MFU look better than it is
    after = peak.matmul_peak(device, dtype)
    measured = {**max(before, after, key=lambda m: m["flops"]), "before": before["flops"], "after": after["flops"]}
    say(f"matmul peak, measured: {flops_text(measured['flops'])} ({measured['dtype']}, {measured['n']}^3; "
        f"{flops_text(before['flops'])} before the steps, {flops_text(after['flops'])} after)"
        + (f"; {sheet['source']}: {flops_text(sheet['flops'])}" if sheet else "; no data-sheet peak for this device"))
    if dtype != torch.float32:
        fp32 = peak.matmul_peak(device, torch.float32, seconds=0.3)
        if fp32["flops"] > measured["flops"]:
            notes.append(f"{measured['dtype']} matrix multiplies run at {flops_text(measured['flops'])} here against "
                         f"{flops_text(fp32['flops'])} in float32 (no native {measured['dtype']} instructions): "
                         f"autocast slows this device down; use --dtype fp32")
    rows = [c.result(tokens_per_step, measured, sheet) for c in contenders]
    if not args.no_generation:
        for c, row in zip(contenders, rows):
            if c.error is None and c.name != REFERENCE:
                row["generation"] = generation.measure_generation(c.model, device, autocast, min(32, size["seq_len"] // 2),
                                                                  min(args.new_tokens, size["seq_len"] // 2), dtype)
    progress("")
    say(format_training(rows))
    if not args.no_generation:
        say(format_generation(rows))
    for note in notes:
        say(f"note: {note}")
    return {"size": label, **size, "tokens_per_step": tokens_per_step, "matmul_peak": measured, "data_sheet_peak": sheet,
            "warmup_steps": warmup, "timed_steps": args.steps, "notes": notes, "rows": rows}


def flops_text(flops: float) -> str:
    return f"{flops / 1e12:,.1f} TFLOP/s" if flops >= 1e12 else f"{flops / 1e9:,.1f} GFLOP/s"


def ratio(value: float | None, base: float | None) -> str:
    return f"{value / base:.2f}x" if value and base else "-"


def ratio_with_halves(row: dict, base: dict | None, key: str = "tokens_per_second", per_token: bool = False) -> str:
    """row's fastest over base's, with the same ratio from the even rounds and from the odd rounds alone; per_token:
    of FLOP/s (tokens/s times each one's FLOPs per token)."""
    if not base:
        return "-"
    scale = row["flops_per_token"] / base["flops_per_token"] if per_token else 1.0
    halves = [a / b * scale for a, b in zip(row[f"{key}_halves"], base[f"{key}_halves"])]
    return f"{row[key] / base[key] * scale:.2f}x ({min(halves):.2f}-{max(halves):.2f})"


def format_training(rows: list[dict]) -> str:
    ref = next((r for r in rows if r["name"] == REFERENCE and "error" not in r), None)
    base = next((r for r in rows if r["name"] == "baseline" and "error" not in r), None)
    steps_timed = next((r["steps"] for r in rows if "error" not in r), 0)
    head = ("| model | params | FLOPs/token | tok/s | median | vs plain GPT-2 | FLOP/s | FLOP/s vs baseline | "
            "MFU (measured peak) | MFU (data sheet) | data wait | peak memory |")
    lines = [f"training steps (forward, backward, clip, the experiment's optimizer: AdamW unless named; FLOPs/token "
             f"include an optimizer's own matmuls). tok/s and FLOP/s: the fastest of {steps_timed} interleaved steps; "
             f"a ratio's (range): the same ratio from the even and from the odd rounds alone, what a repeated run "
             f"would move it by:", head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['name']} | error: {r['error']} |" + " |" * 10)
            continue
        sheet = f"{100 * r['mfu_data_sheet']:.1f}%" if r["mfu_data_sheet"] is not None else "-"
        memory = f"{r['peak_memory_bytes'] / 2 ** 30:.2f} GiB" if r["peak_memory_bytes"] is not None else "-"
        name = r["name"] + (f" ({r['optimizer']})" if r.get("optimizer") not in (None, "AdamW") else "")
        lines.append(f"| {name} | {r['params'] / 1e6:.2f}M | {r['flops_per_token'] / 1e6:.1f}M | "
                     f"{r['tokens_per_second']:,.0f} | {r['tokens_per_second_median']:,.0f} | "
                     f"{ratio_with_halves(r, ref)} | {flops_text(r['flops_per_second'])} | "
                     f"{ratio_with_halves(r, base, per_token=True)} | "
                     f"{100 * r['mfu_measured_peak']:.1f}% | {sheet} | {100 * r['data_wait_share']:.1f}% | {memory} |")
    return "\n".join(lines)


def format_generation(rows: list[dict]) -> str:
    measured = [r for r in rows if "generation" in r]
    if not measured:
        return ""
    base = next((r["generation"] for r in measured if r["name"] == "baseline"), None)
    g0 = measured[0]["generation"]
    lines = [f"\ngeneration (greedy, batch 1, {g0['prompt_tokens']}-token prompt, {g0['new_tokens']} new tokens):",
             f"| model | cached tok/s | uncached tok/s | cache speed-up | KV bytes/token ({g0['kv_dtype']}) | "
             f"KV vs baseline |",
             "|---|---|---|---|---|---|"]
    for r in measured:
        g = r["generation"]
        lines.append(f"| {r['name']} | {g['cached_tokens_per_second']:,.0f} | {g['uncached_tokens_per_second']:,.0f} | "
                     f"{g['cached_tokens_per_second'] / g['uncached_tokens_per_second']:.2f}x | "
                     f"{g['kv_bytes_per_token']:,} | "
                     f"{ratio(g['kv_bytes_per_token'], base and base['kv_bytes_per_token'])} |")
    return "\n".join(lines)


def new_json_path() -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path, n = BENCH_ROOT / f"bench-{stamp}.json", 1
    while path.exists():
        n += 1
        path = BENCH_ROOT / f"bench-{stamp}-{n}.json"
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"--device {args.device}: no CUDA device is available here; use --device cpu")
        args.experiments = (available_experiments() if args.experiments == ["all"]
                            else args.experiments or DEFAULT_EXPERIMENTS)
        for name in args.experiments:
            load_experiment(name)  # a misspelt name stops here, before anything is measured
        sizes = args.sizes or (["gpt2"] if device.type == "cuda" else ["cpu", "cpu-blocks"])
        dtype = DTYPES[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
        args.steps = args.steps or (20 if device.type == "cuda" else 12)
        args.new_tokens = args.new_tokens or (128 if device.type == "cuda" else 16)
        json_path = args.json or new_json_path()
        if json_path.exists():
            raise ConfigError(f"--json {json_path} exists; give another path (results are never written over a file)")
        json_path.parent.mkdir(parents=True, exist_ok=True)
    except (ExperimentError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"{cpu_name()}, {torch.get_num_threads()} threads")
    say = lambda text="": print(text, flush=True)  # noqa: E731
    interactive = sys.stdout.isatty()

    def progress(text: str) -> None:  # a line that overwrites itself, on a terminal only
        if interactive:
            print(f"\r  {text:<60}", end="" if text else "\r", flush=True)
    say(f"# gptlab bench: {name}, torch {torch.__version__}, {str(dtype).removeprefix('torch.')}"
        f"{' autocast' if dtype != torch.float32 else ''}, {'compiled' if args.compile else 'eager'}, "
        f"{args.steps} timed steps per model, interleaved; each figure the fastest step")
    results = []
    for label in sizes if args.fixed_cost != "only" else []:
        size = {**SIZES[label], **{k: v for k, v in (("batch", args.batch), ("seq_len", args.seq_len)) if v}}
        results.append(run_size(label, size, args, device, dtype, say, progress))
    report = {"device": name, "torch": torch.__version__, "dtype": str(dtype).removeprefix("torch."),
              "compile": args.compile, "time": dt.datetime.now().isoformat(timespec="seconds"), "sizes": results}
    if args.fixed_cost != "no":
        progress("fixed cost: 3 fresh 1-step smoke runs")
        report["fixed_cost"] = startup.measure("baseline", 3, [] if device.type == "cuda" else ["--device", "cpu"])
        progress("")
        say("\n" + startup.format_startup(report["fixed_cost"]))
    json_path.write_text(json.dumps(report, indent=1) + "\n")
    say(f"\nwritten: {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
