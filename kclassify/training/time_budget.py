"""``fit --time-budget``: train for the time there is, with a schedule that ends when the time does.

A fixed ``--epochs`` guesses the pace of a machine; a user with 15 minutes wants the model those
15 minutes can train, its learning rate decayed to the end of them (Li, Yumer and Ramanan,
"Budgeted training", ICLR 2020: a schedule that decays over the actual budget beats a full-length
schedule cut short). So the last phase of a budgeted fit is open-ended: after each epoch,
:class:`TimeBudget` re-plans how many epochs the time left holds at the pace just measured, sets
the cosine schedule's length to that, and stops when no further epoch fits. The pace is measured,
not assumed: the same settings ran far slower per epoch on one day than on another on this
project's CI machine, and a long fit ran slower per epoch than its short trial had
(measured: docs/benchmarks.md, "Epoch times from day to day").
"""

from __future__ import annotations

import logging
import math
import time
from typing import Callable

import keras

log = logging.getLogger(__name__)

# Epochs a budgeted phase may run at most: model.fit needs a number; the budget ends it first.
OPEN_END = 100_000

# What follows training: fit scores the test split from the image files, saves the model, and the
# evaluation report scores the validation and test splits again (decode, resize, predict, calibrate,
# draw): FINISH_FIXED seconds plus FINISH_PER_IMAGE times the validation pass's seconds per image
# for each image scored. On intel_scenes (small_cnn, 64 px) the time kept this way was about what
# followed the last epoch, more than one run needed and a little less than another (measured:
# docs/benchmarks.md, "Epoch times from day to day").
FINISH_PER_IMAGE = 4.0
FINISH_FIXED = 3.0
# A fit without a validation split has no pass to time: its finish is planned from the training
# epoch's seconds per image times PASS_PER_TRAIN, a cached validation pass's seconds per image over
# a training epoch's, taken from their means over four epochs of small_cnn at 64 px on intel_scenes
# (measured: docs/benchmarks.md, "Epoch times from day to day").
PASS_PER_TRAIN = 0.22


def cosine(step: int, total: int, lr: float, warmup: int = 0) -> float:
    """Keras' ``CosineDecay`` (warm-up from 0 included) at ``step`` of ``total`` steps, to 0 at the end."""
    if warmup and step < warmup:
        return lr * step / warmup
    span = max(total - warmup, 1)
    return 0.5 * lr * (1 + math.cos(math.pi * min(step - warmup, span) / span))


class FirstEpochPace(keras.callbacks.Callback):
    """Times a ``model.fit``'s first epoch over ``TIMED`` batches after ``WARMUP`` (the step function is
    traced in the first ones) and calls :meth:`timed` once with the seconds per batch and the rest of
    the epoch's. Subclasses set ``clock`` and ``steps`` and clear ``_first`` when that epoch ends."""

    WARMUP = 3
    TIMED = 5

    def on_train_begin(self, logs=None):
        self._first, self._timed_from = True, None  # a new model.fit (a phase): another step function, another pace

    def on_train_batch_end(self, batch, logs=None):
        if not self._first:
            return
        if batch == self.WARMUP - 1:
            self._timed_from = self.clock()
        elif self._timed_from is not None and batch == self.WARMUP - 1 + self.TIMED:
            pace = (self.clock() - self._timed_from) / self.TIMED
            self.timed(pace, rest=(self.steps - batch - 1) * pace)

    def timed(self, pace: float, rest: float) -> None:
        raise NotImplementedError


class TimeBudget(FirstEpochPace):
    """Stops a fit whose next epoch would not end, with its evaluation after it, by ``ends_at``.

    One for a whole fit, passed to each phase's ``model.fit``; :meth:`phase` tells it which
    phase comes. Every phase is stopped once the time is spent; the ``open`` one (the last, whose
    end is the budget's) also gets its learning rate from here when ``schedule`` is cosine
    (``compile_phase`` then gives its optimizer a plain learning rate to set): a cosine over the
    epochs the budget holds, re-planned after each epoch.

    The pace is the mean of the last ``AVERAGED`` epochs' seconds, each from the end of the
    one before (validation, checkpoints and logs included); in a phase's first epoch, which also traces the step functions, it is timed
    over ``TIMED`` batches after ``WARMUP`` and scaled to the epoch, plus that epoch's validation.
    The seconds kept for what follows training (:data:`FINISH_PER_IMAGE`) scale with the last
    validation pass.

    Args:
        ends_at: the budget's end, a ``clock()`` reading.
        eval_ratio: images scored after training (the test split by fit, validation and test by the
            report) over the validation pass's own: ``(n_val + 2 n_test) / n_val``.
        train_ratio: for a fit without a validation split, the images scored after training over the
            training epoch's (``2 n_test / n_train``), whose seconds then stand in for a validation
            pass's (:data:`PASS_PER_TRAIN`); 0 with a validation split.
        clock: seconds, ``time.perf_counter`` by default.
    """

    AVERAGED = 5  # epochs: one epoch's seconds varied widely on the CI machine, their mean holds the plan steady
    # (measured: docs/benchmarks.md, "Epoch times from day to day")

    def __init__(self, ends_at: float, eval_ratio: float = 1.0, clock: Callable[[], float] | None = None,
                 train_ratio: float = 0.0):
        super().__init__()
        self.ends_at, self.eval_ratio, self.clock = ends_at, float(eval_ratio), clock or time.perf_counter
        self.train_ratio, self.train_seconds = float(train_ratio), 0.0
        self.epochs_done = 0  # over the whole fit
        self.planned: int | None = None  # the open phase's end, as last planned
        self.stopped_early = False
        self.val_seconds = 0.0
        self.progbar = keras.callbacks.ProgbarLogger()
        self._open = False

    def phase(self, start: int, end: int, steps: int, open_end: bool, lr: float | None = None,
              warmup: int = 0) -> list:
        """The next ``model.fit``: a phase of epochs ``start..end-1`` (for an ``open_end`` one, the plan
        until its pace is measured) with ``steps`` batches per epoch; ``lr``, its base rate, when this
        callback drives its cosine, with ``warmup`` steps of warm-up. Returns the callbacks to pass
        (this one, and the progress bar whose "Epoch 3/N" it keeps to the plan)."""
        self.start, self.steps, self._open, self.lr, self.warmup = int(start), int(steps), open_end, lr, int(warmup)
        if open_end and self.planned is None:
            self.planned = self.progbar.epochs = int(end)
        return [self, self.progbar]  # first: a plan raised at an epoch's start is the one the bar prints

    @property
    def finish_seconds(self) -> float:
        scoring = (self.train_ratio * PASS_PER_TRAIN * self.train_seconds if self.train_ratio
                   else self.eval_ratio * self.val_seconds)
        return FINISH_FIXED + FINISH_PER_IMAGE * scoring

    def left(self) -> float:
        return self.ends_at - self.clock() - self.finish_seconds

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._batch_pace, self._timed = None, []
        self._last_end = self.clock()
        if self._open:  # set_params gave the progress bar model.fit's OPEN_END
            self.progbar.epochs = self.planned

    def on_epoch_begin(self, epoch, logs=None):
        if self._open and self.planned <= epoch:  # resumed past the first plan: at least this epoch
            self.planned = self.progbar.epochs = epoch + 1
        self._epoch = epoch
        self._step = (epoch - self.start) * self.steps

    def on_train_batch_begin(self, batch, logs=None):
        if self._open and self.lr is not None:
            total = (self.planned - self.start) * self.steps
            warmup = min(self.warmup, total - 1)  # as Keras' CosineDecay: a short plan still decays
            self.model.optimizer.learning_rate = cosine(self._step + batch, total, self.lr, warmup)

    def timed(self, pace: float, rest: float) -> None:
        self._batch_pace = pace
        self._plan(pace * self.steps, left=self.left() - rest, done=self._epoch + 1)

    def on_test_begin(self, logs=None):
        self._test_from = self.clock()

    def on_test_end(self, logs=None):
        self.val_seconds = self.clock() - self._test_from

    def on_epoch_end(self, epoch, logs=None):
        now = self.clock()
        if self._first and self._batch_pace is not None:  # this epoch also traced; the next will not
            per_epoch = self._batch_pace * self.steps + self.val_seconds
        else:
            self._timed.append(now - self._last_end)
            per_epoch = sum(self._timed[-self.AVERAGED:]) / len(self._timed[-self.AVERAGED:])
        self._first, self._last_end = False, now
        self.epochs_done, self.train_seconds = epoch + 1, per_epoch - self.val_seconds
        more = self._plan(per_epoch, left=self.left(), done=epoch + 1)
        if more < 1 and self.model is not None:
            self.model.stop_training = True
            self.stopped_early = True
            log.info("time budget: stopping after epoch %d (%.0f s per epoch, %.0f s left, %.0f s kept for the "
                     "evaluation)", epoch + 1, per_epoch, max(self.ends_at - now, 0.0), self.finish_seconds)

    def _plan(self, per_epoch: float, left: float, done: int) -> int:
        """Epochs after ``done`` that ``left`` seconds hold at ``per_epoch``; the open phase's end re-planned."""
        more = max(int(left // per_epoch), 0) if per_epoch > 0 else 0
        if self._open:
            planned = done + more
            if planned != self.planned:
                log.info("time budget: %d epochs in all (%.1f s per epoch, %.0f s left)", planned, per_epoch,
                         max(left, 0.0))
            self.planned = self.progbar.epochs = planned
        return more
