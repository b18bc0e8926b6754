"""The GPU path, proven in one command: every fast path a user takes on day one, checked against
the plain path, and every experiment's speed beside a plain GPT-2.

    python -m gptlab.bench.acceptance                 # on a CUDA machine: the whole check, < 8 minutes on one H100
    python -m gptlab.bench.acceptance --device cpu    # the same checks at a tiny size (CI's long tier runs it)

Checks (each an equality; any failure makes the exit status 1 and is named):
- compiled + bf16 training tracks fp32 eager: every experiment (its own optimizer) trains STEPS steps
  both ways from the same weights on the same batches, at GPT-2 124M's width, heads, context and
  vocabulary (two layers, to keep compilation short); the losses agree within LOSS_TOLERANCE;
- FlexAttention ALiBi (its score_mod and a causal block mask, compiled) equals SDPA with the explicit
  bias at 1024 tokens, forward and gradients;
- cached generation equals uncached for every experiment (greedy tokens, and logits to float32's
  precision); for MLA that is its latent decoding (absorbed projections) against full attention.
Reported (not failures): torch.compile's graph breaks per experiment (zero is the goal); then
`gptlab bench --compile --dtype bf16` at GPT-2 124M's full size: tokens/s, MFU against the measured
bf16 matmul peak and the data sheet's, peak memory, beside the plain GPT-2 in the same run; the
baseline's MFU against the 50% goal and each variant's against 90% of the baseline's.
A table is printed and everything is written as JSON (--json).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as dt
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch._dynamo

from gptlab.core.config import TrainingConfig, replace_config
from gptlab.core.experiment import ExperimentError, available_experiments, load_experiment
from gptlab.models.gpt import build_gpt
from gptlab.optim import optimizer_class
from gptlab.paths import BENCH_ROOT
from gptlab.training.schedule import set_learning_rates
from gptlab.training.trainer import clip_gradients

# where the checks run: GPT-2 124M's width, heads, context and vocabulary on CUDA (two layers);
# tiny on a CPU, so that CI can run every check between GPU loans
CHECK_SIZES = {"cuda": dict(n_layer=2, n_head=12, n_embd=768, vocab_size=50304, block_size=1024, batch=8),
               "cpu": dict(n_layer=2, n_head=4, n_embd=64, vocab_size=512, block_size=64, batch=4)}
STEPS = 20
# bf16 keeps 8 significant bits: every matmul input is rounded by up to 2^-9 of itself, so logits of
# size |z| move by about |z| 2^-9 sqrt(depth) and the cross-entropy at init (ln V ~ 10.8 at GPT-2's
# vocabulary) by a few hundredths; 20 optimizer steps on the same batches then move both runs alike.
# Measured at the CPU size: at most 0.0022 (moe, whose routing can flip), 0.0001 to 0.0007 elsewhere.
# A wrong kernel, a lost term or a mask that leaks moves a loss by tenths at once: 0.1 tells them apart
LOSS_TOLERANCE = 0.1
GENERATION_TOKENS = 16
GOAL_MFU, GOAL_VARIANT = 0.50, 0.90


def batches(vocab: int, batch: int, seq_len: int, steps: int, device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, vocab, (steps, batch, seq_len + 1), generator=g)
    return [(d[:, :-1].to(device), d[:, 1:].to(device)) for d in data]


def train_losses(model, exp, data, device, compiled: bool, dtype) -> list[float]:
    """Losses of len(data) steps of the trainer's step (forward, backward, clip, the experiment's
    optimizer with the schedule)."""
    train = TrainingConfig(max_lr=1e-3, warmup_steps=2, max_steps=len(data))
    optimizer = optimizer_class(exp.optimizer_class)(model, train, device.type)
    runner = torch.compile(model) if compiled else model
    autocast = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
    losses = []
    model.train()
    for step, (x, y) in enumerate(data):
        with autocast:
            loss = runner(x, y).loss
        loss.backward()
        clip_gradients(model, optimizer, train.grad_clip)
        set_learning_rates(optimizer, step, train)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def graph_breaks(model, x, y, device, dtype) -> tuple[int, list[str]]:
    """torch.compile's graph breaks in the training forward (torch._dynamo.explain), and why."""
    torch._dynamo.reset()
    autocast = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
    model.train()
    with autocast:
        explained = torch._dynamo.explain(model)(x, y)
    return explained.graph_break_count, sorted({str(b.reason).splitlines()[0][:120] for b in explained.break_reasons})


@torch.no_grad()
def generation_equal(model, device, vocab: int, prompt_len: int) -> dict:
    """Greedy generation with the KV cache against recomputing the whole sequence for every token,
    in float32: the same tokens, and each step's logits to float32's precision."""
    model = copy.deepcopy(model).float().eval()
    prompt = torch.randint(0, vocab, (2, prompt_len), generator=torch.Generator().manual_seed(1)).to(device)
    cached = model.generate(prompt, GENERATION_TOKENS, temperature=0, n_vocab=vocab)
    full = model(cached[:, :-1]).logits[:, prompt_len - 1:, :vocab]  # what each new token was drawn from
    caches, idx, worst = model.new_caches(), prompt, 0.0
    logits = model(idx, caches=caches).logits[:, -1:, :vocab]
    for t in range(GENERATION_TOKENS):
        worst = max(worst, (logits[:, 0] - full[:, t]).abs().max().item())
        idx = cached[:, prompt_len + t:prompt_len + t + 1]
        logits = model(idx, caches=caches).logits[:, -1:, :vocab]
    tokens_equal = torch.equal(cached[:, prompt_len:], full.argmax(-1))
    scale = full.abs().max().item()
    return {"tokens_equal": tokens_equal, "max_logit_difference": worst, "largest_logit": scale,
            "ok": tokens_equal and worst <= 1e-4 * max(1.0, scale)}


def flex_alibi_check(device, seq_len: int = 1024, heads: int = 12, head_dim: int = 64) -> dict:
    """FlexAttention with ALiBi's score_mod (compiled) against SDPA with the explicit bias, float32,
    forward and gradients of q, k, v (forward only on a CPU, where FlexAttention has no backward)."""
    from gptlab.core.config import GPTConfig
    from gptlab.modules.attention import flex_causal_attention
    from gptlab.modules.position import ALiBi
    alibi = ALiBi(GPTConfig(n_head=heads, n_embd=heads * head_dim, block_size=seq_len), head_dim).to(device)
    g = torch.Generator().manual_seed(2)
    grads = device.type == "cuda"
    q, k, v = (torch.randn(1, heads, seq_len, head_dim, generator=g).to(device).requires_grad_(grads) for _ in range(3))
    pos = torch.arange(seq_len, device=device)
    out = torch.compile(flex_causal_attention)(q, k, v, alibi.score_mod())
    causal = torch.ones(seq_len, seq_len, dtype=torch.bool, device=device).tril()
    mask = alibi.score_bias(pos, pos).masked_fill(~causal, float("-inf"))
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    forward = (out - ref).abs().max().item()
    backward = None
    if grads:
        grad = torch.randn_like(out)
        got, expected = torch.autograd.grad(out, (q, k, v), grad), torch.autograd.grad(ref, (q, k, v), grad)
        backward = max((a - b).abs().max().item() for a, b in zip(got, expected))
    return {"tokens": seq_len, "forward_max_difference": forward, "gradient_max_difference": backward,
            "ok": forward <= 1e-4 and (backward is None or backward <= 1e-3)}


def check_experiment(name: str, device, size: dict, dtype, steps: int) -> dict:
    exp = load_experiment(name)
    fields = {k: size[k] for k in ("n_layer", "n_head", "n_embd", "vocab_size", "block_size")}
    if exp.model_config.n_kv_head and size["n_head"] % exp.model_config.n_kv_head:
        fields["n_kv_head"] = 2 if size["n_head"] % 2 == 0 else 1
    torch.manual_seed(0)
    model = build_gpt(exp, replace_config(exp.model_config, **fields)).to(device)
    data = batches(size["vocab_size"], size["batch"], size["block_size"], steps, device)
    result = {"experiment": exp.name, "source": name}
    started = time.perf_counter()
    try:
        breaks, reasons = graph_breaks(model, *data[0], device, dtype)
        result.update(graph_breaks=breaks, graph_break_reasons=reasons)
        eager = train_losses(copy.deepcopy(model).float(), exp, data, device, compiled=False, dtype=torch.float32)
        torch._dynamo.reset()
        fast = train_losses(copy.deepcopy(model), exp, data, device, compiled=True, dtype=dtype)
        worst = max(abs(a - b) for a, b in zip(eager, fast))
        result.update(losses_fp32_eager=eager, losses_compiled=fast, loss_max_difference=worst,
                      loss_ok=all(map(math.isfinite, fast)) and worst <= LOSS_TOLERANCE)
        result["generation"] = generation_equal(model, device, size["vocab_size"], min(16, size["block_size"] // 4))
    except Exception as e:  # noqa: BLE001 - one experiment that cannot run is a failure named in the table
        result["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
    result["seconds"] = time.perf_counter() - started
    result["ok"] = "error" not in result and result.get("loss_ok", False) and result["generation"]["ok"]
    return result


def throughput(names: list[str], device, dtype, steps: int, say) -> dict | None:
    """gptlab bench's interleaved training steps at GPT-2 124M's full size (compiled, bf16 on CUDA), every
    experiment beside the plain GPT-2."""
    from gptlab.bench import cli as bench
    size = dict(bench.SIZES["gpt2" if device.type == "cuda" else "cpu-blocks"])
    if device.type != "cuda":
        size.update(n_layer=2, n_embd=128, n_head=4, vocab_size=512, seq_len=64, batch=4)
    args = argparse.Namespace(experiments=names, warmup=3, compile=True, steps=steps, no_generation=True,
                              new_tokens=16)
    return bench.run_size("gpt2" if device.type == "cuda" else "cpu-tiny", size, args, device, dtype, say,
                          lambda text: None)


def format_table(results: list[dict], speed: dict | None) -> str:
    rows = {r["name"]: r for r in (speed or {}).get("rows", [])}
    base = rows.get("baseline", {})
    head = ["experiment", "compiled bf16 vs fp32 eager: max Δ loss", "graph breaks",
            "cached = uncached: tokens; max Δ logit", "tok/s", "MFU: measured peak / data sheet", "MFU vs baseline",
            "peak memory"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['experiment']} | FAILED: {r['error']} |" + " |" * (len(head) - 2))
            continue
        s, gen = rows.get(r["source"], {}), r["generation"]
        mfu, sheet, memory = s.get("mfu_measured_peak"), s.get("mfu_data_sheet"), s.get("peak_memory_bytes")
        vs = mfu / base["mfu_measured_peak"] if mfu and base.get("mfu_measured_peak") else None
        cells = [r["experiment"], f"{r['loss_max_difference']:.4f} {'ok' if r['loss_ok'] else 'FAILED'}",
                 str(r["graph_breaks"]),
                 f"{'equal' if gen['tokens_equal'] else 'DIFFER'}; {gen['max_logit_difference']:.1e} "
                 f"{'ok' if gen['ok'] else 'FAILED'}",
                 f"{s['tokens_per_second']:,.0f}" if s else "-",
                 (f"{100 * mfu:.1f}% / " + (f"{100 * sheet:.1f}%" if sheet else "-")) if mfu else "-",
                 f"{vs:.2f}x{'' if vs >= GOAL_VARIANT else ' (below 0.90)'}" if vs is not None else "-",
                 f"{memory / 2**30:.2f} GiB" if memory else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    reference = rows.get("plain GPT-2")
    if reference and "error" not in reference:
        sheet = reference.get("mfu_data_sheet")
        lines.append(f"| plain GPT-2 (reference) | - | - | - | {reference['tokens_per_second']:,.0f} | "
                     f"{100 * reference['mfu_measured_peak']:.1f}% / {f'{100 * sheet:.1f}%' if sheet else '-'} | - | - |")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gptlab.bench.acceptance", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    p.add_argument("--device", help="cuda (default where there is one) or cpu (the same checks, tiny)")
    p.add_argument("--experiments", nargs="+", metavar="NAME", help="default: every experiment in experiments/")
    p.add_argument("--steps", type=int, default=STEPS, help=f"training steps of each comparison (default {STEPS})")
    p.add_argument("--no-speed", action="store_true", help="the equality checks only")
    p.add_argument("--json", type=Path, help=f"where the results go (default: a new file in {BENCH_ROOT})")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"error: --device {args.device}: no CUDA device here; --device cpu runs the checks at a tiny size",
              file=sys.stderr)
        return 2
    try:
        names = args.experiments or available_experiments()
        for name in names:
            load_experiment(name)
    except ExperimentError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    json_path = args.json or BENCH_ROOT / f"acceptance-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    dtype = torch.bfloat16
    size = CHECK_SIZES[device.type]
    label = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    say = lambda text="": print(text, flush=True)  # noqa: E731
    say(f"# gptlab acceptance: {label}, torch {torch.__version__}; checks at n_layer {size['n_layer']}, "
        f"n_embd {size['n_embd']}, {size['n_head']} heads, T {size['block_size']}, vocab {size['vocab_size']}, "
        f"B {size['batch']}; {args.steps} steps each way")
    started = time.perf_counter()
    flex = flex_alibi_check(device, seq_len=1024 if device.type == "cuda" else 256,
                            heads=12 if device.type == "cuda" else 4)
    grads = (f"gradients {flex['gradient_max_difference']:.1e}" if flex["gradient_max_difference"] is not None
             else "no gradients (FlexAttention has no backward on a CPU)")
    say(f"FlexAttention ALiBi vs SDPA with the bias, {flex['tokens']} tokens: forward "
        f"{flex['forward_max_difference']:.1e}, {grads}: {'ok' if flex['ok'] else 'FAILED'}")
    results = []
    for name in names:
        result = check_experiment(name, device, size, dtype, args.steps)
        results.append(result)
        say(f"  {name}: {'ok' if result['ok'] else 'FAILED'} ({result['seconds']:.0f}s)")
    checks_seconds = time.perf_counter() - started
    speed = None if args.no_speed else throughput(names, device, dtype, 20 if device.type == "cuda" else 3, say)
    say("\n" + format_table(results, speed))
    base = next((r for r in (speed or {}).get("rows", []) if r["name"] == "baseline"), None)
    if base and base.get("mfu_data_sheet"):
        say(f"\nbaseline MFU {100 * base['mfu_data_sheet']:.1f}% of the data sheet's bf16 peak "
            f"({100 * base['mfu_measured_peak']:.1f}% of the measured one): goal {100 * GOAL_MFU:.0f}%, "
            f"{'met' if base['mfu_data_sheet'] >= GOAL_MFU else 'not met'}")
    failures = [f"{r['experiment']}: " + (r.get("error") or ("losses" if not r.get("loss_ok") else "generation"))
                for r in results if not r["ok"]] + ([] if flex["ok"] else ["FlexAttention ALiBi"])
    report = {"device": label, "torch": torch.__version__, "time": dt.datetime.now().isoformat(timespec="seconds"),
              "check_size": size, "steps": args.steps, "loss_tolerance": LOSS_TOLERANCE, "flex_alibi": flex,
              "experiments": results, "speed": speed, "checks_seconds": checks_seconds,
              "seconds": time.perf_counter() - started, "failures": failures}
    json_path.write_text(json.dumps(report, indent=1, default=str) + "\n")
    say(f"\n{len(results)} experiments checked in {report['seconds']:.0f}s; written: {json_path}")
    if failures:
        say("FAILED: " + "; ".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
