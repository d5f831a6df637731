"""``tune``: a KerasTuner search over ``fit``'s settings, resumable, with readable outputs.

The tuning folder holds KerasTuner's own state (``tuner/``, so running the same command
again resumes), ``config.yaml`` (the base settings every trial starts from), ``split.csv``
(the split every trial used), ``trials.csv`` (with each trial's parameters and, when
measured, LiteRT latency), ``best_hparams.yaml`` (loadable by ``kclassify fit --hparams``),
``summary.md`` and a plot. The pieces live beside this module: the tuner and its
defaults-first oracle (``tuner.py``), the deployment budget (``budget.py``), the distributed
set-up (``distributed.py``), a TensorFlow workaround (``tf_workarounds.py``) and the
outputs (``report.py``); ``final.py`` writes the final model (``--then-fit``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import keras_tuner

from .. import config as config_mod
from ..config import Config
from ..data import prepare_for, write_split
from ..errors import ConfigError
from ..runs import DEFAULT_ROOT, default_run_name
from ..textfiles import write_atomic
from ..training.recipe import resolve_precision
from .budget import Budget, check_final_share, check_time_budget
from .distributed import configure_distributed
from .hypermodel import ClassifierHyperModel
from .report import TuneResult, pareto_front, write_outputs
from .space import SearchSpace
from .tuner import ALGORITHMS, SearchSettings, make_tuner

__all__ = ["ALGORITHMS", "Budget", "TuneResult", "configure_distributed", "pareto_front", "tune"]

BASE_SETTINGS = "config.yaml"


def tune(base: Config, space: SearchSpace, *, algorithm: str = "random", max_trials: int = 10,
         output: str | Path | None = None, objective: str = "val_accuracy", executions_per_trial: int = 1,
         verbose: int = 0, distributed: str | None = None, time_budget: float | None = None,
         limits: Budget | None = None, min_epochs: int = 3, then_fit: bool | str = False,
         final_share: float | None = None, started: float | None = None) -> TuneResult | None:
    """Search ``space`` and write a tuning folder.

    With ``distributed='worker'`` (see :func:`configure_distributed`) this process only
    runs trials for the chief and returns None; the chief writes the outputs.
    ``time_budget`` (seconds) starts no new trial once spent; with ``then_fit`` (the caller
    writes the final model afterwards with :func:`kclassify.tuning.final.best_run`, as ``tune
    --then-fit`` does: True or ``"retrain"``, or ``"reuse"``) it covers that too: no new trial
    starts once the time left would not cover the longest trial so far plus retraining the best
    trial so far (estimated from its seconds per epoch; nothing when ``reuse`` keeps it), and a
    trial that turns out longer than the time left (its pace measured after a few batches and at
    each epoch's end) is stopped and recorded STOPPED, so the final model keeps its time.
    ``final_share`` (0-1, with ``time_budget`` and ``then_fit="retrain"``) keeps that share of the
    budget for the final model instead: the search stops earlier, and ``best_run(seconds=...)``
    trains the best settings for as many epochs as the time left holds (a ``fit`` with that time
    budget): short trials rank the settings, one long fit trains them.
    ``limits`` (max parameters, max LiteRT latency) are checked before a trial trains: a trial
    over them is recorded INFEASIBLE with its cost and scored below every real trial. Each
    trial logs to ``logs/`` with KerasTuner's TensorBoard HParams integration, so trials can
    be compared in TensorBoard's HParams tab. ``started`` (a ``time.perf_counter()`` reading) is when
    the time budget began, if before this call (the CLI's start: TensorFlow's import and the data's
    checks count too); by default, now.

    The first trial is ``base`` itself (every searched setting at its base value, where the
    space admits it), so the search never ends below what ``fit`` with the same settings
    scores. The resolved base settings are written to ``config.yaml``; a resumed search
    must have the same ones. ``fit --config config.yaml --hparams best_hparams.yaml``
    retrains the best trial. Hyperband's smallest rung is ``min_epochs``.

    Example:
        >>> from kclassify.tuning import load_space
        >>> result = tune(Config(), load_space("default"), algorithm="random", max_trials=3)
        >>> sorted(result.best_hparams) [:2]
        ['batch_size', 'dropout']
    """
    check_time_budget(time_budget, distributed)
    folder = Path(output) if output else DEFAULT_ROOT / ("tune-" + default_run_name(base.data.data))
    folder.mkdir(parents=True, exist_ok=True)
    split_file = folder / "split.csv"
    base = resolve_precision(base, folder / BASE_SETTINGS)  # once per search: every trial trains as the first did
    if distributed != "worker":
        _check_base_settings(folder, base)
    data = prepare_for(base, split_file if split_file.is_file() else None)
    if distributed != "worker":
        write_split(split_file, data.items())
    hypermodel = ClassifierHyperModel(base, space, data, folder / "cache")
    direction = "min" if objective.endswith("loss") else "max"
    then_fit = "retrain" if then_fit is True else (then_fit or None)
    check_final_share(final_share, time_budget, then_fit)
    settings = SearchSettings(max_trials=max_trials, started=time.perf_counter() if started is None else started,
                              time_budget=time_budget, then_fit=then_fit, final_share=final_share,
                              limits=limits or Budget())
    tuner = make_tuner(algorithm, hypermodel, keras_tuner.Objective(objective, direction), folder, settings,
                       base.train.seed, executions_per_trial, base.train.epochs, min_epochs)
    if distributed != "worker":  # the oracle (the chief's, when distributed) knows the space up front
        hypermodel.declare(tuner.oracle.hyperparameters)
    import keras

    # KerasTuner gives each trial its own folder under logs/ and writes its hyperparameters
    # for TensorBoard's HParams plugin when it finds a TensorBoard callback.
    tuner.search(verbose=verbose, callbacks=[keras.callbacks.TensorBoard(str(folder / "logs"), write_graph=False)])
    if distributed == "worker":
        return None
    if distributed == "chief":  # the workers ran and measured the trials
        for path in sorted(folder.glob("trial_stats-*.json")):
            tuner.trial_stats.update(json.loads(path.read_text()))
    return write_outputs(folder, tuner, space, objective, settings.limits)


def base_settings(folder: Path, base: Config) -> Config:
    """The settings every trial starts from, with the search's own split and the precision it started
    with (``--mixed-precision`` auto resolved once per search: what ``config.yaml`` holds)."""
    return resolve_precision(base, folder / BASE_SETTINGS).replace(split_file=str((folder / "split.csv").resolve()))


def _check_base_settings(folder: Path, base: Config) -> None:
    """Write ``config.yaml``; on a resumed search, refuse base settings that differ from it."""
    file = folder / BASE_SETTINGS
    current = base_settings(folder, base)
    if file.is_file():
        diff = config_mod.settings_changes(file, current)  # split_file aside: the search's own split.csv is used
        if diff:
            raise ConfigError(
                f"{folder} holds a search started with other base settings ({diff}). Rerun it with the "
                f"same settings (see {file}) to resume, or pass another --output."
            )
        return
    write_atomic(file, config_mod.to_yaml(current))
