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
