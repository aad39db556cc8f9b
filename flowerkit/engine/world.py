"""The processes one training run spans, and the few collectives the training loop needs.

``SINGLE`` is the one-process world: every collective is then the identity and nothing imports
``torch.distributed``, so a run on a Mac (MPS or CPU) takes exactly the path it always took. A distributed
world is joined by ``flowerkit.engine.distributed``; the trainer only ever talks to a ``World``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from flowerkit.data.pipeline import shard_bounds
from flowerkit.errors import ConfigError


def check_world_device(world_size: int, nproc_per_node: int, device_type: str) -> None:
    """Raise ConfigError when this machine cannot run ``nproc_per_node`` training processes on the device."""
    if world_size == 1:
        return
    if device_type == "mps":
        raise ConfigError("Training on several processes needs CUDA GPUs (NCCL) or the CPU (gloo); Apple MPS runs "
                          "one process. Leave --nproc_per_node and --nnodes at 1 on a Mac, or add --device cpu.")
    if device_type == "cuda" and nproc_per_node > torch.cuda.device_count():
        raise ConfigError(f"--nproc_per_node {nproc_per_node} starts one process per GPU, but this machine has "
                          f"{torch.cuda.device_count()} CUDA GPU(s). Use at most that many, or --device cpu.")


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str = "none"  # "none" (one process), "gloo" or "nccl"

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes: metrics, TensorBoard, checkpoints, the run record."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """``model`` as the training step calls it: DistributedDataParallel (which also copies rank 0's weights
        to every rank) when there are several processes, else the model itself."""
        if not self.distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            torch.distributed.all_reduce(tensor)
        return tensor

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (the others pass anything, usually None)."""
        if not self.distributed:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather_object(self, obj: Any) -> list[Any]:
        if not self.distributed:
            return [obj]
        gathered: list[Any] = [None] * self.size
        torch.distributed.all_gather_object(gathered, obj)
        return gathered

    def gather_rows(self, rows: np.ndarray, total: int, device: torch.device) -> np.ndarray:
        """Every rank's block of rows (rank r holds ``shard_bounds(total, r, size)``), concatenated in rank
        order: the rows a single process would have computed, in the same order."""
        if not self.distributed:
            return rows
        sizes = [hi - lo for lo, hi in (shard_bounds(total, r, self.size) for r in range(self.size))]
        padded = torch.zeros(max(sizes), rows.shape[1], dtype=torch.float32, device=device)
        padded[:len(rows)] = torch.from_numpy(rows).to(device)
        blocks = [torch.empty_like(padded) for _ in range(self.size)]
        torch.distributed.all_gather(blocks, padded)
        return torch.cat([block[:n] for block, n in zip(blocks, sizes)]).cpu().numpy()

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()

    @contextlib.contextmanager
    def local_first(self) -> Iterator[None]:
        """Local rank 0 of each machine runs the block first (it builds the pixel caches), then the others
        (they find the caches built): N ranks never decode the same images N times over."""
        if self.local_rank != 0:
            self.barrier()
        yield
        if self.local_rank == 0:
            self.barrier()


SINGLE = World()
