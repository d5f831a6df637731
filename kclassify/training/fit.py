"""``fit``: train a classifier from a data source into a run folder, resumably."""

from __future__ import annotations

import csv
import dataclasses
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from .. import config as config_mod
from ..config import Config
from ..data import PreparedData, prepare_for, recommended_settings, write_split
from ..data.pipeline import cache_target, decoded
from ..errors import ConfigError, RunFolderError
from ..models.build import float32_model, with_input_size
from ..runs import DEFAULT_ROOT, RunFolder, default_run_name, host, versions, write_excluded
from ..textfiles import write_atomic, write_json, write_labels
from . import averaging, multiworker
from .callbacks import monitor_mode, standard_callbacks, truncate_history
from .losses import build_loss
from .recipe import (Recipe, build_model, keras_fit, make_recipe, policy_for, precision, resolve,
                     resolve_precision, seed_everything, train)
from .strategy import select_strategy
from .time_budget import OPEN_END, TimeBudget

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    """What a fit made: its run folder, the model it saved, the per-epoch history, the test metrics.

    ``model`` is the saved model (the kept weights, ``--keep``: the last epoch's or the best's): the trained, compiled model, or, when it
    trained in mixed precision, its float32 copy, which is not compiled (``compile`` it to call
    ``evaluate``; ``predict`` needs nothing).
    """

    run_dir: Path
    model: Any
    history: dict[str, list[float]]
    metrics: dict[str, Any]


def fit(config: Config | str | Path | None = None, *, hparams: str | Path | None = None,
        output: str | Path | None = None, callbacks=(), verbose: int | str = "auto",
        time_budget: float | None = None, started: float | None = None, **settings) -> FitResult:
    """Train a classifier and write a complete run folder.

    Running the same call again with the same ``output`` after an interruption
    resumes from the last finished epoch.

    Args:
        config: resolved settings, or a YAML file of them (a run's config.yaml); ``settings``
            override single ones by flat name, e.g. ``epochs=5``. Layered as the CLI does:
            defaults < the data's recommendations < ``config`` < ``hparams`` < ``settings``.
        hparams: a YAML file of settings over ``config`` (e.g. a search's best_hparams.yaml).
        output: the run folder (default ``saved_models/<data>-<time>``).
        callbacks: extra Keras callbacks, run after kclassify's own.
        time_budget: seconds for the whole call, from ``started`` (a ``time.perf_counter()``
            reading; default now): the last phase trains for as many epochs as fit in them with
            the evaluation after it, its cosine schedule planned over those epochs from the pace
            measured as it goes, and ``epochs`` only the plan until the first batches are timed
            (see :mod:`kclassify.training.time_budget`). At least one epoch is trained. The
            finished run's config.yaml holds the epochs trained, so ``fit --config`` retrains it
            without the budget; run.json holds the budget. A resumed run plans its remaining
            epochs from the budget it is given then.

    Example:
        >>> from kclassify import fit
        >>> result = fit(data="builtin:digits", image_size=32, epochs=15)
        >>> result.metrics["test"]["accuracy"] > 0.95
        True
    """
    cfg = _layered(config, hparams, settings)
    clock_started = time.perf_counter() if started is None else started
    started = time.time()
    cfg = resolve(cfg)
    _check_budget(time_budget, cfg)
    if warning := keep_warning(cfg.train):
        log.warning(warning)
    strategy = select_strategy(cfg.train.strategy)  # first: MultiWorkerMirrored must precede other TF work
    chief_run = RunFolder(Path(output) if output else DEFAULT_ROOT / default_run_name(cfg.data.data))
    # Only the chief writes the run folder; other workers write into a temporary one.
    run = chief_run if multiworker.is_chief() else RunFolder(Path(tempfile.mkdtemp(prefix="kclassify-")))
    cfg = resolve_precision(cfg, run.config if run.is_started() and not run.is_complete() else None)
    resuming = _open_run_folder(run, cfg)
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    data = _prepare(cfg, run, resuming)
    taught_by = run.read_json(run.run_json).get("teachers") if resuming and run.run_json.is_file() else None
    _write_run_start(run, cfg, data, started)

    recipe = make_recipe(cfg, data, _cached_images(cfg, data, run), strategy.num_replicas_in_sync)
    _record_teachers(run, recipe.teachers, taught_by)
    budget = _time_budget(clock_started + time_budget, data) if time_budget else None
    with precision(cfg.train.mixed_precision), strategy.scope():
        model = build_model(recipe)
        history, throughput = _train(model, recipe, run, list(callbacks), verbose, strategy, chief_run, budget)
    if run is not chief_run:  # a worker: the chief evaluates and saves
        shutil.rmtree(run.root, ignore_errors=True)
        return FitResult(chief_run.root, model, history, {})
    kept = kept_epoch(run, cfg.train.keep, recipe.monitor)
    model = _saved_form(_kept_model(run, model, cfg.train.keep), recipe.cfg, recipe.final_batches())
    metrics = _evaluate_test(model, data)
    _write_run_end(run, model, metrics, throughput, started, data, kept=kept)
    if budget:  # once complete: a run killed before this resumes against its own (planned) settings
        _budgeted_settings(run, cfg, recipe, budget.epochs_done, time_budget)
    log.info("run folder: %s  test accuracy: %s", run.root,
             f"{metrics['test']['accuracy']:.4f}" if metrics["test"] else "n/a (no test split)")
    return FitResult(run.root, model, history, metrics)


def _layered(config: Config | str | Path | None, hparams: str | Path | None, settings: dict) -> Config:
    """fit's settings: defaults < the data's recommendations < ``config`` < ``hparams`` < ``settings``."""
    if isinstance(config, Config):
        return config_mod.build_config(config.flat(), config_mod.load_yaml(hparams) if hparams else {}, settings)
    return config_mod.layered(config, hparams, settings, recommended=recommended_settings)


def _check_budget(time_budget: float | None, cfg: Config) -> None:
    if time_budget is not None and time_budget <= 0:
        raise ConfigError(f"--time-budget is the seconds the fit may take, more than 0; received {time_budget}. "
                          "Give a duration like 90s, 30m or 2h, or leave it out to train for --epochs.")
    if time_budget and (cfg.train.strategy == "multiworker" or (cfg.train.strategy == "auto" and multiworker.cluster())):
        raise ConfigError("--time-budget is not kept by a multi-worker fit (each worker would stop on its own "
                          "clock, and the others wait for it forever): give --epochs instead.")


def save_run(model, cfg: Config, data: PreparedData, output: str | Path, *, started: float, train_batches=None,
             **info) -> FitResult:
    """A complete run folder for ``model``, trained elsewhere with ``cfg`` on ``data`` (a search's trial).

    It holds what ``fit`` writes (settings, split, labels, the model, test metrics, run.json with
    ``info`` added) but no history.csv or checkpoints, so every later command takes it as a fit's.
    ``train_batches``: the training pipeline (``Recipe.final_batches``), which a model trained with
    ``--ema`` needs to get its own BatchNorm statistics.
    """
    run = RunFolder(Path(output))
    cfg = resolve_precision(cfg)
    _open_run_folder(run, cfg)
    _write_run_start(run, cfg, data, started)
    model = _saved_form(model, resolve(cfg), train_batches)
    metrics = _evaluate_test(model, data)
    _write_run_end(run, model, metrics, [], started, data, **info)
    return FitResult(run.root, model, {}, metrics)


def _saved_form(model, cfg: Config, train_batches=None):
    """The model as the run folder saves it: computing in float32, taking the input size of ``cfg`` (resolved);
    trained with ``--ema``, its BatchNorm statistics recomputed for the averaged weights over ``train_batches``
    (in float32, as every later command computes)."""
    model = with_input_size(float32_model(model), cfg.data.image_size, cfg.model.input_scale)
    if cfg.train.ema > 0:
        if train_batches is None:
            raise ValueError("a model trained with --ema is saved with its training batches (BatchNorm statistics)")
        averaging.finish(model, train_batches)
    return model


def _open_run_folder(run: RunFolder, cfg: Config) -> bool:
    """Create the folder, or check that an unfinished one was started by the same settings."""
    if run.is_complete():
        raise RunFolderError(
            f"{run.root} already holds a finished run. Pass another --output, or delete the "
            "folder to train again."
        )
    if not run.is_started():
        run.root.mkdir(parents=True, exist_ok=True)
        return False
    diff = config_mod.settings_changes(run.config, cfg)
    if diff:
        raise RunFolderError(
            f"{run.root} holds an unfinished run with other settings ({diff}). Rerun the same "
            "command to resume it, or pass another --output."
        )
    log.info("resuming the unfinished run in %s (%d epoch(s) done)", run.root, run.completed_epochs())
    return True


def _prepare(cfg: Config, run: RunFolder, resuming: bool) -> PreparedData:
    d = cfg.data
    data = prepare_for(cfg, run.split if resuming and run.split.is_file() else None)
    counts = {s: sum(c.values()) for s, c in data.counts().items()}
    log.info("%s: %d classes; train %d, val %d, test %d images; %d excluded",
             d.data, len(data.classes), counts["train"], counts["val"], counts["test"], len(data.excluded))
    if d.audit == "full":
        from ..data.audit import audit, raise_on_leak

        raise_on_leak(audit(d.data, splits={r.path: r.split for r in data.records}, output=run.root / "audit"))
    return data


def _write_run_start(run: RunFolder, cfg: Config, data: PreparedData, started: float) -> None:
    write_atomic(run.config, config_mod.to_yaml(cfg))
    write_split(run.split, data.items())
    write_excluded(run.excluded, data.excluded)
    write_labels(run.labels, data.classes)
    write_json(run.run_json, _run_info(cfg, data, started, status="running"))


def _run_info(cfg: Config, data: PreparedData, started: float, **extra) -> dict[str, Any]:
    return {
        "versions": versions(),
        "host": host(),
        "seed": cfg.train.seed,
        "precision": policy_for(cfg.train.mixed_precision),  # the dtype policy --mixed-precision trained with
        "data": {
            "source": cfg.data.data,
            "kind": data.source.kind,
            "root": str(data.source.root),
            "fingerprint": data.fingerprint(),
            "classes": len(data.classes),
            "counts": data.counts(),
            "skipped": data.source.skipped,
            "excluded": [{"path": p, "reason": r} for p, r in data.excluded],
            "not_in_split_file": data.unlisted,
        },
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        **extra,
    }


# --keep: which checkpoint of the run becomes its model.keras (config.KEEP_RULES holds the same keys).
KEEP_RULES = {
    "best": "best.keras",  # Keras' ModelCheckpoint(save_best_only) on the monitored metric
    "last": "last.keras",  # the final epoch's (with --ema: the average; fit recomputes its BatchNorm statistics)
}


def _monitored(run: RunFolder, monitor: str) -> list[float | None]:
    """The monitored metric per epoch of history.csv (None where an epoch has none)."""
    if not run.history.is_file():
        return []
    with open(run.history, newline="") as f:
        return [float(r[monitor]) if r.get(monitor) else None for r in csv.DictReader(f)]


def _best_so_far(run: RunFolder, monitor: str) -> float | None:
    values = [v for v in _monitored(run, monitor) if v is not None]
    if not values:
        return None
    return min(values) if monitor_mode(monitor) == "min" else max(values)


def keep_warning(train) -> str | None:
    """What to tell a user whose settings keep weights they probably do not want, or None."""
    if train.early_stopping and train.keep == "last":
        return (f"--early-stopping {train.early_stopping} with --keep last keeps the epoch training stopped at, "
                f"up to {train.early_stopping} epoch(s) past the best one; give --keep best to keep the best")
    return None


def kept_epoch(run: RunFolder, keep: str, monitor: str) -> dict[str, Any]:
    """What run.json records of the kept weights: the rule, the monitored metric and the epoch (1-based).

    ``best`` is the first epoch with the best value (ModelCheckpoint saves only on a strict improvement).
    """
    values = _monitored(run, monitor)
    epoch = len(values) or None
    if keep == "best" and any(v is not None for v in values):
        best = _best_so_far(run, monitor)
        epoch = values.index(best) + 1
    return {"rule": keep, "monitor": monitor, "epoch": epoch, "epochs": len(values)}


def _kept_model(run: RunFolder, model, keep: str):
    checkpoint = run.checkpoints / KEEP_RULES[keep]
    if checkpoint.is_file():
        return keras.models.load_model(checkpoint)
    return model


def _cached_images(cfg: Config, data: PreparedData, run: RunFolder):
    """Decoded images of a split, cached in memory or in the run folder (see ``--cache``)."""

    def images(split: str, size: int, resize: str = "kclassify"):
        paths, labels = data.subset(split)
        if not paths:
            return None
        name = split if resize == "kclassify" else f"{split}_{resize}"
        return decoded(paths, labels, size, cache_target(cfg.data.cache, len(paths), size, run.cache / name), resize)

    return images


def _time_budget(ends_at: float, data: PreparedData) -> TimeBudget:
    n_train, n_val, n_test = (len(data.subset(s)[0]) for s in ("train", "val", "test"))
    return TimeBudget(ends_at, eval_ratio=(n_val + 2 * n_test) / max(n_val, 1),
                      train_ratio=0.0 if n_val else 2 * n_test / max(n_train, 1))


def _budgeted_settings(run: RunFolder, cfg: Config, recipe: Recipe, epochs: int, seconds: float) -> None:
    """Write the settings that retrain a budgeted run without its budget into config.yaml: the epochs it
    trained and the head phase it had (all of them when the head phase was the only one); run.json keeps
    the budget."""
    phases = recipe.phases  # as planned, before the last one was opened
    head = phases[0].end if len(phases) > 1 else (epochs if phases[0].name == "head" else cfg.train.head_epochs)
    trained = cfg.replace(epochs=max(epochs, 1), head_epochs=head)
    write_atomic(run.config, config_mod.to_yaml(trained))
    info = run.read_json(run.run_json)
    info["time_budget"] = {"seconds": round(seconds, 1), "planned_epochs": cfg.train.epochs, "epochs": epochs}
    write_json(run.run_json, info)


def _open_phase(recipe: Recipe) -> Recipe:
    """The recipe with its last phase ended by the time budget instead of ``epochs``."""
    *before, last = recipe.phases
    return dataclasses.replace(recipe, phases=[*before, dataclasses.replace(last, end=OPEN_END, open=True)])


def _train(model, recipe: Recipe, run: RunFolder, extra_callbacks, verbose, strategy, chief_run: RunFolder,
           budget: TimeBudget | None = None):
    """Train the recipe's phases with fit's callbacks (checkpoints, logs, resume backup), within ``budget``.

    ``chief_run`` is where resume backups are read (the run folder itself, except on a
    multi-worker cluster's non-chief workers, which write into a temporary ``run``).
    """
    cfg = recipe.cfg
    planned = recipe.phases
    if budget:
        recipe = _open_phase(recipe)
    backup_root = chief_run.backup
    truncate_history(run.history, chief_run.completed_epochs())

    def later_phase_started(phase) -> bool:  # its backup holds everything up to there
        later = recipe.phases[recipe.phases.index(phase) + 1:]
        return any((backup_root / p.name).is_dir() for p in later)

    if multiworker.is_multiworker(strategy):
        if cfg.train.ema > 0:
            raise ConfigError("--ema is not supported by the multi-worker training loop yet (it would train an average "
                              "nothing uses): drop --ema, or train on one machine.")
        if recipe.side is not None:
            raise ConfigError("--progressive-resize is not supported by the multi-worker training loop yet: drop it, "
                              "or train on one machine.")

        def fit_phase(model, phase, first, last):
            return multiworker.train_loop(
                strategy, model, build_loss(cfg.train), recipe.datasets, run, start=first, end=last,
                backup=backup_root / phase.name, global_batch=cfg.train.batch_size,
                class_weights=recipe.class_weight, monitor=recipe.monitor,
            )
    else:
        def callbacks(phase):
            cbs = _callbacks(run, recipe, phase) + extra_callbacks
            if budget:
                driven = phase.open and cfg.train.schedule == "cosine"
                warmup = round(cfg.train.warmup_epochs * recipe.steps) if phase.start == 0 else 0
                cbs += budget.phase(phase.start, planned[-1].end, recipe.steps, phase.open,
                                    lr=cfg.train.lr * phase.lr_factor if driven else None, warmup=warmup)
            return cbs

        fit_phase = keras_fit(recipe, callbacks, verbose, total_epochs=(lambda: budget.planned) if budget else None)
    spent = (lambda phase: budget.stopped_early) if budget else (lambda phase: False)
    history = train(model, recipe, fit_phase, end=OPEN_END if budget else None,
                    skip=lambda phase: later_phase_started(phase) or spent(phase))
    shutil.rmtree(run.backup, ignore_errors=True)  # finished: nothing left to resume
    return history, history.get("train_images_per_sec", [])


def _callbacks(run: RunFolder, recipe: Recipe, phase) -> list:
    cbs = standard_callbacks(run, recipe.cfg.train, recipe.monitor, len(recipe.data.subset("train")[0]),
                             backup=run.backup / phase.name)
    best = _best_so_far(run, recipe.monitor)
    if best is not None:  # keep best.keras the best over the whole run, not since resuming
        next(c for c in cbs if isinstance(c, keras.callbacks.ModelCheckpoint)).best = best
    return cbs


def _evaluate_test(model, data: PreparedData) -> dict[str, Any]:
    """Test accuracy and cross-entropy of the final model, scored as every later command scores it.

    The images go through the inference layer (the data layer's decode, then the model), as
    ``evaluate``, ``export`` and ``predict`` do, so metrics.json matches what they report.
    ``loss`` is the cross-entropy of the test labels whatever loss trained the model, so
    runs trained with focal or MSE loss stay comparable.
    """
    from ..inference.backends import KerasPredictor

    paths, labels = data.subset("test")
    if not paths:
        log.warning("no test images: metrics.json records no test metrics")
        return {"test": None}
    results = KerasPredictor(model, data.classes).predict_files(paths)
    scored = [(r.probabilities, y) for r, y in zip(results, labels) if r.ok]
    if len(scored) < len(results):
        bad = next(r for r in results if not r.ok)
        log.warning("%d test image(s) could not be decoded and are not scored (first: %s: %s)",
                    len(results) - len(scored), bad.path, bad.error)
    if not scored:
        return {"test": None}
    probs = np.stack([p for p, _ in scored])
    y = np.asarray([label for _, label in scored])
    picked = np.clip(probs[np.arange(len(y)), y], 1e-7, 1.0)
    return {"test": {"accuracy": float(np.mean(probs.argmax(1) == y)), "loss": float(-np.mean(np.log(picked)))}}


def _record_teachers(run: RunFolder, teachers: list, taught_by: list[dict] | None) -> None:
    """run.json's ``teachers`` (paths, fingerprints); a resumed run refuses teachers whose files changed."""
    if not teachers:
        return
    now = [t.describe() for t in teachers]
    if taught_by is not None and [t["fingerprint"] for t in taught_by] != [t["fingerprint"] for t in now]:
        raise ConfigError(
            f"{run.root} was being distilled from teachers whose files have changed since (recorded: "
            f"{[t['path'] for t in taught_by]}). Resuming would mix two teachers: restore them, or start a new "
            "run folder.")
    info = run.read_json(run.run_json)
    info["teachers"] = now
    write_json(run.run_json, info)


def _write_run_end(run, model, metrics, throughput, started, data, **extra) -> None:
    model.save(run.model)
    write_json(run.metrics, metrics)
    info = run.read_json(run.run_json)
    info.update({
        "status": "finished",
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "seconds": round(time.time() - started, 2),
        "train_images_per_sec": round(throughput[-1], 2) if throughput else None,
        "parameters": int(model.count_params()),
        **extra,
    })
    write_json(run.run_json, info)
