"""One plan per run, prepared once: everything a run needs, validated before anything is written.

``prepare_plan`` checks that the run can be claimed, reads an eval run's checkpoint (once: its state stays in
the plan for the evaluate step), picks the device and precision, maps the run onto its splits, selects their
images and checks the pretrained weights. The CLI prepares it before Prefect starts (so a bad input fails in
a second with one paragraph), prints it for ``--dry_run``, and hands it to the flow; the dashboard's launch
form prepares the same plan before it launches; a Prefect deployment run, which does not go through the CLI,
prepares it inside the flow.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowerkit.config import EvalConfig, RunConfig, TrainConfig, check_cache_size, check_model
from flowerkit.data.selection import Selection, select_split, synthetic_root_path
from flowerkit.device import DeviceChoice, detect_device, resolve_precision
from flowerkit.engine.checkpoint import checkpoint_model, load_checkpoint
from flowerkit.engine.world import check_world_device, world_facts
from flowerkit.errors import ConfigError
from flowerkit.layout import RunLayout
from flowerkit.paths import cache_root
from flowerkit.rundir import check_claimable
from flowerkit.writable import check_writable_folder


@dataclass(frozen=True)
class SplitRequest:
    """One split a run reads: which (or which tiny subset), and in batches of what size."""

    split: str
    subset: str | None
    batch_size: int


@dataclass(frozen=True)
class CheckpointInfo:
    """The checkpoint an eval run evaluates, as read once by the plan."""

    path: Path
    sha256: str
    model_type: str
    img_size: int
    step: int


@dataclass
class RunPlan:
    flow: str
    config: RunConfig
    resume: bool
    device: DeviceChoice
    precision: str
    splits: list[SplitRequest]
    selections: dict[str, Selection] = field(default_factory=dict)  # empty until the synthetic set exists
    checkpoint: CheckpointInfo | None = None
    weights: str | None = None
    data: str | None = None  # whether the data's checksums were verified
    notes: list[str] = field(default_factory=list)
    _checkpoint_state: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def layout(self) -> RunLayout:
        return self.config.layout

    @property
    def total_steps(self) -> int:
        if isinstance(self.config, TrainConfig):
            return self.config.num_steps
        assert self.checkpoint is not None
        return self.checkpoint.step

    def checkpoint_state(self) -> dict[str, Any]:
        """The eval checkpoint's contents (read once, when the plan was prepared)."""
        if self._checkpoint_state is None:
            raise RuntimeError("this plan holds no checkpoint")
        return self._checkpoint_state

    def describe(self, extra: dict[str, str] | None = None) -> str:
        """The ``--dry_run`` text: what the run would do (``extra``: lines a front end adds), and that nothing
        was written."""
        config = self.config
        lines = [f"{'config hash':<14} {config.config_hash()}"]
        if self.checkpoint is not None:
            ckpt = self.checkpoint
            lines.append(f"{'checkpoint':<14} {ckpt.path} ({ckpt.model_type}, img_size {ckpt.img_size}, step "
                         f"{ckpt.step}, sha256 {ckpt.sha256[:12]})")
        lines.append(f"{'device':<14} {self.device.device} ({self.device.reason}), {self.precision}")
        for request in self.splits:
            chosen = self.selections.get(request.split)
            if chosen is None:
                lines.append(f"{request.split:<14} flower102_synthetic, not generated yet: the run generates it "
                             f"once into {synthetic_root_path()}")
            else:
                lines.append(f"{request.split:<14} {len(chosen.image_ids)} images from {chosen.root} "
                             f"({chosen.subset}); ids sha256 {chosen.ids_sha256[:12]}")
        if self.data:
            lines.append(f"{'data':<14} {self.data}")
        if isinstance(config, TrainConfig):
            lines.append(f"{'weights':<14} {self.weights}")
            lines.append(f"{'model':<14} {config.model_type} at {config.img_size} px; {config.num_steps} steps of "
                         f"batch {config.train_batch_size}, lr {config.learning_rate}, warmup "
                         f"{config.warmup_steps}, {config.decay_type} decay")
            if config.world_size > 1:
                world = world_facts(config, self.device.device)
                lines.append(f"{'processes':<14} {config.nproc_per_node} on each of {config.nnodes} machine(s) "
                             f"({world['backend']}), {world['per_rank_batch']} samples of every step each; rank 0 "
                             "writes the run")
        lines += [f"{'note':<14} {note}" for note in self.notes]
        lines += [f"{label:<14} {text}" for label, text in (extra or {}).items()]
        lines.append(f"{'writes':<14} {self.layout.run_dir} and {self.layout.tb_dir}")
        head = f"Plan for flowerkit {self.flow} '{config.name}' (dry run: nothing is written)"
        return "\n".join([head, *(f"  {line}" for line in lines)])


def split_requests(config: RunConfig) -> list[SplitRequest]:
    """The one mapping of a run onto splits, subsets and batch sizes."""
    if isinstance(config, TrainConfig):
        return [SplitRequest("train", config.tiny_train_subset, config.train_batch_size),
                SplitRequest("val", config.tiny_infer_subset, config.eval_batch_size)]
    assert isinstance(config, EvalConfig)
    return [SplitRequest(config.split, config.tiny_infer_subset, config.eval_batch_size)]


def select(config: RunConfig, request: SplitRequest) -> Selection:
    return select_split(config.dataset, config.data_root, request.split, request.subset, request.batch_size)


def check_output_writable(config: RunConfig) -> None:
    """The run's folders (run dir, TensorBoard, FiftyOne) can be created and written."""
    layout = config.layout
    for what, path in ((f"--output_dir {config.output_dir}", layout.run_dir), (f"--tb_dir {layout.tb_dir}",
                       layout.tb_dir), (f"--fiftyone_dir {layout.fiftyone_dir}", layout.fiftyone_dir)):
        check_writable_folder(path, what, "Point it at a folder you can write to.")


def check_cache_writable(config: RunConfig) -> None:
    """The decoded-pixel cache and the synthetic dataset live in the cache folder."""
    if config.data_pipeline == "cached" or config.dataset == "flower102_synthetic":
        root = cache_root()
        check_writable_folder(root, f"The cache folder {root}", "Set FLOWERKIT_CACHE_DIR to a writable folder "
                              "(or use --data_pipeline pil with --dataset flower102, which need no cache).")


def prepare_plan(flow: str, config: RunConfig, resume: bool) -> RunPlan:
    """Validate everything the run needs and resolve it; raises a FlowerkitError, writing nothing."""
    check_claimable(config, resume)
    check_output_writable(config)
    check_cache_writable(config)
    checkpoint, state, notes = None, None, []
    if isinstance(config, EvalConfig):
        config, checkpoint, state = _read_eval_checkpoint(config)
        if config.pretrained is not None:
            notes.append("--pretrained is ignored: the checkpoint holds the weights")
    device = detect_device(config.device, config.prefer_mps)
    if isinstance(config, TrainConfig):
        check_world(config, device)
    plan = RunPlan(flow, config, resume, device, resolve_precision(config.precision, device),
                   split_requests(config), checkpoint=checkpoint, notes=notes, _checkpoint_state=state)
    if not (config.dataset == "flower102_synthetic" and not (synthetic_root_path() / "setid.mat").is_file()):
        plan.selections = {request.split: select(config, request) for request in plan.splits}
    if config.dataset == "flower102":
        from flowerkit.data.check import plan_line

        plan.data = plan_line(config.data_root)
    if isinstance(config, TrainConfig):
        plan.weights = describe_pretrained(config)
    return plan


def check_world(config: TrainConfig, device: DeviceChoice) -> None:
    """The process layout fits this machine, and this is the machine that runs the flow."""
    if config.node_rank != 0:
        raise ConfigError(f"--node_rank {config.node_rank}: only the --node_rank 0 machine runs the flow and writes "
                          "the run. On the other machines run the same `flowerkit train` command with their "
                          "--node_rank: it trains its share without a flow and writes nothing.")
    check_world_device(config.world_size, config.nproc_per_node, device.type)


def _read_eval_checkpoint(config: EvalConfig) -> tuple[EvalConfig, CheckpointInfo, dict[str, Any]]:
    """Read the checkpoint once: its bytes give both the sha256 and the state."""
    path = Path(config.checkpoint).expanduser()
    try:
        data = path.read_bytes()
    except OSError:
        data = None  # load_checkpoint says what is wrong with the path
    state = load_checkpoint(path, map_location="cpu", data=data)
    model_type, img_size = checkpoint_model(state, path, config.model_type, config.img_size)
    try:
        check_model(model_type, img_size)
    except ValueError as exc:
        raise ConfigError(f"--checkpoint {path} records a model flowerkit cannot build: {exc}.") from None
    try:
        check_cache_size(config.cache_size, img_size)  # img_size may come from the checkpoint only now
    except ValueError as exc:
        raise ConfigError(f"Invalid configuration for the checkpoint {path}: {exc}.") from None
    assert data is not None  # load_checkpoint raised for a missing file
    info = CheckpointInfo(path, hashlib.sha256(data).hexdigest(), model_type, img_size, int(state["step"]))
    return config.model_copy(update={"model_type": model_type, "img_size": img_size}), info, state


def describe_pretrained(config: TrainConfig) -> str:
    """Resolve --pretrained (no download) and check that it fits the model; a missing file means random init."""
    from flowerkit.models.weights import check_weights, resolve_weights

    source = resolve_weights(config.pretrained, download=False)
    check_weights(source, config.model_type, config.img_size)
    return source.describe()


# The CLI hands its plan to the flow it starts in the same process; a flow parameter cannot carry it
# (Prefect renders parameters as the deployment's form, and a plan holds a loaded checkpoint).
_handed: ContextVar[RunPlan | None] = ContextVar("flowerkit_handed_plan", default=None)


@contextlib.contextmanager
def handing(plan: RunPlan) -> Iterator[None]:
    token = _handed.set(plan)
    try:
        yield
    finally:
        _handed.reset(token)


def plan_for_flow(flow: str, config: RunConfig, resume: bool) -> RunPlan:
    """The plan the CLI handed over for exactly this run, or a new one (deployment runs)."""
    plan = _handed.get()
    if (plan is not None and plan.flow == flow and plan.resume == resume
            and plan.config.config_hash() == _resolved(config, plan).config_hash()):
        return plan
    return prepare_plan(flow, config, resume)


def _resolved(config: RunConfig, plan: RunPlan) -> RunConfig:
    """``config`` with what the plan filled in from the checkpoint (eval runs), for comparison."""
    if isinstance(config, EvalConfig) and isinstance(plan.config, EvalConfig):
        return config.model_copy(update={"model_type": plan.config.model_type, "img_size": plan.config.img_size})
    return config

