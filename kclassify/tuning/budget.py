"""A search's budgets: deployment limits checked before a trial trains, the time budget's final share and the
final model's data.

Kept free of TensorFlow: the CLI checks these settings before TensorFlow loads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ConfigError


@dataclass(frozen=True)
class Budget:
    """Deployment limits: a trial over them is scored infeasible and not trained.

    Args:
        max_params: most parameters a model may have.
        max_latency_ms: slowest single-image latency allowed, measured on this machine
            through LiteRT (see :func:`kclassify.models.profile.measure_latency`).
        measure_latency: record latency even without a latency limit (costs one LiteRT
            conversion per architecture, seconds each, longer for larger backbones; measured:
            docs/benchmarks.md, "tune's time, draws, memory and latency").
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


# What the final model of ``tune --then-fit`` trains on; the keys are the valid --final-data values.
FINAL_DATA = {
    "train": "the training split, as every trial did, with validation metrics",
    "train+val": "the training and validation splits together (the validation split has ranked the "
                 "settings; as KerasTuner recommends and AutoKeras' final fit does): more images, no validation "
                 "metrics",
}


def check_final_data(final_data: str, then_fit: str | None) -> None:
    """Training the final model on the validation split too needs a final model that is retrained."""
    if final_data not in FINAL_DATA:
        raise ConfigError(f"--final-data {final_data!r} is not one of {', '.join(FINAL_DATA)}.")
    if final_data != "train" and then_fit != "retrain":
        raise ConfigError(f"--final-data {final_data} retrains the best settings on more images: add --then-fit "
                          f"(retrain, not reuse: the best trial's own model trained on the training split alone).")


def check_time_budget(time_budget: float | None, distributed: str | None) -> None:
    """A time budget is kept by the process that runs the trials and sees them all: not a distributed search."""
    if time_budget and distributed:
        raise ConfigError(
            f"--time-budget is not kept in KerasTuner's distributed mode (--distributed {distributed}): the chief "
            f"runs no trial and each worker sees only its own. Size a distributed search with --max-trials instead.")
