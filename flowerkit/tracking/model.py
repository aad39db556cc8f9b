"""Log a flowerkit model to MLflow in a format that loads without pickle: the ONNX export through MLflow's onnx
flavour when the onnx extra is installed, else the checkpoint's weights alone, as a file artifact.

MLflow's pytorch flavour pickles the module (its pt2 format pins the batch size), and warns about it on every
run; the ONNX export is the model ``flowerkit predict --onnx`` serves, proven equal to torch when it is made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

MODEL_NAME = "model"  # the artifact folder: runs:/RUN_ID/model


def log_onnx_model(run_id: str, onnx_bytes: bytes, name: str = MODEL_NAME) -> None:
    """Log a serialised flowerkit ONNX model (``flowerkit.predict.onnx_export``) into MLflow run ``run_id`` as
    an onnx-flavour model named ``name``, with its signature: uint8 pixels (N, D, D, 3) in, logits (N, classes)
    out."""
    import mlflow.onnx
    import onnx
    import onnxruntime
    from mlflow.models import infer_signature

    model = onnx.load_from_string(onnx_bytes)
    session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    side = session.get_inputs()[0].shape[1]
    example = np.zeros((1, side, side, 3), dtype=np.uint8)
    logits = session.run(None, {session.get_inputs()[0].name: example})[0]
    # Explicit requirements: MLflow would otherwise infer them by loading the model in a subprocess (slow).
    requirements = [f"onnx=={onnx.__version__}", f"onnxruntime=={onnxruntime.__version__}",
                    f"numpy=={np.__version__}"]
    # The logged model is made here, in the run's experiment: left to MLflow, a run that is not its fluent
    # active run gets a model in the default experiment, which runs:/RUN_ID/NAME never finds.
    client = mlflow.MlflowClient()
    experiment_id = client.get_run(run_id).info.experiment_id
    logged = client.create_logged_model(experiment_id, name=name, source_run_id=run_id)
    mlflow.onnx.log_model(model, name=name, run_id=run_id, model_id=logged.model_id, input_example=example,
                          signature=infer_signature(example, logits), pip_requirements=requirements,
                          onnx_execution_providers=onnxruntime.get_available_providers(),
                          save_as_external_data=False)


def log_model(client: Any, run_id: str, checkpoint: Path) -> str:
    """Log a run's checkpoint into MLflow run ``run_id``; returns how: ``onnx`` (an onnx-flavour model, proven
    on the run's own images) or ``weights`` (the checkpoint file under ``model/``, without the onnx extra)."""
    from flowerkit.optional import ONNX

    if not ONNX.installed():
        client.log_artifact(run_id, str(checkpoint), MODEL_NAME)
        return "weights"
    from flowerkit.predict.onnx_export import export_checkpoint

    log_onnx_model(run_id, export_checkpoint(checkpoint).data)
    return "onnx"

