"""Log a flowerkit checkpoint's model with ``mlflow.pytorch.log_model``, ready for MLflow's model registry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from flowerkit.engine.checkpoint import load_checkpoint
from flowerkit.models.vit import as_torchvision, build_model

MODEL_NAME = "model"


def model_from_checkpoint(path: Path) -> torch.nn.Module:
    """The checkpoint's model on the CPU, in eval mode."""
    state = load_checkpoint(path, map_location="cpu")
    model = build_model(state["model_type"], int(state["img_size"]), int(state["num_classes"]))
    model.load_state_dict(state["model"])
    return model.eval()


def log_pytorch_model(run_id: str, checkpoint: Path) -> None:
    """Log the model into MLflow run ``run_id`` with an input example and a signature.

    The input is a normalised float32 batch (N, 3, H, W), as the run's input pipeline feeds the model; the
    output is the (N, 102) logits.
    """
    import mlflow
    import mlflow.pytorch
    from mlflow.models import infer_signature

    model = as_torchvision(model_from_checkpoint(checkpoint))  # loads where torchvision is, flowerkit or not
    size = model.image_size
    example = np.zeros((1, 3, size, size), dtype=np.float32)
    with torch.no_grad():
        logits = model(torch.from_numpy(example)).numpy()
    signature = infer_signature(example, logits)
    # Explicit requirements: MLflow would otherwise infer them by importing the model in a subprocess (slow).
    import torchvision

    requirements = [f"torch=={torch.__version__.split('+')[0]}",
                    f"torchvision=={torchvision.__version__.split('+')[0]}", f"numpy=={np.__version__}"]
    # pickle, not MLflow's default pt2: torch.export pins the batch size to the example's, and the pickled
    # module loads as the same nn.Module (torchvision's VisionTransformer) for any batch.
    with mlflow.start_run(run_id=run_id):
        mlflow.pytorch.log_model(model, name=MODEL_NAME, input_example=example, signature=signature,
                                 pip_requirements=requirements, serialization_format="pickle")
