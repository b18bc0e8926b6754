"""The coordinate check (Yang et al. 2022, "Tensor Programs V", fig. 5; the `mup` package's coord_check and
nanoGPT-mup's): the size of a model's activations after each of its first training steps, across widths. Under
muP the size of every quantity stays the same as the width grows; under the standard parametrization some grow
(the logits and the attention outputs first), which is why a rate tuned small does not hold large. Across depths
(Dey et al. 2025, CompleteP, its depth-wise coordinate check): the residual stream after the last block and how far
training moved it; under CompleteP flat as blocks are added, under the standard parametrization growing.

    gptlab coordcheck EXPERIMENT [--parametrization standard mup] [--widths 48,96,192,384] [--steps 8]
    gptlab coordcheck EXPERIMENT --depths 2,4,8,16       # and across depths, standard and CompleteP

Each width is the experiment's own model, 2 layers, heads of `head_size` (n_head = width / head_size, so a
component's width rule applies as on a ladder), a 512-token vocabulary and one fixed batch of random tokens,
trained by its AdamW at a fixed rate; muP's base width is the smallest. Measured with forward hooks: the mean
absolute value of the token embedding's output, of every block's attention and MLP outputs (before CompleteP's
branch multiplier; averaged over the blocks) and of the logits, at the initialisation and after each step.
The verdict reads each quantity's slope of log size against log width after the last step: below FLAT in
magnitude is flat. The depth check (measure_depth) holds the width at 48 and grows the depth, CompleteP's base
depth the smallest, and reads the same slope against log depth.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path

import numpy as np
import torch

QUANTITIES = ("embedding", "attention", "mlp", "logits")
FLAT = 0.4  # |slope| of log size in log width under which a quantity counts as flat (measured: muP 0.28 at most)
WIDTHS = (48, 96, 192, 384)  # 8x; n_head 3 to 24 at heads of 16, so a group of three K/V heads fits every width
DEPTH_QUANTITIES = ("residual", "residual change", "logits")
DEPTHS = (2, 4, 8, 16)  # 8x, at width DEPTH_WIDTH
DEPTH_WIDTH = 48  # n_head 3 at heads of 16: every shipped attention's head and group rules fit


def compared(config, parametrization: str, base_width: int, base_depth: int):
    """The config under the parametrization a row compares, whatever the experiment's own: the standard one with no
    base shape, the others relative to the smallest size checked."""
    if parametrization == "standard":
        return dataclasses.replace(config, parametrization="standard", base_width=0, base_depth=0, base_head_dim=0)
    return dataclasses.replace(config, parametrization=parametrization, base_width=base_width, base_depth=base_depth)


def small_model(experiment, parametrization: str, n_layer: int, n_embd: int, base_width: int, base_depth: int,
                lr: float, head_size: int, seed: int, check: str, advice: str):
    """The experiment's own model at this shape (heads of head_size, its components' size rules applied as on a
    ladder; a 512-token vocabulary, no dropout, no token dropped by a mixture's capacity) under the parametrization
    compared, and its optimizer at the fixed rate. A shape the components do not fit is a ValueError naming the check
and the advice."""
    from gptlab.core.config import GPTConfig, TrainingConfig, replace_config
    from gptlab.models.gpt import build_gpt
    from gptlab.models.parametrization import resized
    from gptlab.optim import optimizer_class
    classes = experiment.components()
    own = replace_config(experiment.model_config, block_size=32, vocab_size=512, dropout=0.0)
    n_head = max(1, n_embd // head_size)
    try:
        config = resized(own, classes, n_layer=n_layer, n_embd=n_embd, n_head=n_head)
    except ValueError as e:
        raise ValueError(f"the {check} at width {n_embd} ({n_head} heads of {head_size}): "
                         f"{str(e).split(': rungs such as')[0]}; {advice}") from None
    if "moe_capacity_factor" in getattr(classes["mlp_class"], "config_fields", ()):
        config = replace_config(config, moe_capacity_factor=0.0)  # no token dropped: the same tokens at every size
    config = compared(config, parametrization, base_width=base_width, base_depth=base_depth)
    torch.manual_seed(seed)
    model = build_gpt(experiment, GPTConfig(**dataclasses.asdict(config)))
    return model, optimizer_class(experiment.optimizer_class)(model, TrainingConfig(max_lr=lr, weight_decay=0.0))


def train_observed(model, optimizer, steps: int, seed: int, observe) -> None:
    """`steps` steps on one fixed batch of random tokens, observe(t, output) after the forward pass at the
    initialisation (t = 0) and after each step."""
    data = torch.randint(0, 512, (8, 33), generator=torch.Generator().manual_seed(seed))
    x, y = data[:, :-1], data[:, 1:]
    for t in range(steps + 1):
        out = model(x, y)
        observe(t, out)
        if t < steps:
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()


def measure(experiment, parametrization: str, widths=WIDTHS, steps: int = 8, lr: float = 3e-3, head_size: int = 16,
            seed: int = 0) -> dict[str, np.ndarray]:
    """{quantity: array (steps + 1, widths)} of mean absolute activations."""
    sizes = {q: np.zeros((steps + 1, len(widths))) for q in QUANTITIES}
    for j, w in enumerate(widths):
        model, optimizer = small_model(experiment, parametrization, 2, w, widths[0], 2, lr, head_size, seed,
                                       "width check", "give --widths that fit")
        seen: dict[str, list[float]] = {q: [] for q in QUANTITIES}

        def size_of(q):
            return lambda m, i, o: seen[q].append((o[0] if isinstance(o, tuple) else o).detach().abs().mean().item())
        hooks = [model.transformer.wte.register_forward_hook(size_of("embedding"))]
        for block in model.transformer.h:
            hooks += [block.attn.register_forward_hook(size_of("attention")),
                      block.mlp.register_forward_hook(size_of("mlp"))]

        def observe(t, out):
            sizes["logits"][t, j] = out.logits.detach().abs().mean().item()
            for q in ("embedding", "attention", "mlp"):
                sizes[q][t, j] = float(np.mean(seen[q]))
                seen[q].clear()
        train_observed(model, optimizer, steps, seed, observe)
        for hook in hooks:
            hook.remove()
    return sizes


def measure_depth(experiment, parametrization: str, depths=DEPTHS, steps: int = 8, lr: float = 3e-3,
                  width: int = DEPTH_WIDTH, head_size: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    """{quantity: array (steps + 1, depths)} across depths at one width: the mean absolute value of the residual
    stream after the last block (the input of the final norm), of its change since the initialisation (what
    training added: with the blocks' updates summed over the depth, it is what grows), and of the logits."""
    sizes = {q: np.zeros((steps + 1, len(depths))) for q in DEPTH_QUANTITIES}
    for j, depth in enumerate(depths):
        model, optimizer = small_model(experiment, parametrization, depth, width, width, depths[0], lr, head_size,
                                       seed, "depth check", "give --depth-width a width that fits")
        residual: dict[str, torch.Tensor] = {}  # "now": the last forward pass's; "start": the initialisation's
        hook = model.transformer.ln_f.register_forward_hook(
            lambda m, i, o: residual.__setitem__("now", i[0].detach().clone()))

        def observe(t, out):
            if t == 0:
                residual["start"] = residual["now"]
            sizes["residual"][t, j] = residual["now"].abs().mean().item()
            sizes["residual change"][t, j] = (residual["now"] - residual["start"]).abs().mean().item()
            sizes["logits"][t, j] = out.logits.detach().abs().mean().item()
        train_observed(model, optimizer, steps, seed, observe)
        hook.remove()
    return sizes


def slopes(sizes: dict[str, np.ndarray], widths=WIDTHS) -> dict[str, float]:
    """Each quantity's slope of log size against log width (or depth), after the last step."""
    x = np.log(widths)
    return {q: float(np.polyfit(x, np.log(v[-1]), 1)[0]) for q, v in sizes.items()}


def verdict(found: dict[str, float], axis: str = "width") -> str:
    unmeasured = [q for q, s in found.items() if not math.isfinite(s)]
    if unmeasured:  # a size of 0 or a non-finite one: no slope to read
        return f"not measured: {', '.join(unmeasured)} had a size of 0 or not finite at some {axis}"
    moved = {q: s for q, s in found.items() if abs(s) >= FLAT}
    if not moved:
        return f"flat: every quantity's size changes less than {axis}^{FLAT} across the {axis}s"
    said = []
    for word, sign in (("grows", 1), ("shrinks", -1)):
        these = [f"{q} ~ {axis}^{s:+.2f}" for q, s in moved.items() if s * sign > 0]
        if these:
            said.append(f"{word} with the {axis}: " + ", ".join(these))
    return "; ".join(said)


def figure(results: dict[str, dict[str, np.ndarray]], widths, path: Path, title: str, axis: str = "width") -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    quantities = list(next(iter(results.values())))
    fig, axes = plt.subplots(len(results), len(quantities), figsize=(3.6 * len(quantities), 3.2 * len(results)),
                             squeeze=False)
    for row, (parametrization, sizes) in enumerate(results.items()):
        found = slopes(sizes, widths)
        for col, q in enumerate(quantities):
            ax = axes[row][col]
            for t in range(sizes[q].shape[0]):
                ax.plot(widths, sizes[q][t], "o-", color=f"C{t}", markersize=3, linewidth=1,
                        label=f"step {t}" if t else "init")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{parametrization}: {q} (slope {found[q]:+.2f})", fontsize=9)
            ax.set_xlabel(axis, fontsize=8)
            ax.grid(alpha=0.3, which="both")
            if col == 0:
                ax.set_ylabel("mean |activation|", fontsize=8)
                ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


TRANSFER_WIDTHS = (64, 256)  # four times apart
TRANSFER_GRID = tuple(2 ** (k / 2) for k in range(-4, 5))  # x0.25 to x4 in steps of sqrt(2)
FOLDED_VOCAB = 512


def transfer(experiment, parametrization: str, widths=TRANSFER_WIDTHS, grid=TRANSFER_GRID, base_lr: float = 3e-3,
             steps: int = 100, head_size: int = 16, seed: int = 0) -> dict:
    """A learning-rate sweep at each width: {"losses": {width: {multiplier: final val loss}}, "fits": {width: LRFit}}.
    Each run trains the experiment's own model (2 layers, heads of `head_size`) for `steps` steps of 8 x 64 tokens
    of the embedded corpus folded into a 512-token vocabulary (id mod 512: a language these small models learn in
    a hundred steps, with a vocabulary cheap enough to sweep), by its AdamW with the smoke preset's schedule
    (warm-up a tenth of the steps, cosine to a tenth), from one seed; muP's base width is the smaller."""
    from gptlab.core.config import GPTConfig, TrainingConfig, replace_config
    from gptlab.data.embedded import embedded_splits
    from gptlab.models.gpt import build_gpt
    from gptlab.models.parametrization import resized
    from gptlab.optim import optimizer_class
    from gptlab.reporting.lr_sweep import fit_lr
    from gptlab.training.schedule import set_learning_rates
    splits = {k: torch.from_numpy(v.astype(np.int64) % FOLDED_VOCAB) for k, v in embedded_splits().items()}
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(splits["train"]) - 65, (steps, 8), generator=g)
    val = splits["val"][:32 * 65].view(32, 65)
    classes = experiment.components()
    own = replace_config(experiment.model_config, block_size=64, vocab_size=FOLDED_VOCAB, dropout=0.0)
    losses, fits = {}, {}
    for w in widths:
        config = resized(own, classes, n_layer=2, n_embd=w, n_head=max(1, w // head_size))
        config = compared(config, parametrization, base_width=widths[0], base_depth=config.n_layer)
        losses[w] = {}
        for m in grid:
            train = TrainingConfig(max_lr=base_lr * m, muon_lr=0.02 * m, warmup_steps=max(1, steps // 10),
                                   max_steps=steps, min_lr_ratio=0.1)
            torch.manual_seed(seed)
            model = build_gpt(experiment, GPTConfig(**dataclasses.asdict(config)))
            optimizer = optimizer_class(experiment.optimizer_class)(model, train)
            for step in range(steps):
                batch = torch.stack([splits["train"][s:s + 65] for s in starts[step]])
                set_learning_rates(optimizer, step, train)
                optimizer.zero_grad(set_to_none=True)
                model(batch[:, :-1], batch[:, 1:]).loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
            with torch.no_grad():
                model.eval()
                loss = model(val[:, :-1], val[:, 1:]).ce.item()
            losses[w][m] = loss if math.isfinite(loss) else math.inf
        done = {m: v for m, v in losses[w].items() if math.isfinite(v)}
        fits[w] = fit_lr(experiment.name, base_lr, list(grid), done, [m for m in grid if m not in done],
                         untrained=math.log(FOLDED_VOCAB))
    return {"losses": losses, "fits": fits}


def shift_in_steps(fits: dict, grid=TRANSFER_GRID) -> float:
    """How far the best rate moved between the widths, in grid steps (log of the ratio over log of the spacing):
    from each fit's optimum where it is inside the grid, else its chosen grid point."""
    (_, a), (_, b) = sorted(fits.items())
    best = [f.optimum or f.chosen for f in (a, b)]
    return abs(math.log(best[1] / best[0])) / math.log(grid[1] / grid[0])


def transfer_figure(results: dict[str, dict], path: Path, title: str) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.6), squeeze=False)
    for ax, (parametrization, result) in zip(axes[0], results.items()):
        for i, (w, losses) in enumerate(sorted(result["losses"].items())):
            ms = sorted(m for m, v in losses.items() if math.isfinite(v))
            fit = result["fits"][w]
            best = fit.optimum or fit.chosen
            ax.plot(ms, [losses[m] for m in ms], "o-", color=f"C{i}", label=f"width {w}: best x{best:.2f}")
            ax.axvline(best, color=f"C{i}", linestyle=":", linewidth=1)
        ax.set_xscale("log", base=2)
        ax.set(xlabel="learning rate (multiple of the base rate)", ylabel="final validation loss",
               title=f"{parametrization}: the best rate moved {shift_in_steps(result['fits']):.1f} grid steps")
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gptlab coordcheck", description="The coordinate check: activation sizes across "
                                "widths (and depths) over the first training steps, under each parametrization.",
                                allow_abbrev=False)
    p.add_argument("experiment", help="a name in experiments/ or a path to a .py file")
    p.add_argument("--parametrization", nargs="+", choices=["standard", "mup"], default=["standard", "mup"],
                   help="those compared across widths (default: standard mup)")
    p.add_argument("--widths", default=",".join(map(str, WIDTHS)), help=f"comma-separated (default {WIDTHS})")
    p.add_argument("--depths", help=f"comma-separated, e.g. {','.join(map(str, DEPTHS))}: also check across depths "
                                    f"(CompleteP's check)")
    p.add_argument("--depth-parametrization", nargs="+", choices=["standard", "completep"],
                   default=["standard", "completep"], help="those compared across depths (default: standard completep)")
    p.add_argument("--depth-width", type=int, default=DEPTH_WIDTH,
                   help=f"the width the depth check holds (default {DEPTH_WIDTH}: 3 heads of 16)")
    p.add_argument("--steps", type=int, default=8, help="training steps measured after the initialisation (default 8)")
    p.add_argument("--lr", type=float, default=3e-3, help="the optimizer's fixed rate (default 3e-3)")
    p.add_argument("--transfer", action="store_true",
                   help="also sweep the learning rate at two widths four times apart (64 and 256) under each "
                        "parametrization: where the best rate lands, and how far it moves")
    p.add_argument("--out", type=Path, help="the figures' directory (default: log_bench/coordcheck)")
    return p


def growing(text: str, flag: str, example, multiples: bool) -> tuple[int, ...]:
    """Comma-separated sizes, two or more, growing (each a multiple of the first where `multiples`: a width
    divides into heads as the base's does); else ValueError saying so."""
    rule = ", each a multiple of the first" if multiples else ""
    try:
        sizes = tuple(int(w) for w in text.split(","))
        if (len(sizes) >= 2 and sizes[0] > 0 and sorted(set(sizes)) == list(sizes)
                and not (multiples and any(w % sizes[0] for w in sizes))):
            return sizes
    except ValueError:
        pass
    raise ValueError(f"{flag} {text}: give two or more growing {flag[2:]}{rule}, e.g. {','.join(map(str, example))}")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    from gptlab.core.config import ConfigError
    from gptlab.core.experiment import ExperimentError, load_experiment
    from gptlab.paths import BENCH_ROOT
    try:
        widths = growing(args.widths, "--widths", WIDTHS, multiples=True)
        depths = growing(args.depths, "--depths", DEPTHS, multiples=False) if args.depths is not None else ()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.steps < 1 or not (math.isfinite(args.lr) and args.lr > 0) or args.depth_width < 1:
        print("error: --steps and --depth-width must be 1 or more and --lr a positive number", file=sys.stderr)
        return 2
    results, deep = {}, {}
    try:
        experiment = load_experiment(args.experiment)
        for p in args.parametrization:
            print(f"{experiment.name} under {p}, widths {widths[0]} to {widths[-1]}: {args.steps} steps each ...",
                  flush=True)
            results[p] = sizes = measure(experiment, p, widths, args.steps, args.lr)
            found = slopes(sizes, widths)
            print(f"{experiment.name} under {p}: " + ", ".join(f"{q} {s:+.2f}" for q, s in found.items()) +
                  f" (slope of log size in log width after step {args.steps}); {verdict(found)}", flush=True)
        for p in (args.depth_parametrization if depths else []):
            print(f"{experiment.name} under {p}, depths {depths[0]} to {depths[-1]} at width {args.depth_width}: "
                  f"{args.steps} steps each ...", flush=True)
            deep[p] = sizes = measure_depth(experiment, p, depths, args.steps, args.lr, width=args.depth_width)
            found = slopes(sizes, depths)
            print(f"{experiment.name} under {p}, across depths: " + ", ".join(f"{q} {s:+.2f}" for q, s in found.items())
                  + f" (slope of log size in log depth after step {args.steps}); {verdict(found, 'depth')}", flush=True)
    except (ExperimentError, ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = (args.out or BENCH_ROOT / "coordcheck").resolve()
    out.mkdir(parents=True, exist_ok=True)
    swept = {}
    if args.transfer:
        for p in args.parametrization:
            swept[p] = transfer(experiment, p)
            fits = swept[p]["fits"]
            said = "; ".join(f"width {w}: best x{(f.optimum or f.chosen):.2f}" + (f" ({f.flag})" if f.flag else "")
                             for w, f in sorted(fits.items()))
            print(f"{experiment.name} under {p}, the learning-rate sweep: {said}; the best rate moved "
                  f"{shift_in_steps(fits):.1f} grid steps of sqrt(2)")
    try:
        path = figure(results, widths, out / f"coordcheck_{experiment.name}.png",
                      f"coordinate check of {experiment.name}: widths {widths[0]} to {widths[-1]}, 2 layers, "
                      f"{experiment.optimizer_class.__name__} at {args.lr:g} for {args.steps} steps")
        print(f"wrote {path}")
        if deep:
            path = figure(deep, depths, out / f"coordcheck_depth_{experiment.name}.png",
                          f"coordinate check of {experiment.name} across depths: {depths[0]} to {depths[-1]} blocks, "
                          f"width {args.depth_width}, {experiment.optimizer_class.__name__} at {args.lr:g} for "
                          f"{args.steps} steps", axis="depth")
            print(f"wrote {path}")
        if swept:
            path = transfer_figure(swept, out / f"transfer_{experiment.name}.png",
                                   f"learning-rate transfer of {experiment.name}: widths {TRANSFER_WIDTHS[0]} and "
                                   f"{TRANSFER_WIDTHS[1]}, 2 layers, 100 steps of the embedded corpus (vocabulary "
                                   f"folded to {FOLDED_VOCAB}), one seed")
            print(f"wrote {path}")
    except ModuleNotFoundError as e:
        print(f"the figures need {e.name} (pip install -e \".[plot]\")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
