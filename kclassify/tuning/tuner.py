"""The KerasTuner tuner kclassify runs: budget checks, per-trial costs and log lines, defaults first."""

from __future__ import annotations

import json
import logging
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras_tuner

from ..errors import ConfigError
from ..textfiles import write_json
from ..upstream import QuietContinuation, has_value_source, is_duplicate, max_collisions, plan_hyperband, \
    replace_value_source
from .budget import Budget, infeasible_score
from .report import best_feasible
from .tf_workarounds import atomic_tuner_state, released_custom_gradients
from .time_limit import TimeLimit

log = logging.getLogger(__name__)

ALGORITHMS = {
    "random": keras_tuner.RandomSearch,
    "bayesian": keras_tuner.BayesianOptimization,
    "hyperband": keras_tuner.Hyperband,
}


@dataclass(frozen=True)
class SearchSettings:
    """What kclassify's tuner needs beyond KerasTuner's own arguments (see :func:`kclassify.tuning.tune`).

    Attributes:
        max_trials: the search's trial count (the log's "trial 3/10").
        started: a ``time.perf_counter()`` reading: when the time budget began.
        time_budget: seconds after ``started`` no new trial starts; None: no clock.
        then_fit: ``"retrain"`` or ``"reuse"`` when the final model's time must be kept, else None.
        final_share: with ``then_fit="retrain"``, the share of ``time_budget`` kept for the final fit.
        limits: the deployment budget (parameters, LiteRT latency) checked before a trial trains.
    """

    max_trials: int
    started: float = field(default_factory=time.perf_counter)
    time_budget: float | None = None
    then_fit: str | None = None
    final_share: float | None = None
    limits: Budget = field(default_factory=Budget)


class KClassifyTuner:
    """Mixed into a KerasTuner tuner: the deployment budget, per-trial costs, one log line per trial.

    Built by :func:`make_tuner`, which passes ``settings`` (a :class:`SearchSettings`) and ``folder``
    beside KerasTuner's own constructor arguments.
    """

    def __init__(self, *args, settings: SearchSettings, folder: Path, **kwargs):
        super().__init__(*args, **kwargs)
        self.settings = settings
        worker = os.environ.get("KERASTUNER_TUNER_ID", "")  # one file per distributed worker
        self.worker = worker.startswith("tuner")  # a distributed worker sees its own trials only
        suffix = "-" + worker if self.worker else ""
        self.stats_file = folder / f"trial_stats{suffix}.json"
        self.trial_stats = json.loads(self.stats_file.read_text()) if self.stats_file.is_file() else {}
        self.profiles_file = folder / f"profiles{suffix}.json"
        self.trial_started = None
        try:
            self.done = len([t for t in self.oracle.trials.values() if t.status != "RUNNING"])
        except AttributeError:  # a distributed worker's OracleClient has no trial list
            self.done = 0

    def run_trial(self, trial, *args, **kwargs):
        budget: Budget = self.settings.limits
        profile = self.hypermodel.profile(trial.hyperparameters, latency=budget.latency, threads=budget.threads)
        write_json(self.profiles_file, self.hypermodel.profiles)  # atomic: a kill -9 leaves the old file
        reasons = budget.violations(profile)
        self.trial_stats[trial.trial_id] = {**profile, "infeasible": "; ".join(reasons)}
        if reasons:  # scored below every real trial, so the oracle steers away; never trained
            return self._penalty()
        parent = trial.hyperparameters.values.get("tuner/trial_id")  # a Hyperband continuation's earlier rung
        if parent and "stopped_in_epoch" in self.trial_stats.get(parent, {}):
            self.trial_stats[trial.trial_id].update(infeasible=f"continues trial {parent}, stopped for time",
                                                    stopped_in_epoch=0)
            return self._penalty()  # its checkpoint holds a few batches' training, not a rung's
        limit = self.time_limit()
        if limit and parent and self._rules_out(limit, trial, parent):  # its pace is its earlier rung's
            self.trial_stats[trial.trial_id].update(infeasible=limit.reason(), stopped_in_epoch=0)
            return self._penalty()
        self.hypermodel.time_limit = limit
        try:
            with released_custom_gradients():
                results = super().run_trial(trial, *args, **kwargs)
        finally:
            self.hypermodel.time_limit = None
        if limit and limit.stopped:  # its score is of a half-trained model
            self.trial_stats[trial.trial_id].update(infeasible=limit.reason(), stopped_in_epoch=limit.epoch + 1)
            return self._penalty()
        return results

    def _rules_out(self, limit: TimeLimit, trial, parent: str) -> bool:
        """Whether a Hyperband continuation, at its earlier rung's pace, cannot fit in the time left.

        Found on intel_scenes (seed 8): continuations of 18 epochs started because the time left was
        more than the longest trial so far, and the clock stopped both partway, their training thrown
        away (measured: docs/benchmarks.md, "Slow days (seeds 3-11)").
        """
        epochs = self.hypermodel.config_for(trial.hyperparameters).train.epochs
        parent_values = self.oracle.get_trial(parent).hyperparameters.values
        per_epoch = seconds_per_epoch(self.trial_stats.get(parent, {}), parent_values, epochs)
        values = trial.hyperparameters.values
        to_run = int(values["tuner/epochs"]) - int(values.get("tuner/initial_epoch", 0))
        refit = int(values["tuner/epochs"]) if limit.refit_own else epochs
        return bool(per_epoch) and limit.rules_out(per_epoch, to_run, refit)

    def _penalty(self) -> dict:
        return {self.oracle.objective.name: infeasible_score(self.oracle, len(self.hypermodel.data.classes))}

    def on_trial_begin(self, trial):
        self.trial_started = time.perf_counter()
        super().on_trial_begin(trial)

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        seconds = time.perf_counter() - (self.trial_started or time.perf_counter())
        stats = self.trial_stats.setdefault(trial.trial_id, {})
        stats["seconds"] = seconds
        stats["rss_mb"] = _resident_mb()  # trial after trial, this should stay flat
        write_json(self.stats_file, self.trial_stats)  # kept across resumes; atomic
        self.done += 1
        done = self.done
        total = None if self.worker else self.settings.max_trials
        best = best_feasible(self.oracle, self.trial_stats, 1)
        score = trial.score
        if score is None and self.worker:  # the chief scored it
            score = self.oracle.get_trial(trial.trial_id).score
        elapsed = time.perf_counter() - self.settings.started
        eta = elapsed / max(done, 1) * max(total - done, 0) if total else 0
        budget = self.settings.time_budget
        reserve = self.reserve(best[0]) if budget and best else 0.0
        if budget:  # no new trial starts once budget - reserve is spent
            eta = min(eta, max(budget - reserve - elapsed, 0) + seconds)
        if budget and elapsed + reserve > budget and not self.worker:
            retrain = reserve > longest_trial(self.trial_stats)
            kept = (f" (keeping {reserve:.0f}s for the longest trial{' and retraining the best' if retrain else ''})"
                    if reserve else "")
            log.info("time budget of %.0fs spent after %d trial(s)%s: stopping the search", budget, done, kept)
            self.oracle.max_trials = len(self.oracle.trials)  # the oracle then answers STOPPED
        values = {k: v for k, v in trial.hyperparameters.values.items() if not k.startswith("tuner/")}
        if stats.get("infeasible"):  # over a deployment limit, or stopped by its clock (time_limit.TimeLimit)
            status = ("stopped" if "stopped_in_epoch" in stats else "infeasible") + f" ({stats['infeasible']})"
        else:
            status = trial.status.lower()
        if stats.get("infeasible"):
            score = None
        log.info("trial %d/%s %s: %s score %s | best %s | %.0fs, elapsed %.0fs, ETA %.0fs",
                 done, total or "?", status, values,
                 f"{score:.4f}" if score is not None else "-",
                 f"{best[0].score:.4f}" if best and best[0].score is not None else "-", seconds, elapsed, eta)

    def reserve(self, best) -> float:
        """Seconds of the budget a new trial may not start into: with then_fit, the longest trial plus the final model's.

        Without then_fit, 0: the search ends at most a trial after the budget. A trial that
        turns out longer than the longest so far is stopped when it would eat into the final
        model's time (:meth:`time_limit`).
        """
        if not self.settings.then_fit:
            return 0.0
        return longest_trial(self.trial_stats) + self.final_reserve(best)

    def final_reserve(self, best) -> float:
        """Seconds of the budget kept for the final model, ``best`` being the best trial so far.

        With then_fit ``reuse``, a best trial that trained for all epochs is kept as it is:
        nothing to retrain. With a final share (``tune(final_share=...)``), that share of the
        budget is kept for retraining the best, or the time retraining it for all epochs takes
        if that is longer.
        """
        epochs = self.hypermodel.config_for(best.hyperparameters).train.epochs
        if self.settings.then_fit == "reuse" and ran_all_epochs(best.hyperparameters.values, epochs):
            return 0.0
        share = self.settings.final_share
        final = share * self.settings.time_budget if share else 0.0  # tune checks that a budget comes with it
        return max(final, self.refit_reserve(best))

    def time_limit(self) -> TimeLimit | None:
        """The clock for the next trial: it stops the trial if it would eat into the final model's time.

        None, and the trial runs to its end, without a time budget or then_fit, on a distributed
        worker (which does not see the other workers' trials), and while no trial has finished to
        fall back on.
        """
        budget = self.settings.time_budget
        if not budget or not self.settings.then_fit or self.worker:
            return None
        best = best_feasible(self.oracle, self.trial_stats, 1)
        if not best:
            return None
        return TimeLimit(self.settings.started + budget, kept=self.final_reserve(best[0]),
                         runs=self.executions_per_trial, refit_own=bool(self.settings.final_share))

    def refit_reserve(self, trial) -> float:
        """Seconds retraining ``trial``'s settings for all epochs will take, from its own seconds per epoch.

        A trial's time also holds building the model and adapting its normalization, which a long
        fit pays once, while fit saves checkpoints each epoch; on intel_scenes the two about cancel
        for 9-epoch trials (measured: docs/benchmarks.md, "tune's time, draws, memory and latency"),
        so the estimate is seconds per epoch x epochs.
        """
        epochs = self.hypermodel.config_for(trial.hyperparameters).train.epochs
        per_epoch = seconds_per_epoch(self.trial_stats.get(trial.trial_id, {}), trial.hyperparameters.values, epochs)
        return per_epoch * epochs if per_epoch else 0.0


def seconds_per_epoch(stats: dict, values: dict, epochs: int) -> float | None:
    """A trial's seconds per epoch it ran (``trial_stats.json``'s entry and its hyperparameter values).

    A Hyperband continuation ran ``tuner/epochs - tuner/initial_epoch`` epochs; a trial of another
    tuner ran all ``epochs``. None when the trial was not measured.
    """
    ran = int(values.get("tuner/epochs", epochs)) - int(values.get("tuner/initial_epoch", 0))
    if not stats.get("seconds") or ran <= 0:
        return None
    return stats["seconds"] / ran


def longest_trial(trial_stats: dict) -> float:
    """Seconds of the longest trial so far (trial_stats.json)."""
    return max((s.get("seconds", 0.0) for s in trial_stats.values()), default=0.0)


def ran_all_epochs(values: dict, epochs: int) -> bool:
    """Whether a trial with these hyperparameter values trained to the last epoch (a Hyperband rung may not)."""
    return int(values.get("tuner/epochs", epochs)) >= int(epochs)


def make_tuner(algorithm: str, hypermodel, objective, folder: Path, settings: SearchSettings, seed: int,
               executions: int, max_epochs: int, min_epochs: int = 1):
    """A KerasTuner tuner of ``algorithm`` with kclassify's mixin, resuming what ``folder`` holds.

    Hyperband's rungs start at ``min_epochs`` (KerasTuner's own start is 1 epoch, which ranks
    BatchNorm models trained from scratch on noise).
    """
    if algorithm not in ALGORITHMS:
        raise ConfigError(f"Unknown algorithm {algorithm!r}. Valid: {', '.join(ALGORITHMS)}.")
    atomic_tuner_state()  # a kill -9 must never leave an empty state file behind
    base = ALGORITHMS[algorithm]
    cls = type(f"KClassify{base.__name__}", (KClassifyTuner, QuietContinuation, base), {})
    common = dict(hypermodel=hypermodel, objective=objective, directory=str(folder), project_name="tuner",
                  overwrite=False, seed=seed, max_retries_per_trial=0, max_consecutive_failed_trials=3,
                  settings=settings, folder=folder)
    if algorithm == "hyperband":
        # Iterations repeat until --max-trials or --time-budget (KerasTuner's default of one iteration
        # ended a search on intel_scenes well before its budget; measured: docs/benchmarks.md, "tune's
        # time, draws, memory and latency").
        tuner = cls(max_epochs=max_epochs, factor=3, hyperband_iterations=0, **common)  # 0: no limit
        tuner.oracle.max_trials = settings.max_trials
        if not tuner.oracle.trials:  # a new search (a resumed one keeps its rungs): plan brackets anew
            plan_hyperband(tuner.oracle, min_epochs, max_epochs)
    else:
        tuner = cls(max_trials=settings.max_trials, executions_per_trial=executions, **common)
    for path in sorted(folder.glob("profiles*.json")):  # architectures measured before (resume, other workers)
        hypermodel.profiles.update(json.loads(path.read_text()))
    defaults_first(tuner.oracle)
    return tuner


def defaults_first(oracle) -> None:
    """The first trial of a new search is the defaults (fit's settings); later draws are well mixed.

    Every oracle draws new values through one private method (random search, Hyperband's new
    brackets, Bayesian optimization's initial points: :func:`kclassify.upstream.replace_value_source`),
    so replacing it here covers all three:

    - a search with no trial yet gets the hyperparameters' defaults, which kclassify sets to
      fit's settings (keras-tuner #604), so the best trial is never worse than them;
    - later draws seed each value from one well-mixed stream per trial. KerasTuner seeds a
      fresh ``random.Random(n)`` per value with n counting up by one per hyperparameter, and
      first draws of nearby seeds are correlated: with seed 42 and 8 hyperparameters, a choice
      between two image sizes came out the same in nearly all of the first trials (measured:
      docs/benchmarks.md, "tune's time, draws, memory and latency").
    """
    if not has_value_source(oracle):  # a distributed worker's OracleClient
        return

    def draw():
        collisions = 0
        while True:
            rng = random.Random(f"kclassify-{oracle.seed}-{len(oracle.trials)}-{collisions}")
            first = not oracle.trials and not collisions
            hps = keras_tuner.HyperParameters()
            for hp in oracle.hyperparameters.space:
                hps.merge([hp])
                if hps.is_active(hp):
                    hps.values[hp.name] = hp.default if first else hp.random_sample(rng.getrandbits(32))
            if not is_duplicate(oracle, hps.values):
                return hps.values
            collisions += 1
            if collisions > max_collisions(oracle):
                return None

    replace_value_source(oracle, draw)


def _resident_mb() -> float | None:
    """Resident memory of this process in MiB (Linux), None elsewhere."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
