"""`TrainState`: everything a checkpoint must hold for a run to continue exactly as if it
had never stopped (lingua's TrainState), behind `state_dict` / `load_state_dict`."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from gptlab.data.loader import TokenLoader
from gptlab.training.distributed import Dist, gather_objects
from gptlab.training.run import TrainingError


@dataclass
class TrainState:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    loader: TokenLoader
    ctx: Dist
    step: int = 0  # the next optimizer step to take
    bad_steps: int = 0  # consecutive non-finite steps so far

    def state_dict(self) -> dict:
        """Plain data (tensors, numbers, lists, dicts). A collective: every rank's data-loader
        position and RNG states are gathered, so every rank must call it."""
        loaders = gather_objects(self.loader.state_dict(), self.ctx)
        rngs = gather_objects(rng_state(self.ctx.device_type), self.ctx)
        return {"step": self.step, "bad_steps": self.bad_steps, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "loader": loaders,
                "rng": [{k: v.cpu() if torch.is_tensor(v) else v for k, v in r.items()} for r in rngs]}

    def load_state_dict(self, state: dict) -> None:
        """Restore everything, this process's RNG last: call it when nothing else will draw."""
        if len(state["loader"]) != self.ctx.world_size:
            raise TrainingError(f"the checkpoint was written by {len(state['loader'])} process(es), this run has "
                                f"{self.ctx.world_size}; resume with the same number of processes")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.loader.load_state_dict(state["loader"][self.ctx.rank])
        self.step, self.bad_steps = state["step"], state.get("bad_steps", 0)
        set_rng_state(state["rng"][self.ctx.rank], self.ctx.device_type)


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
