"""Optimizers and learning-rate schedules by name, from a :class:`TrainConfig`."""

from __future__ import annotations

import keras

from ..config import TrainConfig

ADAMW_DEFAULT_DECAY = 0.004  # Keras' own AdamW default, used when --weight-decay is 0


def build_schedule(cfg: TrainConfig, steps_per_epoch: int):
    """A float (constant, plateau) or a Keras ``LearningRateSchedule`` counted in steps."""
    lr = float(cfg.lr)
    steps_per_epoch = max(int(steps_per_epoch), 1)
    if cfg.schedule in ("constant", "plateau"):
        return lr  # plateau lowers it from a callback, which needs a plain variable
    if cfg.schedule == "cosine":
        total = cfg.epochs * steps_per_epoch
        warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
        warmup = min(warmup, total - 1)
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup else lr,
            decay_steps=max(total - warmup, 1),
            warmup_target=lr if warmup else None,
            warmup_steps=warmup,
        )
    # exponential decays smoothly, step in stairs; both multiply by decay_rate per decay_epochs
    return keras.optimizers.schedules.ExponentialDecay(
        lr,
        decay_steps=max(int(round(cfg.decay_epochs * steps_per_epoch)), 1),
        decay_rate=cfg.decay_rate,
        staircase=cfg.schedule == "step",
    )


def build_optimizer(cfg: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """The optimizer named by ``cfg.optimizer`` with schedule, weight decay and clipping."""
    lr = build_schedule(cfg, steps_per_epoch)
    common = {
        "learning_rate": lr,
        "clipnorm": cfg.clipnorm,
        "clipvalue": cfg.clipvalue,
    }
    if cfg.weight_decay > 0 and cfg.optimizer != "adamw":
        common["weight_decay"] = cfg.weight_decay
    name = cfg.optimizer
    if name == "sgd":
        return keras.optimizers.SGD(**common)
    if name in ("momentum", "nesterov"):
        return keras.optimizers.SGD(momentum=cfg.momentum, nesterov=name == "nesterov", **common)
    if name == "adam":
        return keras.optimizers.Adam(**common)
    if name == "adamw":
        return keras.optimizers.AdamW(weight_decay=cfg.weight_decay or ADAMW_DEFAULT_DECAY, **common)
    if name == "adagrad":
        return keras.optimizers.Adagrad(**common)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(**common)
    raise AssertionError(f"optimizer {name!r} passed config validation but has no builder")
