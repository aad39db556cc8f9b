"""Validate everything a run needs before anything is written or any server is started.

The CLI calls this before the flow (so a bad input fails in a second, with one paragraph) and prints it
for ``--dry_run``; the flows repeat the same checks through their tasks, since Prefect deployments start
them without the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flowerkit.config import EvalConfig, RunConfig, TrainConfig
from flowerkit.data.selection import select_split, synthetic_root_path
from flowerkit.device import detect_device, resolve_precision
from flowerkit.engine.checkpoint import checkpoint_model, load_checkpoint
from flowerkit.rundir import check_claimable


@dataclass
class Plan:
    flow: str
    config: RunConfig
    lines: list[str] = field(default_factory=list)

    def describe(self) -> str:
        head = f"Plan for flowerkit {self.flow} '{self.config.name}' (dry run: nothing is written)"
        return "\n".join([head, *(f"  {line}" for line in self.lines)])


def resolve_eval_config(config: EvalConfig) -> tuple[EvalConfig, int]:
    """Check the checkpoint and fill model type and image size from it; returns the config and its step."""
    state = load_checkpoint(config.checkpoint, map_location="cpu")
    model_type, img_size = checkpoint_model(state, config.checkpoint, config.model_type, config.img_size)
    return config.model_copy(update={"model_type": model_type, "img_size": img_size}), int(state["step"])


def check_pretrained(config: TrainConfig) -> str:
    """Resolve --pretrained (no download) and check that it fits the model; a missing file means random init."""
    from flowerkit.models.weights import check_weights, resolve_weights

    source = resolve_weights(config.pretrained, download=False)
    check_weights(source, config.model_type, config.img_size)
    return source.describe()


def splits_of(config: RunConfig) -> list[tuple[str, str | None, int]]:
    if isinstance(config, TrainConfig):
        return [("train", config.tiny_train_subset, config.train_batch_size),
                ("val", config.tiny_infer_subset, config.eval_batch_size)]
    return [(config.split, config.tiny_infer_subset, config.eval_batch_size)]


def preflight(flow: str, config: RunConfig, resume: bool) -> Plan:
    check_claimable(config, resume)
    plan = Plan(flow, config, [f"{'config hash':<14} {config.config_hash()}"])
    if isinstance(config, EvalConfig):
        config, step = resolve_eval_config(config)
        plan.config = config
        plan.lines.append(f"{'checkpoint':<14} {config.checkpoint} ({config.model_type}, img_size "
                          f"{config.img_size}, step {step})")
        if config.pretrained is not None:
            plan.lines.append(f"{'note':<14} --pretrained is ignored: the checkpoint holds the weights")
    device = detect_device(config.device, config.prefer_mps)
    plan.lines.append(f"{'device':<14} {device.device} ({device.reason}), "
                      f"{resolve_precision(config.precision, device)}")
    if config.dataset == "flower102_synthetic" and not (synthetic_root_path() / "setid.mat").is_file():
        plan.lines.append(f"{'dataset':<14} flower102_synthetic, not generated yet: the run generates it once "
                          f"into {synthetic_root_path()}")
    else:
        for split, subset, batch in splits_of(config):
            sel = select_split(config.dataset, config.data_root, split, subset, batch)
            plan.lines.append(f"{split:<14} {len(sel.image_ids)} images from {sel.root} ({sel.subset}); ids "
                              f"sha256 {sel.ids_sha256[:12]}")
        if config.dataset == "flower102":
            from flowerkit.data.check import plan_line

            plan.lines.append(f"{'data':<14} {plan_line(config.data_root)}")
    if isinstance(config, TrainConfig):
        plan.lines.append(f"{'weights':<14} {check_pretrained(config)}")
        plan.lines.append(f"{'model':<14} {config.model_type} at {config.img_size} px; {config.num_steps} steps of "
                          f"batch {config.train_batch_size}, lr {config.learning_rate}, warmup "
                          f"{config.warmup_steps}, {config.decay_type} decay")
    plan.lines.append(f"{'writes':<14} {config.layout.run_dir} and {config.layout.tb_dir}")
    return plan
