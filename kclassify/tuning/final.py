"""The search's final model in ``<tuning folder>/best_run``: the best settings retrained, or the best trial's own.

``retrain`` (``tune --then-fit``) trains the best settings anew with ``fit``: a fresh run with the
search's split, history and checkpoints. It scores a little differently from the trial itself (a
new initialisation and, for a Hyperband trial, one schedule instead of rungs; keras-tuner #687).
``reuse`` (``tune --then-fit reuse``) keeps the model the best trial already trained, at its best
epoch on the search objective (KerasTuner's checkpoint), when that trial trained for all
``--epochs`` (a Hyperband trial only in its last rung): no time is spent training it twice. A best
trial that stopped at an earlier rung is retrained, as with ``retrain``.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path

import keras_tuner
import yaml

from ..config import Config
from ..data import prepare_data
from ..training.fit import FitResult, fit, save_run
from .hypermodel import ClassifierHyperModel
from .space import SearchSpace
from .tuner import ran_all_epochs

log = logging.getLogger(__name__)

BEST_RUN = "best_run"


def best_run(folder: Path, base: Config, space: SearchSpace, mode: str = "retrain", verbose="auto") -> FitResult:
    """Write ``folder/best_run`` from the search in ``folder`` (see the module's docstring for ``mode``).

    ``base`` are the search's base settings with its split (``tune.base_settings``).
    """
    folder = Path(folder)
    best = yaml.safe_load((folder / "best_hparams.yaml").read_text())
    settings = base.replace(**best["hparams"])
    if mode == "reuse":
        trial_dir = folder / "tuner" / f"trial_{best['trial']}"  # KerasTuner's own layout
        hp = keras_tuner.HyperParameters.from_config(json.loads((trial_dir / "trial.json").read_text())["hyperparameters"])
        checkpoint = trial_dir / "checkpoint.weights.h5"
        if ran_all_epochs(hp.values, settings.train.epochs) and checkpoint.is_file():
            return _reuse(folder, base, space, hp, checkpoint, best)
        log.info("the best trial (%s) trained %s of %d epochs: retraining its settings for all of them",
                 best["trial"], hp.values.get("tuner/epochs"), settings.train.epochs)
    return fit(settings, output=folder / BEST_RUN, verbose=verbose)


def _reuse(folder: Path, base: Config, space: SearchSpace, hp, checkpoint: Path, best: dict) -> FitResult:
    started = time.time()
    d = base.data
    data = prepare_data(d.data, val_fraction=d.val_fraction, test_fraction=d.test_fraction, seed=base.train.seed,
                        split_file=folder / "split.csv", min_images=d.min_images)
    hypermodel = ClassifierHyperModel(base, space, data, folder / "cache")
    model = hypermodel.build(hp)  # the trial's architecture and recipe; then its trained weights
    with warnings.catch_warnings():  # the checkpoint holds the optimizer's state too; a new model's is unbuilt
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        model.load_weights(checkpoint)
    log.info("best_run: trial %s's own model (%s %.4f at its best epoch), not retrained",
             best["trial"], best["objective"], best["score"])
    return save_run(model, hypermodel.config_for(hp), data, folder / BEST_RUN, started=started,
                    from_trial={"folder": str(folder.resolve()), "trial": best["trial"], best["objective"]: best["score"]})
