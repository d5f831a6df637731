"""Progressive resizing: the first epochs on smaller images, the last ones at the model's input size.

fastai trains at a small size and then a larger one; EfficientNetV2's progressive learning grows the
size in stages over training. Early epochs learn coarse shapes at a fraction of the cost (a
convolution's work grows with the square of the side), and the last stage trains, and validates, at
the size the model is saved at, so no train/test size gap is left (Touvron et al., "Fixing the
train-test resolution discrepancy", 2019).

``--progressive-resize F`` trains in :data:`STAGES` equal stretches of the schedule: the first at F
times the input side, growing linearly to the full side in the last. The model is built to take any
size (:func:`kclassify.models.build.build_classifier`'s ``any_size``) and the training pipeline resizes
each augmented batch to the side a ``tf.Variable`` holds (:func:`kclassify.data.pipeline.batches`), which
:class:`ProgressiveResize` sets at each epoch's start from how far the schedule has got: by epochs, or
under ``--time-budget`` by the epochs the budget has planned. Validation always runs at the full size.
The run saves the model at the full size (:func:`kclassify.models.build.with_input_size`).
"""

from __future__ import annotations

import logging
from typing import Callable

import keras
import tensorflow as tf

log = logging.getLogger(__name__)

STAGES = 4  # stretches of the schedule, each at one size (few sizes: each one traces the step function once)


def stage_sides(full: int, fraction: float, multiple: int, smallest: int) -> list[int]:
    """The side of each of :data:`STAGES` stages: ``fraction * full`` growing linearly to ``full``.

    Each side is rounded to a multiple of ``multiple`` (a stride the input must keep), at least
    ``smallest`` (the backbone's minimum), and the last is ``full`` itself.
    """
    sides = []
    for i in range(STAGES):
        share = fraction + (1 - fraction) * i / (STAGES - 1)
        side = max(int(round(share * full / multiple)) * multiple, smallest)
        sides.append(min(side, full))
    sides[-1] = full
    return sides


def stage_of(epoch: int, total: int) -> int:
    """The stage of ``epoch`` (0-based) in a schedule of ``total`` epochs.

    The last quarter of the epochs, rounded up, is the last stage, so the last epoch trains at the full
    size however short the schedule (a 2-minute budget may hold 3 epochs); the epochs before it are split
    evenly over the other stages.
    """
    total = max(int(total), 1)
    last = total - -(-total // STAGES)  # the first epoch of the last stage
    if epoch >= last:
        return STAGES - 1
    return min(STAGES - 2, (STAGES - 1) * epoch // last)


class ProgressiveResize(keras.callbacks.Callback):
    """Sets the training side at each epoch's start: the stage :func:`stage_of` gives the epoch.

    Within one ``model.fit`` the side never shrinks (a time budget that plans more epochs after a fast
    one would otherwise step back a stage). The side each epoch trained at goes into its logs
    (``train_side`` in history.csv and TensorBoard): place this callback before the loggers.
    """

    def __init__(self, side: tf.Variable, sides: list[int], total_epochs: Callable[[], int]):
        super().__init__()
        self.side, self.sides, self.total_epochs = side, sides, total_epochs
        self._largest = 0

    def side_at(self, epoch: int) -> int:
        return self.sides[stage_of(epoch, int(self.total_epochs()))]

    def on_train_begin(self, logs=None):
        self._largest = 0

    def on_epoch_begin(self, epoch, logs=None):
        side = max(self.side_at(epoch), self._largest)
        if side != int(self.side.numpy()):
            log.info("progressive resizing: epoch %d trains at %d px", epoch + 1, side)
        self.side.assign(side)
        self._largest = side

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["train_side"] = float(self.side.numpy())
