"""Temperature scaling applied to a model's probabilities, and the ``calibration.json`` that stores it.

``kclassify evaluate`` fits the temperature on a run's validation split and writes it into the run
folder; ``serve`` (and any user of :func:`apply_temperature`) applies it to the scores. A model's
outputs are probabilities, not logits, but ``softmax(log(p) / T)`` equals ``softmax(logits / T)``
(the log-softmax differs from the logits by a per-row constant), so the temperature needs no
access to the model's last layer and works the same for ``.keras``, SavedModel and ``.tflite``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

FILE = "calibration.json"
EPS = 1e-7  # probabilities are clipped here before the log: a float16/int8 model outputs exact zeros


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log(p) / T)`` row-wise: T > 1 softens over-confident scores, T < 1 sharpens them."""
    p = np.asarray(probabilities, np.float64)
    if temperature == 1.0:
        return p.astype(np.float32)
    logits = np.log(np.clip(p, EPS, 1.0)) / float(temperature)
    logits -= logits.max(axis=-1, keepdims=True)
    e = np.exp(logits)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def read_calibration(folder: str | Path) -> dict | None:
    """The ``calibration.json`` in a run (or evaluation) folder, or None when it has none."""
    path = Path(folder) / FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())
