"""The KerasTuner HyperModel: a search space over ``fit``'s settings, on data decoded once.

Every trial reads the same decoded-image caches (one per input size), so no trial decodes
an image again; batch size, epochs and augmentation are applied in ``fit`` (the classic
KerasTuner pitfall, keras-tuner #122, is a HyperModel that ignores them).
"""

from __future__ import annotations

import json

import keras
import keras_tuner
import tensorflow as tf

from ..config import Config
from ..data import PreparedData
from ..data.augment import build_augmentation
from ..data.pipeline import batches, cache_target, decoded
from ..models import get as get_backbone
from ..models.build import adapt_preprocessing, classifier_for
from ..models.profile import measure_latency, parameter_count
from ..training.callbacks import control_callbacks
from ..training.losses import build_loss, class_weights
from ..training.optimizers import build_optimizer
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
        cfg = self.base.replace(**values)
        if cfg.data.image_size is None:  # the trial's backbone decides, as in fit
            cfg = cfg.replace(image_size=get_backbone(cfg.model.backbone).default_size)
        return cfg

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

    def build(self, hp):
        self.declare(hp)
        cfg = self.config_for(hp)
        size = cfg.data.image_size
        model = classifier_for(cfg.model, len(self.data.classes), size)
        adapt_preprocessing(model, self.images("train", size).batch(256).map(lambda x, y: tf.cast(x, tf.float32)))
        model.compile(optimizer=build_optimizer(cfg.train, self.steps(cfg)), loss=build_loss(cfg.train),
                      metrics=["accuracy", keras.metrics.AUC(name="auc")])
        return model

    def fit(self, hp, model, *args, callbacks=None, epochs=None, verbose=0, **kwargs):
        cfg = self.config_for(hp)
        size, batch, seed, n = cfg.data.image_size, cfg.train.batch_size, cfg.train.seed, len(self.data.classes)
        augment = build_augmentation(cfg.data.augment, cfg.data.flip, seed)
        train = batches(self.images("train", size), n, batch, training=True, seed=seed, augment=augment)
        val_images = self.images("val", size)
        val = batches(val_images, n, batch, training=False) if val_images is not None else None
        monitor = cfg.train.monitor if val is not None or not cfg.train.monitor.startswith("val_") \
            else cfg.train.monitor[4:]
        initial_epoch = kwargs.pop("initial_epoch", 0)
        if initial_epoch:  # a Hyperband continuation: go on along the schedule, not from its start
            model.optimizer.iterations.assign(initial_epoch * self.steps(cfg))
        return model.fit(
            train, validation_data=val, epochs=epochs or cfg.train.epochs,
            callbacks=list(callbacks or []) + control_callbacks(cfg.train, monitor),
            class_weight=class_weights(cfg.train.class_weight, self.data.subset("train")[1]),
            verbose=verbose, shuffle=False, initial_epoch=initial_epoch,
        )

    def steps(self, cfg: Config) -> int:
        """Training steps per epoch at the trial's batch size."""
        return -(-len(self.data.subset("train")[0]) // cfg.train.batch_size)
