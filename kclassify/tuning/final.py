"""The search's final model in ``<tuning folder>/best_run``: the best settings retrained, or the best trial's own.

``retrain`` (``tune --then-fit``) trains the best settings anew with ``fit``: a fresh run with the
search's split, history and checkpoints. It scores a little differently from the trial itself (a
new initialisation and, for a Hyperband trial, one schedule instead of rungs; keras-tuner #687).
``reuse`` (``tune --then-fit reuse``) keeps the model the best trial already trained, at its best
epoch on the search objective (KerasTuner's checkpoint), when that trial trained for all
``--epochs`` (a Hyperband trial only in its last rung): no time is spent training it twice. A best
trial that stopped at an earlier rung is retrained, as with ``retrain``.

With ``seconds`` (what ``tune --final-share`` leaves of the time budget), ``retrain`` is a
``fit --time-budget`` of those seconds: as many epochs as fit in them at the pace it measures as it
trains, its cosine decaying over them (planned at first from the best trial's seconds per epoch):
trials a few epochs long rank the settings, and the final model gets the long schedule that training
from scratch needs (on intel_scenes, small_cnn at 96 px with mixup scored best over twice as many
epochs; measured: docs/benchmarks.md, "What shaped the scratch search space"), and ends with the
budget (planned from the trial's pace alone, one final fit ran over its budget when its epochs ran
slower than its trial's; measured: docs/benchmarks.md, "Epoch times from day to day").

With ``final_data="train+val"`` (``tune --final-data train+val``) the retrained model trains on the
validation images too, once they have ranked the settings (KerasTuner's ``get_best_models`` recommends it;
AutoKeras' final fit does): its split is ``final_split.csv`` in the tuning folder, the search's split with
``val`` read as ``train``, and its epochs are planned at the trial's pace times the larger epoch. On
intel_scenes' splits the search with it beat the default fit in the same 15 minutes by more than the
search with the final fit on the training images alone had; where the search kept the defaults, the
validation images helped the same final fit much on one split and changed little on the other
(measured: docs/benchmarks.md, "The final fit on the training and validation images (seeds 18-21)").

With ``distill=K`` (``tune --then-fit --distill K``) the retrained model also learns from the K best
completed trials' own models (an ensemble of teachers, ``fit --teacher``): knowledge the search already
paid for. Each becomes a run folder under ``teachers/`` (its checkpoint at its best epoch, scored on the
test split); the time spent writing them comes out of ``seconds``, and the final fit's own budget
covers the teachers' forward passes, measured as it trains.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path

import keras_tuner
import yaml

from ..config import Config, from_yaml_file
from ..data import prepare_for
from ..data.sources import Item
from ..data.split import read_split, write_split
from ..errors import ConfigError
from ..training.fit import FitResult, fit, save_run
from ..training.callbacks import monitor_mode
from .budget import check_final_data
from .hypermodel import ClassifierHyperModel
from .space import SearchSpace
from .tuner import ran_all_epochs, seconds_per_epoch

log = logging.getLogger(__name__)

BEST_RUN = "best_run"


def best_run(folder: Path, base: Config, space: SearchSpace, mode: str = "retrain", verbose="auto",
             seconds: float | None = None, final_data: str = "train", distill: int = 0) -> FitResult:
    """Write ``folder/best_run`` from the search in ``folder`` (see the module's docstring for ``mode``,
    ``seconds``, ``final_data``, one of ``budget.FINAL_DATA``, and ``distill``).

    ``base`` are the search's base settings with its split (``tune.base_settings``).
    """
    folder = Path(folder)
    best = yaml.safe_load((folder / "best_hparams.yaml").read_text())
    settings = base.replace(**best["hparams"])
    check_final_data(final_data, mode)
    check_distill(distill, mode)
    teachers = []
    if distill:
        began = time.perf_counter()
        teachers = teacher_runs(folder, base, space, best["objective"], distill)
        settings = settings.replace(teacher=",".join(path for path, _ in teachers))
        seconds = None if seconds is None else seconds - (time.perf_counter() - began)
    growth = 1.0
    if final_data == "train+val":
        split, growth = _with_val_as_train(folder)
        settings = settings.replace(split_file=str(split.resolve()))
    if mode == "reuse":
        trial_dir = folder / "tuner" / f"trial_{best['trial']}"  # KerasTuner's own layout
        hp = keras_tuner.HyperParameters.from_config(json.loads((trial_dir / "trial.json").read_text())["hyperparameters"])
        checkpoint = trial_dir / "checkpoint.weights.h5"
        if ran_all_epochs(hp.values, settings.train.epochs) and checkpoint.is_file():
            return _reuse(folder, base, space, hp, checkpoint, best)
        log.info("the best trial (%s) trained %s of %d epochs: retraining its settings for all of them",
                 best["trial"], hp.values.get("tuner/epochs"), settings.train.epochs)
    elif seconds is not None:
        started = folder / BEST_RUN / "config.yaml"  # a final fit cut off earlier resumes with its own plan
        epochs = (from_yaml_file(started).train.epochs if started.is_file()
                  else _epochs_for(folder, best["trial"], settings.train.epochs, seconds, growth))
        _warn_short_teachers(teachers, epochs)
        return fit(settings.replace(epochs=epochs), output=folder / BEST_RUN, verbose=verbose,
                   time_budget=max(seconds, 1.0))
    _warn_short_teachers(teachers, settings.train.epochs)
    return fit(settings, output=folder / BEST_RUN, verbose=verbose)


def final_epochs(per_epoch: float | None, seconds: float, minimum: int) -> int:
    """Epochs of ``per_epoch`` seconds that ``seconds`` hold, less one for the final evaluation; at least ``minimum``."""
    if not per_epoch:
        return minimum
    return max(minimum, int(seconds / per_epoch) - 1)


FINAL_SPLIT = "final_split.csv"


def _with_val_as_train(folder: Path) -> tuple[Path, float]:
    """``folder/final_split.csv``: the search's split with its validation images trained on; and how many
    times the training split's images a final epoch holds."""
    rows = read_split(folder / "split.csv")
    trained = sum(split == "train" for _, split in rows.values())
    items = [Item(path, label, "train" if split == "val" else split) for path, (label, split) in rows.items()]
    path = folder / FINAL_SPLIT
    write_split(path, items)
    return path, sum(i.split == "train" for i in items) / max(trained, 1)


def _epochs_for(folder: Path, trial: str, epochs: int, seconds: float, growth: float = 1.0) -> int:
    """The final fit's epochs: the time left at the best trial's own seconds per epoch, times ``growth``
    (the final epoch's images over a trial's training images)."""
    stats = {}
    for path in folder.glob("trial_stats*.json"):  # a distributed search has one per worker
        stats.update(json.loads(path.read_text()).get(trial, {}))
    values = json.loads((folder / "tuner" / f"trial_{trial}" / "trial.json").read_text())["hyperparameters"]["values"]
    per_epoch = seconds_per_epoch(stats, values, epochs)
    per_epoch = per_epoch * growth if per_epoch else per_epoch
    chosen = final_epochs(per_epoch, seconds, epochs)
    log.info("final fit: %d epochs planned in the %.0fs left (trial %s ran %s s per epoch)", chosen, seconds, trial,
             f"{per_epoch:.1f}" if per_epoch else "?")
    return chosen


def check_distill(distill: int, mode: str | None) -> None:
    """``--distill K`` teaches a final model that is retrained, from at least one trial."""
    if distill < 0:
        raise ConfigError(f"--distill K takes the K best trials as teachers, K >= 1; received {distill}.")
    if distill and mode != "retrain":
        raise ConfigError("--distill teaches the retrained final model: add --then-fit (retrain, not reuse: the "
                          "best trial's own model is not trained again).")


TEACHERS = "teachers"


def short_teachers(teacher_epochs: list[int], final_epochs: int) -> str | None:
    """A warning when the longest-trained teacher ran fewer than half the final fit's epochs, else None.

    Measured (docs/benchmarks.md, "`tune --then-fit --distill 3` against the same search without"): the
    three best trials of a 15-minute Hyperband search had trained 9 epochs each, and the final fit they
    taught (44-87 epochs) scored 2.5 points below the same final fit without them.
    """
    longest = max(teacher_epochs, default=0)
    if not teacher_epochs or 2 * longest >= final_epochs:
        return None
    return (f"--distill: the teachers trained at most {longest} epochs and the final fit plans {final_epochs}: "
            "teachers much shorter than their student pulled the final fit down in our measurement. Give the "
            "search trials of the full schedule (--algorithm random, or a longer --time-budget), or leave "
            "--distill out.")


def _warn_short_teachers(teachers: list[tuple[str, int]], final_epochs: int) -> None:
    message = short_teachers([epochs for _, epochs in teachers], final_epochs)
    if message:
        log.warning(message)


def teacher_runs(folder: Path, base: Config, space: SearchSpace, objective: str,
                 k: int) -> list[tuple[str, int]]:
    """Run folders ``folder/teachers/trial_<id>`` of the ``k`` best completed trials' own models, each with
    the epochs its trial trained (a Hyperband trial: its rung's)."""
    trials = []
    for path in (folder / "tuner").glob("trial_*/trial.json"):
        doc = json.loads(path.read_text())
        if doc.get("status") == "COMPLETED" and doc.get("score") is not None \
                and (path.parent / "checkpoint.weights.h5").is_file():
            trials.append(doc)
    trials.sort(key=lambda d: d["score"], reverse=monitor_mode(objective) == "max")
    if not trials:
        raise ConfigError(f"--distill found no completed trial with a saved model in {folder / 'tuner'}: run more "
                          "trials, or leave --distill out.")
    if len(trials) < k:
        log.warning("--distill %d: only %d trial(s) completed; distilling from those", k, len(trials))
    runs = []
    for doc in trials[:k]:
        out = folder / TEACHERS / f"trial_{doc['trial_id']}"
        if not (out / "model.keras").is_file():
            hp = keras_tuner.HyperParameters.from_config(doc["hyperparameters"])
            model, cfg, data, batches = _trial_model(folder, base, space, hp,
                                                     folder / "tuner" / f"trial_{doc['trial_id']}")
            result = save_run(model, cfg, data, out, started=time.time(), train_batches=batches,
                              from_trial={"folder": str(folder.resolve()), "trial": doc["trial_id"], objective: doc["score"]})
            log.info("teacher: trial %s (%s %.4f), test accuracy %s", doc["trial_id"], objective, doc["score"],
                     (result.metrics.get("test") or {}).get("accuracy"))
        runs.append((str(out), int(doc["hyperparameters"]["values"].get("tuner/epochs", base.train.epochs))))
    return runs


def _trial_model(folder: Path, base: Config, space: SearchSpace, hp, trial_dir: Path):
    """A trial's own model (its checkpoint at its best epoch), its settings, the search's data and, for a trial
    trained with ``--ema``, its training batches (``save_run`` recomputes the average's BatchNorm statistics)."""
    data = prepare_for(base, folder / "split.csv")
    hypermodel = ClassifierHyperModel(base, space, data, folder / "cache")
    model = hypermodel.build(hp)  # the trial's architecture and recipe; then its trained weights
    with warnings.catch_warnings():  # the checkpoint holds the optimizer's state too; a new model's is unbuilt
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        model.load_weights(trial_dir / "checkpoint.weights.h5")
    cfg = hypermodel.config_for(hp)
    return model, cfg, data, hypermodel.recipe(hp).final_batches() if cfg.train.ema > 0 else None


def _reuse(folder: Path, base: Config, space: SearchSpace, hp, checkpoint: Path, best: dict) -> FitResult:
    started = time.time()
    model, cfg, data, batches = _trial_model(folder, base, space, hp, checkpoint.parent)
    log.info("best_run: trial %s's own model (%s %.4f at its best epoch), not retrained",
             best["trial"], best["objective"], best["score"])
    return save_run(model, cfg, data, folder / BEST_RUN, started=started, train_batches=batches,
                    from_trial={"folder": str(folder.resolve()), "trial": best["trial"], best["objective"]: best["score"]})
