"""A search's budgets: deployment limits checked before a trial trains, the time budget's final share,
and the clock that stops a trial which would eat into it."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import keras

from ..errors import ConfigError


@dataclass(frozen=True)
class Budget:
    """Deployment limits: a trial over them is scored infeasible and not trained.

    Args:
        max_params: most parameters a model may have.
        max_latency_ms: slowest single-image latency allowed, measured on this machine
            through LiteRT (see :func:`kclassify.models.profile.measure_latency`).
        measure_latency: record latency even without a latency limit (costs one LiteRT
            conversion per architecture: ~2 s for small_cnn, ~15 s for mobilenet_v3_small).
        threads: LiteRT threads for the latency measurement.
    """

    max_params: int | None = None
    max_latency_ms: float | None = None
    measure_latency: bool = False
    threads: int = 1

    @property
    def latency(self) -> bool:
        return self.measure_latency or self.max_latency_ms is not None

    def violations(self, profile: dict) -> list[str]:
        found = []
        if self.max_params is not None and profile["params"] > self.max_params:
            found.append(f"{profile['params']:,} parameters > {self.max_params:,}")
        if self.max_latency_ms is not None and profile["latency_ms"] > self.max_latency_ms:
            found.append(f"latency {profile['latency_ms']:.3g} ms > {self.max_latency_ms:g} ms")
        return found


def infeasible_score(oracle, num_classes: int) -> float:
    """A score below every real trial, so the oracle steers away from models over the budget.

    0 for accuracy-like objectives; for losses the worse of a uniform guess's cross-entropy
    and the worst loss seen.
    """
    try:
        scores = [t.score for t in oracle.trials.values() if t.status == "COMPLETED" and t.score is not None]
    except AttributeError:  # a distributed worker's OracleClient has no trial list
        scores = []
    if oracle.objective.direction == "max":
        return float(min(scores + [0.0]))
    chance = math.log(max(num_classes, 2))  # cross-entropy of a uniform guess
    return float(max(scores + [chance]))


def check_final_share(share: float | None, time_budget: float | None, then_fit: str | None) -> None:
    """A final share needs a time budget to share and a final model that is retrained into it."""
    if share is None:
        return
    if not 0 < share < 1:
        raise ConfigError(f"--final-share is the part of --time-budget kept for the final fit, between 0 and 1 "
                          f"(exclusive); got {share}. Try 0.5.")
    if not time_budget or then_fit != "retrain":
        raise ConfigError(f"--final-share {share} keeps part of --time-budget for retraining the best settings: "
                          f"add --time-budget and --then-fit (retrain, not reuse).")


class TimeLimit(keras.callbacks.Callback):
    """Stops a trial whose remaining epochs would run past ``deadline`` (a ``clock()`` reading).

    The pace is measured, not guessed from the settings: after the first ``WARMUP`` batches of
    each ``model.fit`` (they trace the step function and fill the decoded-image cache of a new
    image size), ``TIMED`` batches give the seconds per step, so a trial that cannot finish is
    stopped within seconds of starting; then each epoch's own seconds, validation included,
    are checked at its end. Before this, a 96 px, width 1.5 trial never measured took 347 s on
    intel_scenes when the longest so far had taken 86 s, and the final fit got 290 of its 450 s.

    ``needed`` holds the seconds the trial still needed when it was stopped (None: not stopped),
    ``left`` the seconds then left before the deadline, and ``epoch`` the epoch it was in.
    """

    WARMUP = 3
    TIMED = 5

    def __init__(self, deadline: float, end: int, steps: int, clock: Callable[[], float] = time.perf_counter):
        super().__init__()
        self.deadline, self.end, self.steps, self.clock = deadline, int(end), int(steps), clock
        self.needed: float | None = None
        self.left: float | None = None
        self.epoch: int | None = None
        self._epoch_seconds: float | None = None
        self._epoch_started = self._timed_from = None

    def on_train_begin(self, logs=None):
        self._epoch_seconds = None  # another phase: another step function, another pace

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self._epoch_started, self._timed_from = epoch, self.clock(), None

    def on_train_batch_end(self, batch, logs=None):
        if self._epoch_seconds is not None or self.epoch is None:
            return  # the phase's first epoch is measured whole now
        if batch == self.WARMUP - 1:
            self._timed_from = self.clock()
        elif self._timed_from is not None and batch == self.WARMUP - 1 + self.TIMED:
            pace = (self.clock() - self._timed_from) / self.TIMED
            rest_of_epoch = (self.steps - batch - 1) * pace
            self._check(rest_of_epoch + (self.end - self.epoch - 1) * self.steps * pace)

    def on_epoch_end(self, epoch, logs=None):
        self._epoch_seconds = self.clock() - self._epoch_started
        if epoch + 1 < self.end:
            self._check((self.end - epoch - 1) * self._epoch_seconds)

    def _check(self, needed: float) -> None:
        left = self.deadline - self.clock()
        if self.needed is None and needed > left:
            self.needed, self.left = needed, max(left, 0.0)
            self.model.stop_training = True
