"""Prepare a run's plan once, validating everything it needs before anything is written.

``prepare_plan`` checks that the run can be claimed and its folders written, reads an eval run's checkpoint
(its sha256, model and step), picks the device and precision, checks the process layout, selects the images
of every split the run will read and resolves the pretrained weights (no download). A bad input raises a
FlowerkitError here, in a second, with one paragraph; nothing is written.

Who prepares it: the CLI (before Prefect starts, so ``--dry_run`` and a bad flag cost no server start), the
dashboard's form (to validate before it launches the CLI), and a Prefect deployment's flow run (which does
not go through the CLI). Each prepares it once and hands it on; see docs/architecture.md.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from flowerkit.run.config import (
    CONFIG_CLASSES,
    EvalConfig,
    PredictRunConfig,
    RunConfig,
    TrainConfig,
    describe_validation_error,
)
from flowerkit.data.selection import synthetic_root_path
from flowerkit.device import detect_device, resolve_precision
from flowerkit.engine.checkpoint import checkpoint_model, read_checkpoint
from flowerkit.engine.distributed import execution_of
from flowerkit.engine.world import check_world_device
from flowerkit.errors import ConfigError
from flowerkit.io.inputs import read_utf8
from flowerkit.io.paths import cache_root
from flowerkit.models.weights import WeightsSource
from flowerkit.run.plan import CheckpointInfo, Execution, Plan, RunPlan, select, split_requests
from flowerkit.run.rundir import check_claimable
from flowerkit.io.writable import check_writable_folder


def prepare_plan(flow: str, config: RunConfig, resume: bool) -> RunPlan:
    """Validate everything the run needs and resolve it; raises a FlowerkitError, writing nothing."""
    check_claimable(config, resume)
    check_output_writable(config)
    check_cache_writable(config)
    checkpoint, notes = None, ()
    if isinstance(config, EvalConfig):
        config, checkpoint = _read_eval_checkpoint(config)
        if config.pretrained is not None:
            notes = ("--pretrained is ignored: the checkpoint holds the weights",)
    device = detect_device(config.device, config.prefer_mps)
    if isinstance(config, TrainConfig):
        _check_runs_the_flow(config)
        check_world_device(config.world_size, config.nproc_per_node, device.type)
    weights, warnings = plan_weights(config) if isinstance(config, TrainConfig) else (None, ())
    data = None
    if config.dataset == "flower102":
        from flowerkit.data.check import plan_line

        data = plan_line(config.data_root)
    return RunPlan(flow=flow, config=config, resume=resume, device=device,
                   precision=resolve_precision(config.precision, device), splits=split_requests(config),
                   selections=_selections(config), checkpoint=checkpoint,
                   execution=execution_of(config) if isinstance(config, TrainConfig) else Execution(),
                   weights=weights, warnings=warnings, data=data,
                   notes=notes)


def plan_for(flow: str, config: RunConfig | dict, resume: bool, plan: RunPlan | None) -> RunPlan:
    """The plan a flow runs: the one a front end built from ``config`` and handed on, or, for a deployment's
    flow run (whose form sends only the config and ``resume``), the plan built here from those parameters."""
    if plan is not None:
        return plan
    if isinstance(config, dict):  # a deployment's parameters, as JSON
        try:
            config = CONFIG_CLASSES[flow].model_validate(config)
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(exc)) from None
    return prepare_plan(flow, config, resume)


# A plan lists every selected image id: the full test split (6149 ids) is about 60 KB.
PLAN_MAX_BYTES = 16 * 1024 * 1024


def load_plan(path: Path) -> Plan:
    """A run's ``plan.json`` as the plan it was written from (``Plan.to_json``)."""
    import json

    from pydantic import TypeAdapter

    from flowerkit.predict.run import PredictRunPlan

    hint = "Give the plan.json of a run, or one the dashboard or a sweep wrote."
    text = read_utf8(Path(path), "The plan", hint, max_bytes=PLAN_MAX_BYTES)
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"The plan {path} is not JSON ({exc}). {hint}") from None
    try:
        flow = data["flow"]
        config_class = PredictRunConfig if flow == "predict" else CONFIG_CLASSES[flow]
        data["config"] = config_class.model_validate(data["config"])
        return TypeAdapter(PredictRunPlan if flow == "predict" else RunPlan).validate_python(data)
    except (TypeError, KeyError, AttributeError, ValidationError) as exc:
        what = describe_validation_error(exc) if isinstance(exc, ValidationError) else f"no {exc}"
        raise ConfigError(f"The plan {path} is not a flowerkit plan ({what}). Give a plan.json that flowerkit "
                          "wrote, or plan the run again with its options.") from None


def prepare_share(config: TrainConfig) -> RunPlan:
    """The plan of a process that only trains its share of a distributed run (torchrun's ranks above 0, a
    machine with --node_rank above 0): the same device, layout checks and images as rank 0's, and no claim
    on the run directory, which rank 0 alone writes."""
    device = detect_device(config.device, config.prefer_mps)
    check_world_device(config.world_size, config.nproc_per_node, device.type)
    requests = tuple(r for r in split_requests(config) if r.split in ("train", "val"))
    return RunPlan(flow="train", config=config, resume=False, device=device,
                   precision=resolve_precision(config.precision, device), splits=requests,
                   selections={r.split: select(config, r) for r in requests}, execution=execution_of(config),
                   role="share")  # no weights: rank 0's reach every process when DDP wraps the model


def _selections(config: RunConfig) -> dict:
    """Every split's images, checked now; none yet when the synthetic set is still to be generated (the
    ``load_subset`` task generates it once, then selects)."""
    if config.dataset == "flower102_synthetic" and not (synthetic_root_path() / "setid.mat").is_file():
        return {}
    return {request.split: select(config, request) for request in split_requests(config)}


def describe_plan(plan: RunPlan, extra: dict[str, str] | None = None) -> str:
    """The ``--dry_run`` text: what the run would do (``extra``: lines a front end adds), and that nothing
    was written."""
    config = plan.config
    lines = [f"{'config hash':<14} {config.config_hash()}"]
    if plan.checkpoint is not None:
        ckpt = plan.checkpoint
        lines.append(f"{'checkpoint':<14} {ckpt.path} ({ckpt.model_type}, img_size {ckpt.img_size}, step "
                     f"{ckpt.step}, sha256 {ckpt.sha256[:12]})")
    lines.append(f"{'device':<14} {plan.device.device} ({plan.device.reason}), {plan.precision}")
    for request in plan.splits:
        chosen = plan.selections.get(request.split)
        if chosen is None:
            lines.append(f"{request.split:<14} flower102_synthetic, not generated yet: the run generates it "
                         f"once into {synthetic_root_path()}")
        else:
            lines.append(f"{request.split:<14} {len(chosen.image_ids)} images from {chosen.root} "
                         f"({chosen.subset}); ids sha256 {chosen.ids_sha256[:12]}")
    if plan.data:
        lines.append(f"{'data':<14} {plan.data}")
    if isinstance(config, TrainConfig):
        lines.append(f"{'weights':<14} {plan.weights.describe() if plan.weights else 'random init'}")
        lines.append(f"{'model':<14} {config.model_type} at {config.img_size} px; {config.num_steps} steps of "
                     f"batch {config.train_batch_size}, lr {config.learning_rate}, warmup "
                     f"{config.warmup_steps}, {config.decay_type} decay")
        if config.world_size > 1:
            world = plan.process_facts()
            lines.append(f"{'processes':<14} {config.nproc_per_node} on each of {config.nnodes} machine(s) "
                         f"({world['backend']}), {world['per_rank_batch']} samples of every step each; rank 0 "
                         "writes the run")
    lines += [f"{'note':<14} {note}" for note in plan.notes]
    lines += [f"{'warning':<14} {warning}" for warning in plan.warnings]
    lines += [f"{label:<14} {text}" for label, text in (extra or {}).items()]
    lines.append(f"{'writes':<14} {plan.layout.run_dir} and {plan.layout.tb_dir}")
    head = f"Plan for flowerkit {plan.flow} '{config.name}' (dry run: nothing is written)"
    return "\n".join([head, *(f"  {line}" for line in lines)])


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


def _check_runs_the_flow(config: TrainConfig) -> None:
    """Only the --node_rank 0 machine runs the flow; the others train their share (``prepare_share``)."""
    if config.node_rank != 0:
        raise ConfigError(f"--node_rank {config.node_rank}: only the --node_rank 0 machine runs the flow and writes "
                          "the run. On the other machines run the same `flowerkit train` command with their "
                          "--node_rank: it trains its share without a flow and writes nothing.")


def _read_eval_checkpoint(config: EvalConfig) -> tuple[EvalConfig, CheckpointInfo]:
    """Read the checkpoint for its sha256, model and step; the model it records enters the config
    through the config's own validation (the one place model and cache size are checked)."""
    path = Path(config.checkpoint).expanduser()
    read = read_checkpoint(path)  # its hash and its model; the evaluation reads it again and checks the hash
    state = read.state
    model_type, img_size = checkpoint_model(state, path, config.model_type, config.img_size)
    try:
        config = EvalConfig.model_validate(config.model_dump() | {"model_type": model_type, "img_size": img_size})
    except ValidationError as exc:
        origin = f"the checkpoint {path}"
        raise ConfigError(describe_validation_error(exc, {"model_type": origin, "img_size": origin})) from None
    return config, CheckpointInfo(path, read.sha256, model_type, img_size, int(state["step"]))


def plan_weights(config: TrainConfig) -> tuple[WeightsSource, tuple[str, ...]]:
    """Resolve --pretrained (no download) and check that it fits the model, reading the file once for its
    sha256 and its shapes; a missing file means random init, with a warning the run logs."""
    from flowerkit.models.weights import HUB_PREFIX, check_weights, missing_weights_warning, resolve_weights

    source = resolve_weights(config.pretrained, download=False, warn=False)
    missing = source.format == "none" and source.spec is not None and not source.spec.startswith(HUB_PREFIX)
    warnings = (missing_weights_warning(Path(source.spec).expanduser()),) if missing else ()
    return check_weights(source, config.model_type, config.img_size), warnings


def share_description(plan: RunPlan) -> str:
    """Who this process is in the run it trains a share of (for its one line of output)."""
    where, config = plan.execution, plan.train_config
    return (f"rank {where.rank} of {where.world_size}" if where.launcher == "torchrun"
            else f"machine {config.node_rank} of {config.nnodes} (--node_rank {config.node_rank})")
