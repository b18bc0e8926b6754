"""The sharded token loader (build-nanogpt's DataLoaderLite, made resumable).

Each step every rank reads B*T+1 consecutive tokens: rank r at offset B*T*r, then all
ranks move on by B*T*world, so together they read the stream once, each rank different
tokens. A shard too short for the next step is left for the next shard; after the last
shard the stream starts over. `state_dict()` is the position; loading it continues there.
"""

from __future__ import annotations

import numpy as np
import torch

from gptlab.data.shards import DataError


class TokenLoader:
    def __init__(self, shards: list[np.ndarray], B: int, T: int, rank: int = 0, world_size: int = 1,
                 name: str = "data"):
        self.shards, self.B, self.T, self.rank, self.world_size = shards, B, T, rank, world_size
        needed = B * T * world_size + 1
        short = [i for i, s in enumerate(shards) if len(s) < needed]
        if not shards or len(short) == len(shards):
            raise DataError(f"{name} holds {sum(len(s) for s in shards):,} tokens in {len(shards)} shard(s), "
                            f"fewer than one step needs (B*T*world+1 = {needed:,}); "
                            f"lower micro_batch_size or sequence_length, or use more data")
        self.reset()

    def reset(self) -> None:
        self.shard, self.position = 0, self.B * self.T * self.rank
        self.epoch = 0
        self._skip_short_shards()

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        B, T = self.B, self.T
        tokens = self.shards[self.shard]
        buf = torch.from_numpy(np.asarray(tokens[self.position:self.position + B * T + 1], dtype=np.int64))
        x, y = buf[:-1].view(B, T), buf[1:].view(B, T)
        self.position += B * T * self.world_size
        if self.position + B * T * self.world_size + 1 > len(tokens) + B * T * self.rank:
            self._advance_shard()
        return x, y

    def _advance_shard(self) -> None:
        self.shard += 1
        if self.shard == len(self.shards):
            self.shard, self.epoch = 0, self.epoch + 1
        self.position = self.B * self.T * self.rank
        self._skip_short_shards()

    def _skip_short_shards(self) -> None:
        while len(self.shards[self.shard]) < self.B * self.T * self.world_size + 1:
            self._advance_shard()

    def state_dict(self) -> dict:
        return {"shard": self.shard, "position": self.position, "epoch": self.epoch, "rank": self.rank,
                "world_size": self.world_size, "B": self.B, "T": self.T}

    def load_state_dict(self, state: dict) -> None:
        mine = {"rank": self.rank, "world_size": self.world_size, "B": self.B, "T": self.T}
        theirs = {k: state[k] for k in mine}
        if theirs != mine:
            raise DataError(f"the saved data position is for {theirs}, this run has {mine}; "
                            f"resume with the same number of processes and batch shape")
        self.shard, self.position, self.epoch = state["shard"], state["position"], state["epoch"]
