"""Losses by name, all on one-hot targets (so label smoothing applies)."""

from __future__ import annotations

import keras

from ..config import TrainConfig


def build_loss(cfg: TrainConfig) -> keras.losses.Loss:
    if cfg.loss == "crossentropy":
        return keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing)
    if cfg.loss == "focal":
        return keras.losses.CategoricalFocalCrossentropy(
            gamma=cfg.focal_gamma, label_smoothing=cfg.label_smoothing
        )
    if cfg.loss == "mse":
        return keras.losses.MeanSquaredError()
    raise AssertionError(f"loss {cfg.loss!r} passed config validation but has no builder")


def class_weights(mode: str, labels) -> dict[int, float] | None:
    """``balanced``: n_samples / (n_classes * count) per class present, as scikit-learn computes it."""
    if mode == "none":
        return None
    import numpy as np
    from sklearn.utils.class_weight import compute_class_weight

    labels = np.asarray(labels)
    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    return {int(c): float(w) for c, w in zip(present, weights)}
