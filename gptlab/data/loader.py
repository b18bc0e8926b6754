"""The sharded token loader (build-nanogpt's DataLoaderLite, made a function of the step).

The training stream is read one optimizer step at a time: each step takes the next block of
tokens_per_step = B*T*world_size*accum consecutive tokens, and rank r's micro-step m reads
its B*T (+1 for the targets) at offset (m*world_size + r)*B*T inside the block. Every step
therefore reads the same tokens whatever the number of ranks and micro-batches, and the
position (shard, block start) is the same on every rank: a run checkpointed on 8 GPUs
continues on 4 or 1 with the same data. A shard too short for the next block is left for
the next shard; after the last shard the stream starts over. `state_dict()` is the position.

With an `order_seed` (train.data_order=seeded) the blocks are the same and their order is the
seed's: each epoch visits the shards in an order drawn from (seed, epoch), and each shard's
blocks in an order drawn from (seed, epoch, shard). The position is still (shard, block) in
that order, so a resumed run reads exactly what an uninterrupted one reads.
"""

from __future__ import annotations

import numpy as np
import torch

from gptlab.data.shards import DataError


class TokenLoader:
    def __init__(self, shards: list[np.ndarray], B: int, T: int, rank: int = 0, world_size: int = 1,
                 accum: int = 1, name: str = "data", vocab_size: int | None = None, order_seed: int | None = None):
        self.shards, self.B, self.T, self.rank, self.world_size, self.accum = shards, B, T, rank, world_size, accum
        self.name, self.vocab_size, self.order_seed = name, vocab_size, order_seed
        self._orders: dict[tuple, np.ndarray] = {}
        self.tokens_per_step = B * T * world_size * accum
        short = [i for i, s in enumerate(shards) if len(s) < self.tokens_per_step + 1]
        if not shards or len(short) == len(shards):
            raise DataError(f"{name} holds {sum(len(s) for s in shards):,} tokens in {len(shards)} shard(s), "
                            f"fewer than one step needs ({self.tokens_per_step + 1:,}: B*T*processes*accumulation "
                            f"+ 1); lower micro_batch_size, sequence_length or total_batch_size, or use more data")
        self.reset()

    def reset(self) -> None:
        self.shard, self.position, self.micro, self.epoch = 0, 0, 0, 0
        self._skip_short_shards()

    def _order(self, *key: int) -> np.ndarray | None:
        """The seed's permutation for (epoch,) (of the shards) or (epoch, shard) (of its blocks)."""
        if self.order_seed is None:
            return None
        if key not in self._orders:
            if len(self._orders) > 4:
                self._orders.clear()
            n = len(self.shards) if len(key) == 1 else (len(self.shards[key[1]]) - 1) // self.tokens_per_step
            self._orders[key] = np.random.default_rng([self.order_seed, *key]).permutation(n)
        return self._orders[key]

    def _shard_index(self) -> int:
        """The shard under the position: the shard'th of this epoch's order."""
        order = self._order(self.epoch)
        return self.shard if order is None else int(order[self.shard])

    def _block_start(self, shard: int) -> int:
        """Where the position's block starts in the shard."""
        order = self._order(self.epoch, shard)
        return self.position if order is None else int(order[self.position // self.tokens_per_step]) * self.tokens_per_step

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        B, T = self.B, self.T
        shard = self._shard_index()
        start = self._block_start(shard) + (self.micro * self.world_size + self.rank) * B * T
        buf = torch.from_numpy(np.asarray(self.shards[shard][start:start + B * T + 1], dtype=np.int64))
        if self.vocab_size is not None and int(buf.max()) >= self.vocab_size:
            raise DataError(f"{self.name}: shard {shard} holds token id {int(buf.max())} near position {start:,}, "
                            f"at or above the model's vocab_size={self.vocab_size}; the shard was not written with "
                            f"the GPT-2 tokenizer, or is damaged: prepare the data again")
        x, y = buf[:-1].view(B, T), buf[1:].view(B, T)
        self.micro += 1
        if self.micro == self.accum:
            self.micro, self.position = 0, self.position + self.tokens_per_step
            if self.position + self.tokens_per_step + 1 > len(self.shards[shard]):
                self._advance_shard()
        return x, y

    def _advance_shard(self) -> None:
        self.shard += 1
        if self.shard == len(self.shards):
            self.shard, self.epoch = 0, self.epoch + 1
        self.position = 0
        self._skip_short_shards()

    def _skip_short_shards(self) -> None:
        while len(self.shards[self._shard_index()]) < self.tokens_per_step + 1:
            self._advance_shard()

    def state_dict(self) -> dict:
        """The stream's position: the same on every rank."""
        return {"shard": self.shard, "position": self.position, "micro": self.micro, "epoch": self.epoch,
                "T": self.T, "tokens_per_step": self.tokens_per_step}

    def load_state_dict(self, state: dict) -> None:
        if "world_size" in state:  # a checkpoint of the per-rank format: rank r stood r*B*T into its block
            state = {**state, "position": state["position"] - state["B"] * state["T"] * state["rank"], "micro": 0,
                     "tokens_per_step": None}
        if state["T"] != self.T or state["tokens_per_step"] not in (None, self.tokens_per_step):
            raise DataError(f"the saved data position is for steps of {state['tokens_per_step']} tokens in sequences "
                            f"of {state['T']}, this run reads {self.tokens_per_step} in sequences of {self.T}; resume "
                            f"with the same total_batch_size and sequence_length")
        self.shard, self.position, self.micro, self.epoch = state["shard"], state["position"], state["micro"], state["epoch"]


class DeviceBatches:
    """A TokenLoader's batches on the device. On a GPU the next batch is read, put in pinned
    memory and copied without blocking as soon as the current one is handed out, so the copy
    overlaps the step's compute; elsewhere each batch is read when asked for. The position
    (`state_dict`) is the loader's before the batch waiting here: a checkpoint never skips it."""

    def __init__(self, loader: TokenLoader, device: str | torch.device, ahead: bool | None = None):
        self.loader, self.device = loader, torch.device(device)
        self.pinned = self.device.type == "cuda"
        self.ahead = self.pinned if ahead is None else ahead
        self.pending: tuple[torch.Tensor, torch.Tensor] | None = None
        self.pending_from: dict | None = None  # the loader's position before the pending batch

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.ahead:
            x, y = self.loader.next_batch()
            return x.to(self.device), y.to(self.device)
        batch = self.pending if self.pending is not None else self._load()
        self.pending_from = self.loader.state_dict()
        self.pending = self._load()
        return batch

    def _load(self) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.loader.next_batch()
        if not self.pinned:
            return x.to(self.device), y.to(self.device)
        return (x.pin_memory().to(self.device, non_blocking=True),
                y.pin_memory().to(self.device, non_blocking=True))

    def _drop_pending(self) -> None:
        self.pending = self.pending_from = None

    def reset(self) -> None:
        self._drop_pending()
        self.loader.reset()

    def state_dict(self) -> dict:
        return self.pending_from if self.pending is not None else self.loader.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self._drop_pending()
        self.loader.load_state_dict(state)
