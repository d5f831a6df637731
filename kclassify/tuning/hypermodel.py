"""The KerasTuner HyperModel: a search space over ``fit``'s settings, on data decoded once.

A trial trains exactly as ``fit`` does: both call :mod:`kclassify.training.recipe` (seed,
pipelines, model, transfer head, precision, frozen-head and fine-tuning phases, optimizer,
schedule, loss, class weights, early stopping and plateau). The HyperModel adds only what
KerasTuner needs: its callbacks, the epochs of a Hyperband rung and the continuation of an
earlier rung. Every trial reads the same decoded-image caches (one per input size), so no
trial decodes an image again.
"""

from __future__ import annotations

import json
import logging
from typing import Callable

import keras
import keras_tuner
import tensorflow as tf

from ..config import Config
from ..data import PreparedData
from ..data.pipeline import cache_target, decoded
from ..models.build import classifier_for
from ..models.profile import measure_latency, parameter_count
from ..training.callbacks import control_callbacks
from ..training.recipe import (Recipe, build_model, compile_phase, keras_fit, make_recipe, precision, resolve,
                               seed_everything, train)
from .space import SearchSpace, to_hyperparameters
from .time_limit import TimeLimit

log = logging.getLogger(__name__)


class OneSession(keras.callbacks.Callback):
    """Passes every event to ``inner`` but the start of all phases but the first and the end of all but the last.

    A trial that fine-tunes calls ``model.fit`` once per phase; KerasTuner's TensorBoard
    HParams callback refuses a second training session ("cannot be reused across training
    sessions") and TensorBoard closes its writers at each end, so they see one session.
    """

    def __init__(self, inner, first: bool, last: Callable[[], bool]):
        super().__init__()
        self.inner, self.first, self.last = inner, first, last  # last: asked at the phase's end

    def set_model(self, model):
        super().set_model(model)
        self.inner.set_model(model)

    def set_params(self, params):
        super().set_params(params)
        self.inner.set_params(params)

    def on_train_begin(self, logs=None):
        if self.first:
            self.inner.on_train_begin(logs)

    def on_train_end(self, logs=None):
        if self.last():
            self.inner.on_train_end(logs)

    def on_epoch_begin(self, epoch, logs=None):
        self.inner.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self.inner.on_epoch_end(epoch, logs)

    def on_train_batch_begin(self, batch, logs=None):
        self.inner.on_train_batch_begin(batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        self.inner.on_train_batch_end(batch, logs)

    def on_test_begin(self, logs=None):
        self.inner.on_test_begin(logs)

    def on_test_end(self, logs=None):
        self.inner.on_test_end(logs)

    def on_test_batch_begin(self, batch, logs=None):
        self.inner.on_test_batch_begin(batch, logs)

    def on_test_batch_end(self, batch, logs=None):
        self.inner.on_test_batch_end(batch, logs)


class ClassifierHyperModel(keras_tuner.HyperModel):
    """Builds and trains one trial's classifier from a base config plus the trial's values.

    Args:
        base: settings not searched (data, epochs, seed, ...).
        space: the search space; its names are ``fit`` settings.
        data: checked and split records (shared by every trial).
        cache_dir: where decoded images go when they do not fit in memory.
    """

    def __init__(self, base: Config, space: SearchSpace, data: PreparedData, cache_dir):
        super().__init__(name="kclassify")
        self.base, self.space, self.data, self.cache_dir = base, space, data, cache_dir
        self._decoded: dict[tuple[str, int], tf.data.Dataset] = {}
        self.profiles: dict[str, dict] = {}  # architecture key -> {"params", "latency_ms", ...}
        self.time_limit: TimeLimit | None = None  # the tuner's, for the trial it runs: may stop it

    def config_for(self, hp) -> Config:
        """The base settings with this trial's active values."""
        values = {name: hp.get(name) for name in self.space.names if hp.is_active(name)}
        return resolve(self.base.replace(**values))  # the trial's backbone decides the input size, as in fit

    def architecture(self, hp) -> str:
        """What decides a trial's parameters and latency: the model settings but dropout, weights and bn_momentum."""
        cfg = self.config_for(hp)
        model = {k: v for k, v in cfg.to_dict()["model"].items() if k not in ("dropout", "weights", "bn_momentum")}
        return json.dumps({**model, "image_size": cfg.data.image_size, "classes": len(self.data.classes)},
                          sort_keys=True)

    def profile(self, hp, *, latency: bool, threads: int = 1) -> dict:
        """Parameters (and, with ``latency``, LiteRT latency) of the trial's model, once per architecture."""
        key = self.architecture(hp)
        known = self.profiles.get(key, {})
        if "params" in known and (not latency or "latency_ms" in known):
            return known
        cfg = self.config_for(hp)
        model = classifier_for(cfg.model, len(self.data.classes), cfg.data.image_size, weights="none")
        found = {"params": parameter_count(model)}
        if latency:
            measured = measure_latency(model, threads=threads)
            found.update(latency_ms=measured.ms, latency_backend=measured.backend, latency_threads=threads)
        del model
        keras.backend.clear_session()
        self.profiles[key] = {**known, **found}
        return self.profiles[key]

    def defaults(self) -> dict:
        """The base settings as the searched entries' defaults: the first trial is what fit would train."""
        base = resolve(self.base).flat()
        unfit = [e.name for e in self.space.entries  # None: decided elsewhere (backbone's own momentum, ...)
                 if base.get(e.name) is not None and not e.admits(base[e.name])]
        if unfit and not getattr(self, "_warned", False):
            self._warned = True
            log.warning("the base value of %s lies outside the search space; the first trial uses the space's "
                        "own default there", ", ".join(f"{n}={base[n]!r}" for n in unfit))
        return base

    def declare(self, hp=None):
        return to_hyperparameters(self.space, hp, defaults=self.defaults())

    def images(self, split: str, size: int, resize: str = "kclassify") -> tf.data.Dataset | None:
        """Decoded ``(uint8 image, label)`` pairs of a split at one size and resize, decoded once per search."""
        key = (split, size, resize)
        if key not in self._decoded:
            paths, labels = self.data.subset(split)
            if not paths:
                return None
            name = f"{split}_{size}" + ("" if resize == "kclassify" else f"_{resize}")
            target = cache_target(self.base.data.cache, len(paths), size, self.cache_dir / name)
            self._decoded[key] = decoded(paths, labels, size, target, resize)
        return self._decoded[key]

    def recipe(self, hp) -> Recipe:
        """The trial's settings made concrete, over the search's shared decoded images."""
        return make_recipe(self.config_for(hp), self.data, self.images)

    def build(self, hp):
        self.declare(hp)
        cfg = self.config_for(hp)
        seed_everything(cfg.train.seed, cfg.train.deterministic)  # as fit does before it builds
        recipe = make_recipe(cfg, self.data, self.images)
        with precision(recipe.cfg.train.mixed_precision):
            model = build_model(recipe)
            compile_phase(model, recipe, recipe.phases[0])
        return model

    def fit(self, hp, model, *args, callbacks=None, epochs=None, verbose=0, **kwargs):
        """Train as fit does; ``epochs``/``initial_epoch`` are a Hyperband rung (default: all epochs)."""
        recipe = self.recipe(hp)
        start, end = kwargs.pop("initial_epoch", 0), epochs or recipe.cfg.train.epochs
        running = [p for p in recipe.phases if max(start, p.start) < min(end, p.end)]
        control = control_callbacks(recipe.cfg.train, recipe.monitor)
        history = keras.callbacks.History()  # KerasTuner reads the objective's best epoch from it
        limit = self.time_limit

        def stopped() -> bool:
            return bool(limit and limit.stopped)

        if limit:
            if limit.stopped:  # an earlier execution of this trial was stopped: its score is discarded anyway
                history.history = {}
                return history
            limit.begin(start, end, recipe.steps, recipe.cfg.train.epochs)
            control.append(limit)

        def phase_callbacks(phase):  # KerasTuner's callbacks see the phases as one training session
            first, last = phase is running[0], phase is running[-1]
            return [OneSession(c, first, lambda: last or stopped()) for c in callbacks or []] + control

        history.history = train(model, recipe, keras_fit(recipe, phase_callbacks, verbose), start=start, end=end,
                                skip=lambda phase: stopped())
        return history
