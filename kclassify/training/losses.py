"""Losses by name, all on one-hot targets (so label smoothing applies)."""

from __future__ import annotations

import keras

from ..config import TrainConfig


# loss name -> settings -> a Keras loss on one-hot targets; the keys are exactly config.LOSSES.
LOSSES = {
    "crossentropy": lambda cfg: keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing),
    "focal": lambda cfg: keras.losses.CategoricalFocalCrossentropy(gamma=cfg.focal_gamma,
                                                                   label_smoothing=cfg.label_smoothing),
    "mse": lambda cfg: keras.losses.MeanSquaredError(),
}


def build_loss(cfg: TrainConfig) -> keras.losses.Loss:
    return LOSSES[cfg.loss](cfg)


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
