"""Inference: every model artifact behind one interface (imports TensorFlow only when a model loads).

``load_predictor(path)`` takes a run folder, a ``.keras`` file, a SavedModel folder written by
``kclassify export`` or a ``.tflite`` file; the returned :class:`Predictor` has ``labels``,
``image_size``, ``input_dtype``, ``predict(uint8 images)`` and ``predict_files(paths)``.
Evaluation, export's checks, ``predict`` and ``serve`` all run models through it.
"""

from .load import LOADERS, detect_kind, load_predictor
from .predictor import FilePrediction, Predictor

__all__ = ["FilePrediction", "LOADERS", "Predictor", "detect_kind", "load_predictor"]
