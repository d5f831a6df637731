"""kclassify: image classification with TensorFlow/Keras, from a folder of images to a served model.

``from kclassify import fit, tune, load_predictor`` works without importing TensorFlow until they are
called; ``from kclassify.export import export`` exports a run folder.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .config import Config, DataConfig, ModelConfig, TrainConfig, build_config, load_yaml
from .data import prepare_data
from .errors import (ConfigError, DataError, ExportError, KClassifyError, ModelLoadError, RunFolderError,
                     UnknownBackboneError, WeightsError)
from .models import build_classifier
from .tuning import load_space

_LAZY = {
    "fit": ("kclassify.training.fit", "fit"),
    "FitResult": ("kclassify.training.fit", "FitResult"),
    "tune": ("kclassify.tuning.tune", "tune"),
    "Budget": ("kclassify.tuning.tune", "Budget"),
    "TuneResult": ("kclassify.tuning.tune", "TuneResult"),
    "load_predictor": ("kclassify.inference", "load_predictor"),
    "Predictor": ("kclassify.inference", "Predictor"),
    "ExportResult": ("kclassify.export", "ExportResult"),
    "evaluate": ("kclassify.evaluation", "evaluate"),
    "EvaluationResult": ("kclassify.evaluation", "EvaluationResult"),
}


def __getattr__(name):  # PEP 562: TensorFlow is imported on first use of fit, not at import
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'kclassify' has no attribute {name!r}")


__all__ = [
    "Budget", "TuneResult", "load_space", "tune", "EvaluationResult", "evaluate",
    "ExportResult", "ModelLoadError", "ExportError", "Predictor", "load_predictor",
    "Config", "ConfigError", "DataConfig", "DataError", "FitResult", "KClassifyError", "ModelConfig",
    "RunFolderError", "TrainConfig", "UnknownBackboneError", "WeightsError", "build_classifier",
    "build_config", "fit", "load_yaml", "prepare_data",
]
