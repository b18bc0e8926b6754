"""The optimizer as a component of an experiment: which parameters it updates, how, and the
torch optimizers that do it, behind the few calls the training loop makes (`param_groups`,
`step`, `zero_grad`, `state_dict`, `load_state_dict`).

An experiment names it as `OPTIMIZER_CLASS`: a subclass of `Optimizer` (gptlab's `AdamW` and
`Muon`, or one of your own that implements `build`), or a plain `torch.optim.Optimizer` subclass,
which gets the recipe's parameter groups (weight decay on matrices, none on vectors) and
`train.max_lr` (`from_torch`).

Each group's peak learning rate is fixed when the optimizer is built; the schedule
(gptlab.training.schedule) scales every group by the same warm-up and cosine factor. A
component's parameters can be kept off a matrix optimizer by naming them in the component's
`adamw_params` (MoE's router does).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from gptlab.core.config import TrainingConfig

# TrainingConfig fields only some optimizers read; each names those it reads in `config_fields`
OPTIMIZER_FIELDS = ("muon_lr", "muon_weight_decay", "muon_momentum", "muon_nesterov", "muon_ns_steps",
                    "muon_adjust_lr_fn")


class Optimizer:
    """An experiment's optimizer: built as cls(model, train, device_type)."""

    config_fields: tuple[str, ...] = ()  # the OPTIMIZER_FIELDS it reads
    # whether build gives each parameter its muP/CompleteP rate (adamw_groups): a model parametrized so refuses
    # an optimizer that does not
    follows_parametrization: bool = False
    lr_fields: tuple[str, ...] = ("max_lr",)  # its peak learning rates: what a learning-rate sweep multiplies

    def __init__(self, model: nn.Module, train: TrainingConfig, device_type: str = "cpu"):
        self.train = train
        built = self.build(model, train, device_type)
        name = type(self).__name__
        if not (isinstance(built, dict) and built and all(isinstance(k, str) and isinstance(o, torch.optim.Optimizer)
                                                          for k, o in built.items())):
            raise ValueError(f"{name}.build returned {type(built).__name__}, not {{name: torch optimizer}}: return e.g. "
                             f"{{'adamw': torch.optim.AdamW(...)}}")
        self.optimizers: dict[str, torch.optim.Optimizer] = built
        check_coverage(model, self.param_groups, name)
        self.peak_lrs = [group["lr"] for group in self.param_groups]  # the schedule's 1.0, per group

    @classmethod
    def check_config(cls, train: TrainingConfig) -> list[str]:
        """What in the training config this optimizer cannot work with, in words."""
        return []

    @classmethod
    def warnings(cls, train: TrainingConfig) -> list[str]:
        """What in the training config works but looks like a mistake, in words (said before the run trains)."""
        return []

    def build(self, model: nn.Module, train: TrainingConfig, device_type: str) -> dict[str, torch.optim.Optimizer]:
        """{name: torch optimizer} over the model's parameters, each parameter in exactly one."""
        raise NotImplementedError(f"{type(self).__name__} must implement build(model, train, device_type)")

    def clipped_parameters(self) -> list[nn.Parameter] | None:
        """The parameters whose gradients train.grad_clip clips; None: all of them."""
        return None

    def flops_per_step(self) -> int:
        """Matmul FLOPs the update itself costs each step (an elementwise update: none counted)."""
        return 0

    def groups(self) -> dict[str, list[nn.Parameter]]:
        """{optimizer name: its parameters}: which parameter goes to which update."""
        return {name: [p for g in opt.param_groups for p in g["params"]] for name, opt in self.optimizers.items()}

    @property
    def param_groups(self) -> list[dict]:
        return [group for opt in self.optimizers.values() for group in opt.param_groups]

    def step(self) -> None:
        for opt in self.optimizers.values():
            opt.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        """The torch optimizer's own state dict where there is one (AdamW's as it always was),
        else {name: state dict}."""
        if len(self.optimizers) == 1:
            return next(iter(self.optimizers.values())).state_dict()
        return {name: opt.state_dict() for name, opt in self.optimizers.items()}

    def load_state_dict(self, state: dict) -> None:
        if len(self.optimizers) == 1:
            next(iter(self.optimizers.values())).load_state_dict(state)
            return
        missing = [name for name in self.optimizers if name not in state]
        if missing:
            raise ValueError(f"the saved optimizer state has no {', '.join(missing)} part: it was saved by another "
                             f"optimizer ({', '.join(state) if isinstance(state, dict) else type(state).__name__})")
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state[name])


def check_coverage(model: nn.Module, groups: list[dict], name: str) -> None:
    """Every trainable parameter in exactly one group, and nothing else: a parameter in no group would stay at its
    initialisation (a study row would compare a half-frozen model), one in two groups would step twice."""
    names = {id(p): n for n, p in trainable(model)}
    counts: dict[int, int] = {}
    for group in groups:
        for p in group["params"]:
            counts[id(p)] = counts.get(id(p), 0) + 1
    problems = []
    left = [n for i, n in names.items() if i not in counts]
    if left:
        problems.append(f"{len(left)} of the model's parameters are in no group and would not train: "
                        f"{', '.join(left[:6])}{', ...' if len(left) > 6 else ''}")
    twice = [names[i] for i, c in counts.items() if c > 1 and i in names]
    if twice:
        problems.append(f"{len(twice)} parameters are in more than one group and would step once per group: "
                        f"{', '.join(twice[:6])}{', ...' if len(twice) > 6 else ''}")
    if any(i not in names for i in counts):
        problems.append("a group holds tensors that are not the model's trainable parameters")
    if problems:
        raise ValueError(f"{name}.build must put each trainable parameter in exactly one group: " + "; ".join(problems))


def decay_groups(params: list[nn.Parameter], weight_decay: float) -> list[dict]:
    """The recipe's two groups: weight decay on matrices (2-D and up), none on vectors (biases, gains)."""
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


def adamw_groups(model: nn.Module, params: list[nn.Parameter], lr: float, weight_decay: float,
                 eps: float = 1e-8) -> list[dict]:
    """AdamW's groups: the recipe's two (decay_groups) in the standard parametrization; under muP or CompleteP
    (the model's `param_rules`), one group for each set of multipliers, each with its own peak rate, weight decay
    and epsilon (gptlab.models.parametrization)."""
    table = model.param_rules() if hasattr(model, "param_rules") else None
    if table is None:
        return decay_groups(params, weight_decay)
    groups: dict[tuple, dict] = {}
    for p in params:
        rule = table[id(p)]
        decay = p.dim() >= 2
        key = (decay, rule.lr, rule.weight_decay if decay else 0.0, rule.eps)
        if key not in groups:
            groups[key] = {"params": [], "lr": lr * rule.lr, "weight_decay": weight_decay * key[2] if decay else 0.0,
                           "eps": eps * rule.eps}
        groups[key]["params"].append(p)
    return list(groups.values())


def marked_for_adamw(model: nn.Module) -> set[int]:
    """The ids of the parameters components keep off matrix optimizers: each component's
    `adamw_params` names some of its own parameters."""
    ids = set()
    for name, module in model.named_modules():
        for pname in getattr(module, "adamw_params", ()):
            ids.add(id(module.get_parameter(pname)))
    return ids


def trainable(model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """Each distinct trainable parameter once (the tied wte / lm_head matrix once), in model order."""
    seen = set()
    for name, p in model.named_parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            yield name, p


def from_torch(cls: type) -> type[Optimizer]:
    """An Optimizer for a plain torch.optim.Optimizer subclass: the recipe's groups, built as
    cls(groups, lr=train.max_lr) (its own defaults for the rest)."""

    class TorchOptimizer(Optimizer):
        torch_class = cls

        def build(self, model, train, device_type):
            if getattr(model, "param_roles", None) is not None:
                raise ValueError(f"{cls.__name__} is a plain torch optimizer: it would train every parameter at one "
                                 f"rate, not muP's or CompleteP's per-parameter rates; use gptlab's AdamW or Muon, or "
                                 f"a gptlab.optim.Optimizer whose build uses adamw_groups")
            params = [p for _, p in trainable(model)]
            return {cls.__name__: cls(decay_groups(params, train.weight_decay), lr=train.max_lr)}

    TorchOptimizer.__name__ = TorchOptimizer.__qualname__ = f"TorchOptimizer[{cls.__name__}]"
    return TorchOptimizer


def optimizer_class(cls: type) -> type[Optimizer]:
    """The Optimizer an experiment's OPTIMIZER_CLASS stands for."""
    return from_torch(cls) if issubclass(cls, torch.optim.Optimizer) else cls


def check_optimizer(cls: type, train: TrainingConfig) -> list[str]:
    """The optimizer's own checks, its own fields (only those no other part reads: OPTIMIZER_FIELDS), and an
    optimizer field set that it would ignore."""
    optimizer = optimizer_class(cls)
    problems = list(optimizer.check_config(train))
    shared = [f for f in optimizer.config_fields if f not in OPTIMIZER_FIELDS]
    if shared:
        problems.append(f"config_fields names {', '.join(shared)}, which the recipe reads too (the schedule, the "
                        f"batch, every optimizer): a study would let {getattr(cls, '__name__', cls)} change them "
                        f"unmarked. An optimizer's own fields are those only optimizers read ({', '.join(OPTIMIZER_FIELDS)})"
                        f"; take a recipe field as it is, or change it with an override every run of a study shares")
    default = TrainingConfig()
    for name in OPTIMIZER_FIELDS:
        if getattr(train, name) != getattr(default, name) and name not in optimizer.config_fields:
            problems.append(f"train.{name}={getattr(train, name)!r} would be ignored: the optimizer "
                            f"{getattr(cls, '__name__', cls)} does not read it (Muon does: OPTIMIZER_CLASS = Muon); "
                            f"leave it at its default {getattr(default, name)!r}")
    return problems
