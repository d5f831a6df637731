"""The clock that stops a trial which would eat into the time a search keeps for its final model.

``tune --time-budget --then-fit`` stops starting trials once the time left would not hold the
longest trial so far plus the final model's time; a trial longer than any before it (a larger
image, a wider model, never measured) could still run on into that time. On intel_scenes a
96 px trial took several times as long as the longest before it, and the final fit lost much
of the time kept for it (measured: docs/benchmarks.md, "Slow days (seeds 3-11)").
"""

from __future__ import annotations

import time
from typing import Callable

from ..training.time_budget import FirstEpochPace


class TimeLimit(FirstEpochPace):
    """Stops a trial that would not end, with its final model's time still ahead, by ``ends_at``.

    One per trial, passed to every ``model.fit`` of it (phases, executions); :meth:`begin` tells
    it each execution's epochs. The pace is measured, not guessed from the settings: in each
    ``model.fit``'s first epoch after ``WARMUP`` batches (the step function is traced in the
    first) over ``TIMED`` batches, so a trial that cannot finish stops seconds after it starts;
    from the second epoch on, by each epoch's seconds, validation included. A fit's first epoch
    is not judged whole: it also traces the evaluation step and fills the cache of a new image
    size's validation images (and, for a backbone without adapted normalization, its training
    images), which later epochs do not pay.

    The trial needs its remaining epochs, any executions after this one and, should it turn out
    the best, retraining it for ``refit_epochs`` at its own pace beyond the ``kept`` seconds
    already kept for the final model: a setting the final fit could not train in time is not worth
    finishing. ``needed`` holds those seconds when it stopped the trial (None: not stopped),
    ``left`` the seconds then left, and ``epoch`` the epoch it stopped in.

    With ``refit_own`` (``tune --final-share``: the final fit is a ``fit --time-budget`` of the
    time left, as many epochs as that holds) the retrain counted is the trial's own epochs, not
    ``refit_epochs``: the final model must train at least as long as the trial that scored the
    settings; asking for all ``--epochs`` stopped every 96 px trial on a slow day (a 27-epoch
    retrain at its pace was more than the time kept; measured: docs/benchmarks.md, "tune's time,
    draws, memory and latency"), the setting that had paid most on a fast one.

    Args:
        ends_at: the time budget's end, a ``clock()`` reading.
        kept: seconds the final model already has kept before ``ends_at``.
        refit_own: count retraining the trial for its own epochs instead of ``refit_epochs``.
        runs: executions of the trial (KerasTuner's ``executions_per_trial``).
        clock: seconds, ``time.perf_counter`` by default.
    """

    def __init__(self, ends_at: float, kept: float = 0.0, runs: int = 1, clock: Callable[[], float] = time.perf_counter,
                 refit_own: bool = False):
        super().__init__()
        self.ends_at, self.kept, self.runs_after, self.clock = ends_at, kept, int(runs), clock
        self.refit_own = refit_own
        self.needed: float | None = None
        self.left: float | None = None
        self.epoch: int | None = None
        self.start = self.end = self.steps = self.refit_epochs = 0

    @property
    def stopped(self) -> bool:
        return self.needed is not None

    def begin(self, start: int, end: int, steps: int, refit_epochs: int) -> None:
        """An execution of the trial: epochs ``start..end-1`` of ``steps`` batches; the final fit's ``refit_epochs``."""
        self.start, self.end, self.steps = int(start), int(end), int(steps)
        self.refit_epochs = self.end if self.refit_own else int(refit_epochs)
        self.runs_after -= 1

    def reason(self) -> str:
        where = "not started" if self.epoch is None else f"stopped in epoch {self.epoch + 1}"
        return f"{where}: needed ~{self.needed:.0f}s more (with retraining it, were it the best), {self.left:.0f}s left"

    def rules_out(self, per_epoch: float, epochs: int, refit_epochs: int) -> bool:
        """Before the trial starts, from a pace measured before (a Hyperband continuation's earlier rung):
        whether its ``epochs`` (per execution) and its retrain cannot fit. Sets ``needed`` and ``left`` if so."""
        return self._over(per_epoch, self.runs_after * epochs, refit_epochs)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self._epoch_started = epoch, self.clock()

    def timed(self, pace: float, rest: float) -> None:
        self._check(self.steps * pace, rest_of_epoch=rest)

    def on_epoch_end(self, epoch, logs=None):
        if self._first:
            self._first = False
        else:
            self._check(self.clock() - self._epoch_started, rest_of_epoch=0.0)

    def on_test_batch_end(self, batch, logs=None):
        if self.stopped:  # Keras validates the epoch it stops in: a score nobody reads
            self.model.stop_evaluating = True

    def _check(self, per_epoch: float, rest_of_epoch: float) -> None:
        epochs_left = self.end - self.epoch - 1 + self.runs_after * (self.end - self.start)
        if self.stopped or (not epochs_left and not rest_of_epoch):
            return  # trained to the end: nothing left to save by stopping
        if self._over(per_epoch, epochs_left, self.refit_epochs, rest_of_epoch):
            self.model.stop_training = True

    def _over(self, per_epoch: float, epochs: int, refit_epochs: int, rest_of_epoch: float = 0.0) -> bool:
        """Whether ``rest_of_epoch`` plus ``epochs`` and the retrain beyond ``kept``, at ``per_epoch``, miss the end."""
        needed = rest_of_epoch + epochs * per_epoch + max(0.0, refit_epochs * per_epoch - self.kept)
        left = self.ends_at - self.kept - self.clock()
        if needed > left:
            self.needed, self.left = needed, max(left, 0.0)
        return self.stopped
