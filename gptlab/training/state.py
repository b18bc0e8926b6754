"""`TrainState`: everything a checkpoint must hold for a run to continue exactly as if it
had never stopped (lingua's TrainState), behind `state_dict` / `load_state_dict`."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from gptlab.data.loader import DeviceBatches, TokenLoader
from gptlab.training.distributed import Dist, gather_objects
from gptlab.training.run import TrainingError


@dataclass
class TrainState:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    loader: TokenLoader | DeviceBatches
    ctx: Dist
    step: int = 0  # the next optimizer step to take
    bad_steps: int = 0  # consecutive non-finite steps so far

    def state_dict(self) -> dict:
        """Plain data (tensors, numbers, lists, dicts). A collective: every rank's RNG states are
        gathered, so every rank must call it. The data position is the same on every rank."""
        rngs = gather_objects(rng_state(self.ctx.device_type), self.ctx)
        return {"step": self.step, "bad_steps": self.bad_steps, "model": plain_weights(self.model.state_dict()),
                "optimizer": self.optimizer.state_dict(), "loader": self.loader.state_dict(),
                "rng": [{k: v.cpu() if torch.is_tensor(v) else v for k, v in r.items()} for r in rngs]}

    def load_state_dict(self, state: dict) -> None:
        """Restore everything, this process's RNG last: call it when nothing else will draw. The
        number of processes may differ from the checkpoint's: the data stream is a function of the
        step, and a rank the checkpoint did not have takes the RNG state of rank (its rank modulo
        the saved count)."""
        try:
            self.model.load_state_dict(plain_weights(state["model"]))
        except RuntimeError as e:
            raise TrainingError(f"the checkpoint's weights do not fit the model the experiment builds now "
                                f"({str(e).splitlines()[-1].strip()[:300]}); a component class changed since the "
                                f"checkpoint was written: restore it, or start a new run") from None
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as e:  # torch: a group of another size; gptlab: another optimizer's parts
            raise TrainingError(f"the checkpoint's optimizer state does not fit the parameters the experiment builds "
                                f"now ({str(e).splitlines()[0][:300]}): a component's parameters or the optimizer "
                                f"changed since the checkpoint was written. Restore them to resume, or begin a new run "
                                f"from its weights alone: --init-from CHECKPOINT") from None
        loader = state["loader"]
        self.loader.load_state_dict(loader[0] if isinstance(loader, list) else loader)  # a list: the per-rank format
        self.step, self.bad_steps = state["step"], state.get("bad_steps", 0)
        rngs = state["rng"]
        set_rng_state(rngs[self.ctx.rank % len(rngs)], self.ctx.device_type)


WRAPPER_PREFIXES = ("_orig_mod.", "module.")  # what torch.compile and DDP put before a wrapped model's names


def plain_weights(weights: dict) -> dict:
    """A state dict with the names of the model itself: the prefixes of a compiled or
    DDP-wrapped model's state dict (written by other tools, or by hand) taken off."""
    def plain(name: str) -> str:
        while name.startswith(WRAPPER_PREFIXES):
            name = name.split(".", 1)[1]
        return name
    return {plain(name): value for name, value in weights.items()}


def rng_state(device_type: str) -> dict:
    """This process's RNG states as plain data (no pickled numpy objects)."""
    np_state = np.random.get_state()
    state = {"python": list(random.getstate()[1]), "python_pos": random.getstate()[2],
             "numpy": torch.from_numpy(np_state[1].astype(np.int64)), "numpy_pos": int(np_state[2]),
             "torch": torch.get_rng_state()}
    if device_type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict, device_type: str) -> None:
    random.setstate((3, tuple(state["python"]), state["python_pos"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    torch.set_rng_state(state["torch"])
    if device_type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"])
