"""The one validated configuration of a run.

``TrainConfig`` and ``EvalConfig`` feed the CLI options (``flowerkit/cli``), the Prefect deployment
parameters (the flows take them as their single parameter, so the Prefect UI renders their schema as a
form) and the dashboard's launch form. Sources, highest precedence first: explicit arguments (CLI flags,
Prefect parameters), a YAML file given with ``--config``, ``FLOWERKIT_*`` environment variables, a ``.env``
file in the working directory, built-in defaults.
"""

from __future__ import annotations

import hashlib
import os
from contextvars import ContextVar
from os import PathLike
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from flowerkit.errors import ConfigError
from flowerkit.io.inputs import USER_FILE_MAX_BYTES, read_utf8
from flowerkit.run.layout import SWEEPS_ROOT, TB_ROOT, RunLayout
from flowerkit.models.configs import MODEL_CONFIGS
from flowerkit.models.weights import HUB_PREFIX
from flowerkit.optional import MLFLOW

_yaml_file: ContextVar[Path | None] = ContextVar("flowerkit_yaml_file", default=None)

DEFAULT_WARMUP_CAP = 500  # the original ViT-pytorch recipe's warmup; shortened for short runs
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"  # a run name is one plain folder name, never a path
ENV_FILE = ".env"
ENV_PREFIX = "FLOWERKIT_"
# numpy's seed range (np.random.seed takes 0..2**32-1); torch and Python accept it too, so one range holds.
SEED_MAX = 2**32 - 1
# Every other integer option: beyond int32 no setting is meaningful, and torch/numpy overflow on some.
INT_MAX = 2**31 - 1
MAX_IMG_SIZE = 4096  # (4096/16)**2 = 65,536 tokens: far beyond any ViT recipe, still a finite allocation
MAX_RETENTION_DAYS = 36500  # 100 years: the expiry date must stay a representable date


def _opt(description: str, group: str, aliases: tuple[str, ...] = (), **kwargs: Any) -> Any:
    """A config field with the help text and CLI group used by every front end.

    ``aliases`` are older names of the option that every source still accepts (CLI flags, YAML keys,
    ``FLOWERKIT_*`` variables, Prefect parameters); the canonical name wins when both are given at one level.
    """
    extra: dict[str, Any] = {"group": group} | ({"aliases": list(aliases)} if aliases else {})
    return Field(description=description, json_schema_extra=extra, **kwargs)


def field_aliases(cls: type[BaseSettings]) -> dict[str, str]:
    """Alias -> canonical field name, from the fields' ``aliases``."""
    return {alias: name for name, field in cls.model_fields.items()
            for alias in (field.json_schema_extra or {}).get("aliases", [])}


class _AliasedSource(PydanticBaseSettingsSource):
    """Wraps one settings source so that values given under an alias land on the canonical field.

    Done per source, so an alias keeps its source's precedence (an alias on the CLI beats the canonical
    name in YAML). Environment and .env sources only report known fields, so aliases are looked up in
    their raw variables.
    """

    def __init__(self, settings_cls: type[BaseSettings], inner: PydanticBaseSettingsSource) -> None:
        super().__init__(settings_cls)
        self.inner = inner

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.inner.get_field_value(field, field_name)

    def __call__(self) -> dict[str, Any]:
        data = dict(self.inner())
        env_vars = getattr(self.inner, "env_vars", None)
        prefix = self.settings_cls.model_config.get("env_prefix", "")
        for alias, name in field_aliases(self.settings_cls).items():
            if env_vars is not None:
                value = env_vars.get(f"{prefix}{alias}".lower(), env_vars.get(f"{prefix}{alias}"))
            else:
                value = data.pop(alias, None)
            if value is not None:
                data.setdefault(name, value)
        return data


def check_run_name(value: str) -> str:
    """A run name that is not one of OUTPUT_DIR's reserved folders."""
    if value == TB_ROOT:
        raise ValueError(f"'{TB_ROOT}' is reserved for the TensorBoard folder; choose another run name")
    if value == SWEEPS_ROOT:
        raise ValueError(f"'{SWEEPS_ROOT}' is reserved for the sweeps' folder; choose another run name")
    return value


class RunConfig(BaseSettings):
    """Settings shared by train and eval runs."""

    model_config = SettingsConfigDict(
        env_prefix="FLOWERKIT_", env_file=ENV_FILE, env_file_encoding="utf-8", extra="ignore",
        validate_default=True, protected_namespaces=(),
        allow_inf_nan=False,  # inf/nan (and 1e999, which parses as inf) are never a usable setting
    )

    name: str = _opt("Run name: the run's directory is OUTPUT_DIR/NAME and its TensorBoard folder OUTPUT_DIR/tb/NAME.",
                     "run", pattern=NAME_PATTERN)
    dataset: Literal["flower102", "flower102_synthetic"] = _opt(
        "flower102: the official files under --data_root. flower102_synthetic: a generated look-alike (no download).",
        "data", default="flower102")
    data_root: Path | None = _opt(
        "Folder holding jpg/, imagelabels.mat and setid.mat (or a parent holding flowers-102/).", "data", default=None)
    eval_batch_size: int = _opt("Evaluation batch size.", "data", default=64, gt=0)
    tiny_infer_subset: str | None = _opt(
        "Evaluate a tiny subset: a built-in name (flower102_tiny) or a manifest file; capped at 2 batches.",
        "data", default=None)
    data_pipeline: Literal["cached", "pil"] = _opt(
        "cached: decode each image once into a uint8 cache, augment batched on the device. pil: decode every time.",
        "data", default="cached")
    num_workers: int = _opt("DataLoader worker processes (the pil pipeline and cache building).", "data", default=0,
                            ge=0)
    persistent_workers: bool = _opt("Keep DataLoader workers alive between epochs (needs num_workers > 0).", "data",
                                    default=False)
    cache_size: int | None = _opt(
        "Short side in pixels of the decoded-pixel cache (--data_pipeline cached), at least --img_size "
        "(default: 2 x --img_size, at most the images' own short side: the size measured closest to the pil "
        "pipeline, docs/performance.md).", "data", default=None, ge=16, le=MAX_IMG_SIZE)
    pretrained: str | None = _opt(
        "Weights to fine-tune from: a Google .npz file, a timm/Hugging Face .safetensors or .bin file or a folder "
        "holding one, or a Hub id hf-hub:ORG/NAME (missing local file: warning and random init).", "model",
        aliases=("pretrained_dir",), default=None)
    seed: int = _opt("Random seed for Python, NumPy, torch and the data order.", "execution", default=42, ge=0,
                     le=SEED_MAX)
    device: Literal["auto", "cpu", "cuda", "mps"] = _opt(
        "auto picks CUDA, then MPS, then CPU; an explicit device that is absent is an error.", "execution",
        default="auto")
    prefer_mps: bool = _opt("Try Apple MPS before CUDA when --device is auto.", "execution", default=False)
    precision: Literal["auto", "fp32", "bf16"] = _opt(
        "auto: bf16 autocast on CUDA GPUs that support it, fp32 elsewhere (always fp32 on CPU and MPS).",
        "execution", default="auto")
    compile: bool = _opt("Compile the model with torch.compile (CUDA).", "execution", default=False)
    deterministic: bool = _opt("Use torch's deterministic algorithms where the device supports them.", "execution",
                               default=False)
    output_dir: Path = _opt("Root folder of all runs.", "output", default=Path("output"))
    retention_days: int = _opt("How long the run's artifacts are kept (at least 90 days).", "output", default=90,
                               ge=90, le=MAX_RETENTION_DAYS)
    export_logits: bool = _opt("Store every sample's logits in predictions.jsonl.", "output", default=False)
    tb_dir: Path | None = _opt("TensorBoard folder of the run (default: OUTPUT_DIR/tb/NAME).", "output", default=None)
    fiftyone_dir: Path | None = _opt("FiftyOne output folder of the run (default: OUTPUT_DIR/NAME/fiftyone).",
                                     "output", default=None)
    tracker: Literal["none", "mlflow"] = _opt(
        "none, or mlflow: also send params, metrics, artifacts and the model to the MLflow server named by "
        "MLFLOW_TRACKING_URI (needs the mlflow extra: pip install 'flowerkit[mlflow]').", "tracking",
        default="none")
    mlflow_experiment: str = _opt("MLflow experiment of the run (MLFLOW_EXPERIMENT_NAME is honoured).", "tracking",
                                  default="flowerkit", min_length=1)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_file = _yaml_file.get()
        middle = (YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file),) if yaml_file else ()
        sources = (init_settings, *middle, env_settings, dotenv_settings)
        return tuple(_AliasedSource(settings_cls, source) for source in sources)

    @field_validator("*", mode="after")
    @classmethod
    def _int_in_range(cls, value: Any, info: ValidationInfo) -> Any:
        if info.field_name != "seed" and isinstance(value, int) and not isinstance(value, bool) and abs(value) > INT_MAX:
            raise ValueError(f"must lie within -{INT_MAX}..{INT_MAX}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _mlflow_experiment_from_env(cls, data: Any) -> Any:
        # MLflow's own variable ranks just above the default: any flowerkit source (flag, YAML,
        # FLOWERKIT_MLFLOW_EXPERIMENT, .env) names the experiment first.
        env = os.environ.get("MLFLOW_EXPERIMENT_NAME")
        if env and isinstance(data, dict) and data.get("mlflow_experiment") is None:
            data = {**data, "mlflow_experiment": env}
        return data

    @field_validator("tracker")
    @classmethod
    def _tracker_installed(cls, value: str) -> str:
        # Checked without importing MLflow (slow); the core runs without the extra.
        if value == "mlflow" and not MLFLOW.installed():
            raise ValueError(f"{MLFLOW.missing()}, or use --tracker none")
        return value

    @field_validator("name")
    @classmethod
    def _name_not_reserved(cls, value: str) -> str:
        return check_run_name(value)

    @field_validator("pretrained", mode="before")
    @classmethod
    def _path_to_text(cls, value: Any) -> Any:
        # A Path is welcome (Python and Prefect callers); the field is text because Hub ids are not paths.
        return str(value) if isinstance(value, PathLike) else value

    @field_validator("pretrained")
    @classmethod
    def _hub_id_well_formed(cls, value: str | None) -> str | None:
        # Checked where the value enters, by the Hub's own rule: a malformed id reached hf_hub_download and
        # ended as exit 1 with HFValidationError.
        if value is not None and value.startswith(HUB_PREFIX):
            check_hub_id(value)
        return value

    @model_validator(mode="after")
    def _check_workers(self) -> RunConfig:
        if self.persistent_workers and self.num_workers == 0:
            raise ValueError("persistent_workers needs num_workers > 0")
        return self

    @property
    def layout(self) -> RunLayout:
        """Every path this run writes (``flowerkit.run.layout``)."""
        return RunLayout.for_config(self)

    # Where this process meets the others of a distributed run, not what the run computes: left out of
    # config_resolved.yaml and the config hash, so a resume may meet at another address or port.
    PLACEMENT: ClassVar[tuple[str, ...]] = ()

    def resolved_yaml(self) -> str:
        """Every value after all sources are merged (but ``PLACEMENT``), in declaration order: the same inputs give
        the same bytes."""
        return yaml.safe_dump(self.model_dump(mode="json", exclude=set(self.PLACEMENT)), sort_keys=False,
                              allow_unicode=True)

    def config_hash(self) -> str:
        return hashlib.sha256(self.resolved_yaml().encode()).hexdigest()


class TrainConfig(RunConfig):
    """A training run: fine-tune (or train from scratch), then evaluate and export."""

    model_type: str = _opt("Model config: testing, ViT-Ti_16, ViT-S_16, ViT-B_16, ViT-B_32, ViT-L_16, ViT-L_32, "
                           "ViT-H_14.", "model", default="ViT-B_16")
    img_size: int = _opt("Input resolution (a multiple of the patch size).", "model", default=224, gt=0,
                         le=MAX_IMG_SIZE)
    tiny_train_subset: str | None = _opt(
        "Train on a tiny subset: a built-in name (flower102_tiny) or a manifest file; capped at 2 batches.",
        "data", default=None)
    train_batch_size: int = _opt("Effective training batch size (split over accumulation steps).", "training",
                                 default=512, gt=0)
    num_steps: int = _opt("Total optimizer steps.", "training", default=10000, gt=0)
    eval_every: int = _opt("Evaluate (and checkpoint) every N steps.", "training", default=100, gt=0)
    learning_rate: float = _opt("Peak learning rate (the head's, under --layer_decay).", "training", default=3e-2, gt=0)
    weight_decay: float = _opt("Weight decay.", "training", default=0.0, ge=0)
    warmup_steps: int | None = _opt(
        f"Linear warmup steps (default: num_steps/10, at most {DEFAULT_WARMUP_CAP}).", "training", default=None, ge=0)
    decay_type: Literal["cosine", "linear"] = _opt("Learning-rate decay after warmup.", "training", default="cosine")
    max_grad_norm: float = _opt("Gradient clipping norm.", "training", default=1.0, gt=0)
    gradient_accumulation_steps: int = _opt("Micro-batches accumulated per optimizer step.", "training", default=1,
                                            gt=0)
    optimizer: Literal["sgd", "adamw"] = _opt(
        "sgd: momentum 0.9 (the ViT paper's fine-tuning). adamw: AdamW (betas 0.9, 0.999). Either way "
        "--weight_decay skips norms, biases, the position embedding and the class token.", "recipe", default="sgd")
    layer_decay: float = _opt("Layer-wise learning-rate decay: block i of L learns at F**(L-i) times the head's rate "
                              "(1.0: off).", "recipe", default=1.0, gt=0, le=1, allow_inf_nan=False)
    label_smoothing: float = _opt("Label smoothing of the training loss.", "recipe", default=0.0, ge=0, lt=1,
                                  allow_inf_nan=False)
    mixup_alpha: float = _opt("MixUp Beta(alpha, alpha) on training batches (0: off; with --cutmix_alpha, one of "
                              "the two per batch).", "recipe", default=0.0, ge=0, allow_inf_nan=False)
    cutmix_alpha: float = _opt("CutMix Beta(alpha, alpha) on training batches (0: off).", "recipe", default=0.0,
                               ge=0, allow_inf_nan=False)
    ema_decay: float = _opt("Exponential moving average of the weights, evaluated and checkpointed beside the "
                            "model; --monitor considers both (0: off).", "recipe", default=0.0, ge=0, lt=1,
                            allow_inf_nan=False)
    monitor: Literal["val_accuracy", "val_loss", "val_macro_f1"] = _opt(
        "Validation metric that selects checkpoints/best.bin (ties keep the earlier step); the final evaluation, "
        "predictions and summary are the selected checkpoint's.", "selection", default="val_accuracy")
    save_top_k: int = _opt("Also keep the N best checkpoints as checkpoints/best-<step>.bin (0: only best.bin).",
                           "selection", default=0, ge=0)
    early_stop_patience: int | None = _opt(
        "Stop after N evaluations without improvement of --monitor (default: never).", "selection", default=None,
        gt=0)
    test_after: bool = _opt(
        "After training, evaluate the selected checkpoint once on the official test split (test_* artifacts; "
        "never used for selection).", "selection", default=False)
    nproc_per_node: int = _opt(
        "Training processes on this machine: one per GPU (NCCL), or CPU processes (gloo); above 1 they are "
        "launched with torch's elastic launcher and share every batch (1: this process trains).", "distributed",
        default=1, ge=1)
    nnodes: int = _opt("Machines that train together; run the same command on each, with its own --node_rank.",
                       "distributed", default=1, ge=1)
    node_rank: int = _opt("This machine's index among --nnodes: 0 runs the flow and writes the run, the others "
                          "only train.", "distributed", default=0, ge=0)
    master_addr: str = _opt("Address of the --node_rank 0 machine, where the machines' processes meet (one "
                            "machine: unused, a free local port is taken).", "distributed", default="127.0.0.1",
                            min_length=1)
    master_port: int = _opt("Port on --master_addr where the machines' processes meet.", "distributed",
                            default=29500, ge=1, le=65535)

    PLACEMENT: ClassVar[tuple[str, ...]] = ("node_rank", "master_addr", "master_port")

    @model_validator(mode="after")
    def _check_model(self) -> TrainConfig:
        check_model(self.model_type, self.img_size)
        check_cache_size(self.cache_size, self.img_size)
        return self

    @model_validator(mode="after")
    def _check_schedule(self) -> TrainConfig:
        if self.warmup_steps is None:
            self.warmup_steps = min(DEFAULT_WARMUP_CAP, self.num_steps // 10)
        if self.warmup_steps >= self.num_steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be below num_steps ({self.num_steps})")
        if self.train_batch_size % self.gradient_accumulation_steps:
            raise ValueError(
                f"train_batch_size ({self.train_batch_size}) must be divisible by gradient_accumulation_steps "
                f"({self.gradient_accumulation_steps})")
        return self

    @model_validator(mode="after")
    def _check_world(self) -> TrainConfig:
        if self.node_rank >= self.nnodes:
            raise ValueError(f"node_rank ({self.node_rank}) must be below nnodes ({self.nnodes})")
        if self.micro_batch_size % self.world_size:
            raise ValueError(
                f"train_batch_size / gradient_accumulation_steps ({self.micro_batch_size}) must be divisible by the "
                f"number of training processes, nproc_per_node x nnodes ({self.world_size}), so that each takes an "
                "equal share of every batch")
        return self

    @property
    def micro_batch_size(self) -> int:
        return self.train_batch_size // self.gradient_accumulation_steps

    @property
    def world_size(self) -> int:
        """How many processes train together."""
        return self.nproc_per_node * self.nnodes


class EvalConfig(RunConfig):
    """An eval-only run from a checkpoint: never trains."""

    checkpoint: Path = _opt("Checkpoint written by `flowerkit train`: a run's checkpoints/best.bin (the one "
                            "selected on validation) or checkpoints/ckpt.bin (the latest).", "model")
    split: Literal["val", "test", "train"] = _opt(
        "Split to evaluate: val is the official validation split (setid.mat 'valid').", "data", default="val")
    model_type: str | None = _opt("Model config (default: the checkpoint's; a conflict is an error).", "model",
                                  default=None)
    img_size: int | None = _opt("Input resolution (default: the checkpoint's; a conflict is an error).", "model",
                                default=None, gt=0, le=MAX_IMG_SIZE)


    @model_validator(mode="after")
    def _check_model(self) -> EvalConfig:
        if self.model_type is not None:
            check_model(self.model_type, self.img_size)
        check_cache_size(self.cache_size, self.img_size)
        return self


class PredictRunConfig(BaseModel):
    """A recorded predict run (``flowerkit predict ... --name NAME``, the ``flowerkit-predict`` deployment): score
    folders or image files with a training run's checkpoint and keep the rows under OUTPUT_DIR/NAME.

    Not a ``RunConfig``: a predict run reads no dataset, trains nothing and has no seed, so most of RunConfig's
    options would be accepted and ignored. It gives ``claim_run_dir`` what that needs: ``name``, ``output_dir``,
    ``retention_days``, ``layout``, ``resolved_yaml`` and ``config_hash``. Validated without the environment:
    a deployment's form and the CLI's flags are its only sources.
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    name: str = _opt("Run name: the rows, env stamp and record go to OUTPUT_DIR/NAME.", "run", pattern=NAME_PATTERN)
    inputs: list[str] = _opt("Folders (recursive) or image files to score; a deployment's form: one folder.",
                             "inputs", min_length=1)
    run: str | None = _opt("A training run under output_dir: its checkpoints/best.bin (else ckpt.bin).", "model",
                           default=None)
    checkpoint: Path | None = _opt("A checkpoint file written by flowerkit train (instead of run).", "model",
                                   default=None)
    output_dir: Path = _opt("Root folder of all runs (where run is looked up and NAME is written).", "output",
                            default=Path("output"))
    top_k: int = _opt("Classes listed per image, most probable first.", "output", default=5, gt=0, le=INT_MAX)
    min_confidence: float | None = _opt("Mark an image unknown when its top-1 probability is below this (0..1).",
                                        "output", default=None, ge=0, le=1)
    tta: bool = _opt("Average the logits of each image and its mirror image.", "execution", default=False)
    export_logits: bool = _opt("Include each image's logits in its row.", "output", default=False)
    batch_size: int = _opt("Images per model call.", "execution", default=32, gt=0, le=INT_MAX)
    device: Literal["auto", "cpu", "cuda", "mps"] = _opt("Device of the model.", "execution", default="auto")
    retention_days: int = _opt("How long the run's artifacts are kept (at least 90 days).", "output", default=90,
                               ge=90, le=MAX_RETENTION_DAYS)

    @field_validator("name")
    @classmethod
    def _name_not_reserved(cls, value: str) -> str:
        return check_run_name(value)

    @model_validator(mode="after")
    def _one_model(self) -> PredictRunConfig:
        if (self.run is None) == (self.checkpoint is None):
            raise ValueError("give exactly one model: run (--run, a training run's name) or checkpoint "
                             "(--checkpoint, a file)")
        return self

    @property
    def layout(self) -> RunLayout:
        return RunLayout.for_config(self)

    def resolved_yaml(self) -> str:
        """Every value in declaration order: the same options give the same bytes (and config hash)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)

    def config_hash(self) -> str:
        return hashlib.sha256(self.resolved_yaml().encode()).hexdigest()


def load_predict_config(values: dict[str, Any]) -> PredictRunConfig:
    """A PredictRunConfig from explicit values, or a ConfigError (exit 2) naming each bad option."""
    try:
        return PredictRunConfig(**values)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None


def check_model(model_type: str, img_size: int | None) -> None:
    """Raise ValueError (reported as ``--model_type``/``--img_size``) for an unknown or ill-fitting model."""
    if model_type not in MODEL_CONFIGS:
        raise ValueError(f"--model_type: unknown model type '{model_type}'; choose one of {', '.join(MODEL_CONFIGS)}")
    patch = MODEL_CONFIGS[model_type].patch_size
    if img_size is not None and img_size % patch:
        raise ValueError(f"--img_size {img_size} is not a multiple of {model_type}'s patch size ({patch})")


def check_hub_id(spec: str) -> None:
    """Raise ValueError unless ``spec`` is hf-hub:ORG/NAME[@REVISION] with a repo id the Hub accepts."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    repo_id, at, revision = spec.removeprefix(HUB_PREFIX).partition("@")
    try:
        validate_repo_id(repo_id)
        problem = "the revision after '@' is empty" if at and not revision.strip() else None
    except HFValidationError as exc:
        problem = str(exc).split("\n")[0].rstrip(".")
    if problem:
        raise ValueError(f"{spec!r} is not a Hub id ({problem}). Give hf-hub:ORG/NAME or hf-hub:ORG/NAME@REVISION, "
                         "e.g. hf-hub:timm/vit_base_patch16_224.augreg2_in21k_ft_in1k")


def check_cache_size(cache_size: int | None, img_size: int | None) -> None:
    """Raise ValueError for a pixel cache smaller than the input: it would upsample every image, crop or not."""
    if cache_size is not None and img_size is not None and cache_size < img_size:
        raise ValueError(f"--cache_size {cache_size} is below --img_size {img_size}; the cache must hold at least "
                         "the input resolution (leave --cache_size out for the default)")


CONFIG_CLASSES: dict[str, type[RunConfig]] = {"train": TrainConfig, "eval": EvalConfig}


def run_hparams(config: RunConfig, flow: str) -> dict[str, tuple[type, Any]]:
    """A run's hparams for TensorBoard's HParams dashboard: every option a train or eval run may have (each
    run writes the same list, as the dashboard reads the first one it finds, so train and eval runs share one
    table), with its type and this run's value as config_resolved.yaml holds it (``None`` where it has none)."""
    from flowerkit.fields import option_type

    values = {"flow": flow} | config.model_dump(mode="json", exclude=set(config.PLACEMENT))
    hparams: dict[str, tuple[type, Any]] = {"flow": (str, flow)}
    for cls in CONFIG_CLASSES.values():
        for name, field in cls.model_fields.items():
            if name not in cls.PLACEMENT:
                hparams[name] = (option_type(field.annotation), values.get(name))
    return hparams


def load_config(cls: type[RunConfig], overrides: dict[str, Any], config_file: Path | None = None) -> RunConfig:
    """Build a config from explicit overrides, an optional YAML file, the environment and ``.env``.

    Raises ConfigError (exit 2) naming the offending option and where its value came from, or
    MissingInputError for a missing YAML file.
    """
    yaml_data = _read_yaml_file(cls, config_file) if config_file is not None else {}
    env_file = Path(ENV_FILE)
    if env_file.is_file():
        read_utf8(env_file, "The .env file", max_bytes=USER_FILE_MAX_BYTES)
    token = _yaml_file.set(config_file)
    try:
        return cls(**overrides)
    except ValidationError as exc:
        sources = value_sources(cls, overrides, config_file, yaml_data)
        raise ConfigError(describe_validation_error(exc, sources)) from None
    finally:
        _yaml_file.reset(token)


def _read_yaml_file(cls: type[RunConfig], path: Path) -> dict[str, Any]:
    if path.is_dir():
        raise ConfigError(f"--config {path} is a directory; pass a YAML file of option values.")
    # A FIFO, a device or a huge file is refused before it is read (exit 2), never reported as missing.
    text = read_utf8(path, "The config file", "Pass an existing YAML file of option values to --config.",
                     max_bytes=USER_FILE_MAX_BYTES)
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"The config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"The config file {path} must hold a mapping of option names to values.")
    check_known_options(cls, data, f"The config file {path}")
    return data


def check_known_options(cls: type[RunConfig], names: Any, where: str, allowed: tuple[str, ...] = ()) -> None:
    """Raise ConfigError naming every key of ``names`` that is no option of ``cls`` (aliases and ``allowed``
    accepted): an unknown key would otherwise be dropped silently and the run would use the default."""
    unknown = sorted(set(map(str, names)) - set(cls.model_fields) - set(field_aliases(cls)) - set(allowed))
    if unknown:
        raise ConfigError(
            f"{where} has unknown option(s): {', '.join(unknown)}. "
            f"Known options: {', '.join(cls.model_fields)}.")


def environment_values(cls: type[BaseModel]) -> dict[str, Any]:
    """What FLOWERKIT_* variables and the .env file set for ``cls``'s options (the environment beats .env, as
    in ``load_config``): the value an option left out takes, which the dashboard's form shows as its default."""
    if not issubclass(cls, BaseSettings):
        return {}  # predict's options: no environment source
    from pydantic_settings import DotEnvSettingsSource, EnvSettingsSource

    found: dict[str, Any] = {}
    for source in (DotEnvSettingsSource(cls), EnvSettingsSource(cls)):
        found |= _AliasedSource(cls, source)()
    return found


def value_sources(cls: type[RunConfig], overrides: dict[str, Any], config_file: Path | None,
                  yaml_data: dict[str, Any]) -> dict[str, str]:
    """Where each explicitly set option came from, in words; the highest-precedence source wins."""
    from dotenv import dotenv_values  # pydantic-settings' own .env reader

    sources: dict[str, str] = {}
    env_file = Path(ENV_FILE)

    def from_environment(items: dict[str, Any], where: str) -> None:
        for key in items:  # matched case-insensitively, as pydantic-settings does
            name = key.lower().removeprefix(ENV_PREFIX.lower())
            if key.upper().startswith(ENV_PREFIX) and name in cls.model_fields:
                sources[name] = where.format(key=key)

    if env_file.is_file():
        from_environment(dotenv_values(env_file), f"the .env file {env_file.resolve()}")
    from_environment(dict(os.environ), "the environment variable {key}")
    for name in yaml_data:
        sources[str(name)] = f"the config file {config_file}"
    for name in overrides:
        sources[name] = f"--{name}"
    return sources


def describe_validation_error(exc: ValidationError, sources: dict[str, str] | None = None) -> str:
    """One paragraph naming each bad option in its CLI spelling, and where a value not given as a flag came from."""
    sources = sources or {}
    problems = []
    for err in exc.errors():
        where = ".".join(str(part) for part in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        given = err.get("input")
        shown = f" (got {given!r})" if where and not isinstance(given, dict) and given is not None else ""
        origin = sources.get(where, f"--{where}")
        label = f"--{where}" if origin == f"--{where}" else f"--{where} (set by {origin})"
        problems.append(f"{label}: {message}{shown}" if where else message)
    return ("Invalid configuration. " + "; ".join(problems) + ". Fix the value(s) where they are set and run again "
            "(see --help).")
