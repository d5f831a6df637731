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

    def declare(self, hp=None):
        return to_hyperparameters(self.space, hp)

    def images(self, split: str, size: int) -> tf.data.Dataset | None:
        """Decoded ``(uint8 image, label)`` pairs of a split at one size, decoded once per search."""
        key = (split, size)
        if key not in self._decoded:
            paths, labels = self.data.subset(split)
            if not paths:
                return None
            target = cache_target(self.base.data.cache, len(paths), size, self.cache_dir / f"{split}_{size}")
            self._decoded[key] = decoded(paths, labels, size, target)
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
        tuner_callbacks = list(callbacks or [])
        fit_phase = keras_fit(
            recipe, lambda phase: tuner_callbacks + control_callbacks(recipe.cfg.train, recipe.monitor), verbose)
        history = keras.callbacks.History()  # KerasTuner reads the objective's best epoch from it
        history.history = train(model, recipe, fit_phase, start=kwargs.pop("initial_epoch", 0),
                                end=epochs or recipe.cfg.train.epochs)
        return history
