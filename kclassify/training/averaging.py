"""Weight averaging: validation, checkpoints and the saved model see the optimizer's moving average.

``--ema M`` turns on Keras optimizers' own exponential moving average of the trainable weights
(``use_ema=True, ema_momentum=M``: after each step ``average = M * average + (1 - M) * weights``,
the first step's weights as the start). The averaged weights sit between the noisy late iterates
of a schedule, which tends to generalise better than any single one of them (Polyak averaging; the
EMA of timm and EfficientNet's recipes). BatchNorm's moving statistics, though, were gathered under
the raw weights, not the averaged ones:

- each epoch, validation and the checkpoints see the averaged weights with a moving average of the
  raw weights' BatchNorm statistics at the same momentum (what timm's model EMA averages: its
  buffers with its weights), taken at each epoch's end as ``M ** steps``: no forward pass;
- the run's saved model gets statistics recomputed for its own weights (:func:`finish`: the mean over
  ``BN_STEPS`` training batches in training mode, as SWA's ``bn_update`` does), once, at the end.

Recomputing them each epoch instead (the mean over 20 batches the input pipeline augments, through a
forward pass) was, with the per-step update, what made a 10-minute run train 28 % fewer epochs on 2 CPU
cores (docs/benchmarks.md, "Mixup and weight averaging at 10 minutes").

Two callbacks wrap each phase's callbacks (:func:`wrap`): the first swaps the averaged weights in before
validation (or at the epoch's end when there is none), so the monitored metric, ``best.keras`` and
``last.keras`` are the average's; the second swaps the raw weights and statistics back before the
resume backup, so training and a resumed run go on from the raw iterate. At the end of training the
averaged weights and statistics stay in the model.
"""

from __future__ import annotations

import itertools

import keras
import numpy as np
import tensorflow as tf

from ..upstream import ema_variables

BN_STEPS = 20  # training batches the BatchNorm statistics of the averaged weights are recomputed over


def batchnorm_layers(model) -> list:
    from ..models.build import all_layers

    return [layer for layer in all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]


def batchnorm_statistics(layers) -> list:
    """The moving mean and variance of each BatchNorm layer of ``layers``, in order."""
    return [v for layer in layers for v in (layer.moving_mean, layer.moving_variance)]


def recompute_batchnorm(model, images, steps: int = BN_STEPS, forward=None) -> int:
    """Set every BatchNorm layer's moving mean and variance to their means over ``steps`` batches of ``images``.

    ``images``: a dataset or an iterator of batches (``(x, y, ...)`` tuples or ``x``). The model runs in
    training mode with each layer's momentum at 0, so that after a batch its moving statistics are that
    batch's; their plain mean over the batches is assigned at the end. ``forward(x)``: the training-mode
    call to use (a compiled one, traced while the momenta are 0; default: the eager ``model(x,
    training=True)``). Returns the batches used (0: no BatchNorm layer or no batch, nothing changed).
    """
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    stats = batchnorm_statistics(layers)
    source = images.take(steps) if isinstance(images, tf.data.Dataset) else itertools.islice(images, steps)
    forward = forward or (lambda x: model(x, training=True))
    momenta = [layer.momentum for layer in layers]
    sums, used = None, 0
    try:
        for layer in layers:
            layer.momentum = 0.0
        for batch in source:
            forward(batch[0] if isinstance(batch, (tuple, list)) else batch)
            values = [v.numpy().astype(np.float64) for v in stats]
            sums = values if sums is None else [a + b for a, b in zip(sums, values)]
            used += 1
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    for var, total in zip(stats, sums or []):
        var.assign((total / used).astype(var.dtype))
    return used


class _Averaged:
    """The state the two callbacks share: whether the averaged weights are in, the raw ones kept aside, and
    the moving average of the BatchNorm statistics (float64 arrays; ``at``: the optimizer step it was
    last brought to)."""

    def __init__(self):
        self.raw = None
        self.statistics, self.at = None, None

    def start(self, model) -> None:
        """The statistics' average starts at the model's own, as the weights' starts at its weights."""
        self.statistics = [v.numpy().astype(np.float64) for v in batchnorm_statistics(batchnorm_layers(model))]
        self.at = int(model.optimizer.iterations.numpy())

    def track(self, model, raw: list) -> None:
        """Bring the statistics' average to the optimizer's step: ``raw`` (the raw weights' statistics now)
        weighs ``1 - M ** steps``, the steps since the last update standing in for that many updates."""
        if self.statistics is None:
            self.start(model)
        step = int(model.optimizer.iterations.numpy())
        decay = float(model.optimizer.ema_momentum) ** max(step - self.at, 0)
        self.statistics = [decay * a + (1.0 - decay) * r for a, r in zip(self.statistics, raw)]
        self.at = step

    def show_statistics(self, model) -> None:
        for var, value in zip(batchnorm_statistics(batchnorm_layers(model)), self.statistics or []):
            var.assign(value.astype(var.dtype))

    def swap_in(self, model) -> None:
        if self.raw is not None or not getattr(model.optimizer, "use_ema", False) or not model.optimizer.built:
            return
        stats = [v.numpy() for v in batchnorm_statistics(batchnorm_layers(model))]
        self.raw = ([v.numpy() for v in model.trainable_variables], stats)
        self.track(model, stats)
        model.optimizer.finalize_variable_values(model.trainable_variables)  # the average into the model
        self.show_statistics(model)

    def swap_out(self, model) -> None:
        if self.raw is None:
            return
        weights, stats = self.raw
        for var, value in zip(model.trainable_variables, weights):
            var.assign(value)
        for var, value in zip(batchnorm_statistics(batchnorm_layers(model)), stats):
            var.assign(value)
        self.raw = None


class SwapIn(keras.callbacks.Callback):
    """First of a phase's callbacks: the averaged weights and statistics for validation and checkpoints."""

    def __init__(self, state: _Averaged):
        super().__init__()
        self.state = state

    def on_train_begin(self, logs=None):
        start_average(self.model.optimizer, self.model)
        self.state.statistics = None  # started at the first epoch, after a resumed run's weights are restored

    def on_epoch_begin(self, epoch, logs=None):
        if self.state.statistics is None and getattr(self.model.optimizer, "use_ema", False):
            self.state.start(self.model)

    def on_test_begin(self, logs=None):
        self.state.swap_in(self.model)

    def on_epoch_end(self, epoch, logs=None):
        self.state.swap_in(self.model)  # no validation this epoch: the checkpoints still get the average

    def on_train_end(self, logs=None):
        # Keras' fit has already written the average into the model (finalize_variable_values); the
        # BatchNorm statistics are still the raw weights': the average's go with it (fit then recomputes
        # the saved model's, :func:`finish`).
        if self.state.raw is None and self.state.statistics is not None:  # none when no epoch ran
            self.state.show_statistics(self.model)


class SwapOut(keras.callbacks.Callback):
    """Placed before the resume backup: the raw weights and statistics back, to train on from."""

    def __init__(self, state: _Averaged):
        super().__init__()
        self.state = state

    def on_epoch_end(self, epoch, logs=None):
        self.state.swap_out(self.model)


def start_average(optimizer, model) -> None:
    """A fresh average starts at the model's weights, also when training resumes mid-schedule.

    Keras starts the average at the first step's weights only when the optimizer's step counter is 0;
    a Hyperband continuation or a phase resumed at a later step sets the counter first, and its
    average would start from zeros.
    """
    if not getattr(optimizer, "use_ema", False):
        return
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    averages = ema_variables(optimizer)
    if int(optimizer.iterations.numpy()) and all(not np.any(a.numpy()) for a in averages if a is not None):
        for average, var in zip(averages, model.trainable_variables):
            if average is not None:
                average.assign(var)


def wrap(callbacks: list) -> list:
    """``callbacks`` with the averaging pair around them: SwapIn first, SwapOut before BackupAndRestore (or last)."""
    state = _Averaged()
    out = [SwapIn(state), *callbacks]
    backup = next((i for i, c in enumerate(out) if isinstance(c, keras.callbacks.BackupAndRestore)), len(out))
    out.insert(backup, SwapOut(state))
    return out


def finish(model, images, steps: int = BN_STEPS) -> int:
    """The averaged model a run keeps gets BatchNorm statistics of its own: recomputed over ``steps``
    batches of ``images`` (the training pipeline) with one compiled training-mode forward pass (eager,
    it costs several times as much). Returns the batches used."""
    forward = tf.function(lambda x: model(x, training=True), reduce_retracing=True)  # traced with momenta at 0
    return recompute_batchnorm(model, images, steps, forward)
