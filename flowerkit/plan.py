"""The RunPlan: everything a run will do, decided once, as typed records that flow one way.

A front end (the CLI, the dashboard's form, a Prefect deployment's flow) prepares the plan once with
``flowerkit.prepare.prepare_plan``; the flow takes it as its input, and each task takes the parts of it that
it needs and returns typed records (``Selection``, ``TrainResult``, ``Evaluation``) to the next task. Nothing
decided here is decided again further down: the device, the precision, which splits and images are read,
which checkpoint an eval run evaluates (with its sha256) and which weights a training run starts from.

This module holds only the records and the one mapping of a run onto its splits; it sits below the engine
(which runs a plan) and above the config, data and device modules it is made of.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from flowerkit.config import EvalConfig, RunConfig, TrainConfig
from flowerkit.data.selection import Selection, select_split
from flowerkit.device import DeviceChoice
from flowerkit.layout import RunLayout


@dataclass(frozen=True)
class SplitRequest:
    """One split a run reads: which (or which tiny subset), and in batches of what size."""

    split: str
    subset: str | None
    batch_size: int


@dataclass(frozen=True)
class CheckpointInfo:
    """The checkpoint an eval run evaluates, as the plan read it: the evaluation checks the same bytes."""

    path: Path
    sha256: str
    model_type: str
    img_size: int
    step: int


# "run": the process that runs the flow and writes the run. "share": another process of a distributed
# run (torchrun's ranks above 0, machines with --node_rank above 0), which only trains its share.
Role = Literal["run", "share"]


@dataclass(frozen=True, kw_only=True)
class RunPlan:
    flow: str
    config: RunConfig
    resume: bool
    device: DeviceChoice
    precision: str
    splits: tuple[SplitRequest, ...]
    # Empty for flower102_synthetic until the set is generated (the load_subset task generates it once).
    selections: dict[str, Selection] = field(default_factory=dict)
    checkpoint: CheckpointInfo | None = None
    weights: str | None = None  # what a training run starts from, in words (no download yet)
    data: str | None = None  # whether the data's checksums were verified
    notes: tuple[str, ...] = ()
    role: Role = "run"

    @property
    def layout(self) -> RunLayout:
        return self.config.layout

    @property
    def train_config(self) -> TrainConfig:
        assert isinstance(self.config, TrainConfig), f"a {self.flow} plan has no training configuration"
        return self.config

    @property
    def total_steps(self) -> int:
        if isinstance(self.config, TrainConfig):
            return self.config.num_steps
        assert self.checkpoint is not None
        return self.checkpoint.step

    def request(self, split: str) -> SplitRequest:
        return next(request for request in self.splits if request.split == split)


def split_requests(config: RunConfig) -> tuple[SplitRequest, ...]:
    """The one mapping of a run onto splits, subsets and batch sizes: every split the run will read (the test
    split of ``--test_after`` included, so it is checked before training starts)."""
    if isinstance(config, TrainConfig):
        requests = [SplitRequest("train", config.tiny_train_subset, config.train_batch_size),
                    SplitRequest("val", config.tiny_infer_subset, config.eval_batch_size)]
        if config.test_after:
            requests.append(SplitRequest("test", config.tiny_infer_subset, config.eval_batch_size))
        return tuple(requests)
    assert isinstance(config, EvalConfig)
    return (SplitRequest(config.split, config.tiny_infer_subset, config.eval_batch_size),)


def select(config: RunConfig, request: SplitRequest) -> Selection:
    """The images of one requested split (generating the synthetic set on first use)."""
    return select_split(config.dataset, config.data_root, request.split, request.subset, request.batch_size)
