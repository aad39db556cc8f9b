"""Optional extras: whether one is installed (found without importing it) and the one line that installs it.

The core installs and runs without them; a run or command that needs one says so as a ConfigError (exit 2)
naming the install command, before anything is written.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass


@dataclass(frozen=True)
class Extra:
    name: str  # the pip extra: pip install 'flowerkit[NAME]'
    modules: tuple[str, ...]  # every module the extra must make importable
    what: str  # what it is, in words
    pins: str  # the pinned packages, for installs without flowerkit's metadata

    def installed(self) -> bool:
        """Found without importing it: importing MLflow or onnxruntime takes seconds."""
        return all(importlib.util.find_spec(module) is not None for module in self.modules)

    def missing(self) -> str:
        """The sentence a front end puts in its paragraph."""
        return (f"{self.what} is not installed in this environment. Install the extra with "
                f"`pip install 'flowerkit[{self.name}]'` (or `pip install {self.pins}`)")


MLFLOW = Extra("mlflow", ("mlflow",), "MLflow", "mlflow==3.17.2")
ONNX = Extra("onnx", ("onnx", "onnxruntime", "onnxscript"), "ONNX export and serving (onnx, onnxruntime)",
             "onnx==1.23.2 onnxruntime==1.32.0 onnxscript==0.7.2")
HEIF = Extra("heif", ("pillow_heif",), "HEIC/HEIF image support (pillow-heif)", "pillow-heif==1.9.0")
