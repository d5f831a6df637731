"""Optimizers and learning-rate schedules by name, from a :class:`TrainConfig`."""

from __future__ import annotations

import keras

from ..config import TrainConfig

ADAMW_DEFAULT_DECAY = 0.004  # Keras' own AdamW default, used when --weight-decay is 0


def _constant(cfg: TrainConfig, lr: float, steps: int):
    return lr  # plateau lowers it from a callback, which needs a plain variable


def _cosine(cfg: TrainConfig, lr: float, steps: int):
    total = cfg.epochs * steps
    warmup = min(int(round(cfg.warmup_epochs * steps)), total - 1)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else lr, decay_steps=max(total - warmup, 1),
        warmup_target=lr if warmup else None, warmup_steps=warmup,
    )


def _decay(staircase: bool):
    """exponential decays smoothly, step in stairs; both multiply by decay_rate per decay_epochs."""

    def build(cfg: TrainConfig, lr: float, steps: int):
        return keras.optimizers.schedules.ExponentialDecay(
            lr, decay_steps=max(int(round(cfg.decay_epochs * steps)), 1), decay_rate=cfg.decay_rate,
            staircase=staircase,
        )

    return build


# schedule name -> (settings, base lr, steps per epoch) -> a float or a LearningRateSchedule in steps.
# The keys are exactly config.SCHEDULES (tests/test_training.py checks it).
SCHEDULES = {
    "constant": _constant,
    "cosine": _cosine,
    "exponential": _decay(staircase=False),
    "step": _decay(staircase=True),
    "plateau": _constant,
}

# optimizer name -> (settings, common keyword arguments) -> a Keras optimizer; keys are config.OPTIMIZERS.
OPTIMIZERS = {
    "sgd": lambda cfg, common: keras.optimizers.SGD(**common),
    "momentum": lambda cfg, common: keras.optimizers.SGD(momentum=cfg.momentum, **common),
    "nesterov": lambda cfg, common: keras.optimizers.SGD(momentum=cfg.momentum, nesterov=True, **common),
    "adam": lambda cfg, common: keras.optimizers.Adam(**common),
    "adamw": lambda cfg, common: keras.optimizers.AdamW(weight_decay=cfg.weight_decay or ADAMW_DEFAULT_DECAY,
                                                        **common),
    "adagrad": lambda cfg, common: keras.optimizers.Adagrad(**common),
    "rmsprop": lambda cfg, common: keras.optimizers.RMSprop(**common),
}


def build_schedule(cfg: TrainConfig, steps_per_epoch: int):
    """A float (constant, plateau) or a Keras ``LearningRateSchedule`` counted in steps."""
    return SCHEDULES[cfg.schedule](cfg, float(cfg.lr), max(int(steps_per_epoch), 1))


def build_optimizer(cfg: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """The optimizer named by ``cfg.optimizer`` with schedule, weight decay and clipping."""
    common = {"learning_rate": build_schedule(cfg, steps_per_epoch), "clipnorm": cfg.clipnorm,
              "clipvalue": cfg.clipvalue}
    if cfg.weight_decay > 0 and cfg.optimizer != "adamw":  # AdamW takes its own (decoupled) decay
        common["weight_decay"] = cfg.weight_decay
    if cfg.ema > 0:  # the moving average of the weights (kclassify.training.averaging shows it)
        common.update(use_ema=True, ema_momentum=cfg.ema)
    return OPTIMIZERS[cfg.optimizer](cfg, common)
