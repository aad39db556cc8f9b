"""The run's plan: everything a run will do, decided once, as frozen records that flow one way.

A front end (the CLI, the dashboard, ``train.py``/``eval.py``) or a deployment's flow run builds the plan once
with ``flowerkit.run.prepare.prepare_plan`` (a predict run: ``prepare_predict_run``); the flow takes it whole, and
each task takes the parts of it that it needs and returns typed records (``Selection``, ``TrainResult``,
``Evaluation``) to the next task. Nothing decided here is decided again further down: the device, the
precision, which splits and images are read, which checkpoint an eval run evaluates (with its sha256), which
weights a training run starts from, and, once the run directory is claimed, the run's id and start time.

``Plan`` is what every run's plan shares (train, eval and predict); it is written to the run folder as
``plan.json`` when the run is claimed, and ``flowerkit.run.prepare.load_plan`` reads it back as an equal plan.

This module holds only the records and the one mapping of a run onto its splits; it sits below the engine
(which runs a plan) and above the config, data and device modules it is made of.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Self

from flowerkit.run.config import EvalConfig, RunConfig, TrainConfig
from flowerkit.data.selection import Selection, select_split
from flowerkit.device import DeviceChoice
from flowerkit.run.layout import RunLayout
from flowerkit.models.weights import WeightsSource


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


@dataclass(frozen=True)
class Execution:
    """The processes that train the run and this process's place among them, decided once when the plan is
    built (from the config and, under torchrun, its environment) and never looked up again.

    ``launcher``: "none" (one process), "flowerkit" (``--nproc_per_node`` workers this process starts; each
    worker learns its rank from the launch) or "torchrun" (torchrun started this process as ``rank``)."""

    launcher: Literal["none", "flowerkit", "torchrun"] = "none"
    world_size: int = 1
    nodes: int = 1
    rank: int = 0
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


# "run": the process that runs the flow and writes the run. "share": another process of a distributed
# run (torchrun's ranks above 0, machines with --node_rank above 0), which only trains its share.
Role = Literal["run", "share"]


@dataclass(frozen=True)
class Claim:
    """The claimed run directory: the facts a run has once it exists (tasks never read them back from disk)."""

    run_id: str
    started_utc: str


@dataclass(frozen=True, kw_only=True)
class Plan:
    """What every run's plan holds: its flow and validated config, where it runs, and its claim once made."""

    flow: str
    config: Any  # RunConfig for train and eval, PredictRunConfig for predict
    device: DeviceChoice
    precision: str
    resume: bool = False
    notes: tuple[str, ...] = ()  # what the run logs when it starts
    warnings: tuple[str, ...] = ()  # the same, as warnings (shown even with --quiet)
    claim: Claim | None = None

    @property
    def layout(self) -> RunLayout:
        return self.config.layout

    @property
    def run_id(self) -> str:
        assert self.claim is not None, "the run directory is not claimed yet"
        return self.claim.run_id

    @property
    def total_steps(self) -> int:
        return 0

    @property
    def resumable(self) -> bool:
        """Whether a stopped run continues with ``--resume`` (a predict run is run again instead)."""
        return True

    def process_facts(self) -> dict[str, Any]:
        """The record's and the stamp's ``distributed``: the processes the run spans."""
        raise NotImplementedError

    def claimed(self, record: dict[str, Any]) -> Self:
        """This plan with the claimed run's id and start time (from the record that ``claim_run_dir`` wrote)."""
        return replace(self, claim=Claim(run_id=record["run_id"], started_utc=record["started_utc"]))

    def to_json(self) -> str:
        """``plan.json``: every field; ``flowerkit.run.prepare.load_plan`` reads it back as an equal plan."""
        import json

        from pydantic import TypeAdapter

        data = TypeAdapter(type(self)).dump_python(self, mode="json", warnings=False)
        data["config"] = self.config.model_dump(mode="json")  # every option of its own class, not the base's
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


@dataclass(frozen=True, kw_only=True)
class RunPlan(Plan):
    """The plan of a train or eval run."""

    config: RunConfig
    splits: tuple[SplitRequest, ...]
    # Empty for flower102_synthetic until the set is generated (the load_subset task generates it once).
    selections: dict[str, Selection] = field(default_factory=dict)
    checkpoint: CheckpointInfo | None = None
    execution: Execution = Execution()
    weights: WeightsSource | None = None  # what a training run starts from (a Hub id: not downloaded yet)
    data: str | None = None  # whether the data's checksums were verified
    role: Role = "run"

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

    def process_facts(self) -> dict[str, Any]:
        return world_facts(self.config, self.device.device)

    def request(self, split: str) -> SplitRequest:
        return next(request for request in self.splits if request.split == split)


def backend_for(device_type: str) -> str:
    """NCCL between CUDA GPUs, gloo between CPU processes (MPS runs one process)."""
    return "nccl" if device_type == "cuda" else "gloo"


def world_facts(config: RunConfig, device: str) -> dict[str, Any]:
    """The run record's ``distributed``: how many processes train, over which backend, each taking how many
    samples of every optimizer step (an eval run: one process and its evaluation batch)."""
    if not isinstance(config, TrainConfig):
        return {"world_size": 1, "backend": "none", "per_rank_batch": config.eval_batch_size, "nnodes": 1}
    size = config.world_size
    return {"world_size": size, "backend": backend_for(device.split(":")[0]) if size > 1 else "none",
            "per_rank_batch": config.train_batch_size // size, "nnodes": config.nnodes}


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
