"""Knowledge distillation (``fit --teacher``): the student learns from the labels and from teachers.

The loss is ``(1 - alpha) * loss(labels) + alpha * T**2 * KL(teacher_T || student_T)``, where ``_T``
softens both distributions at temperature ``T`` (Hinton et al., 2015). Several teachers are averaged (an
ensemble).

The teachers run inside the tf.data pipeline, on the very batch the student trains on, after its
augmentation and mixing: Beyer et al. ("Knowledge distillation: a good teacher is patient and
consistent", CVPR 2022) found that a teacher seeing the same view as the student is what keeps
distillation improving over long schedules, where probabilities cached on clean images stop helping.
A training batch's targets become ``[labels | teacher probabilities]`` (twice the classes wide) and
:class:`DistillationLoss` splits them; validation batches keep their labels alone, so ``val_loss`` is
the plain loss, comparable with an undistilled run. Metrics read the labels half (:class:`OnLabels`).

A teacher is anything :func:`kclassify.inference.load_predictor` loads (a run folder, ``.keras``,
SavedModel, ``.tflite``) with the student's classes (in any order); an input of another size is resized
inside, as kclassify resizes. A Keras teacher computes as its student does (``--mixed-precision``: in
bfloat16 on a CPU with AMX, its outputs in float32), since its forward passes share the student's time
budget; SavedModel and TFLite teachers run the arithmetic they were exported with.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import keras
import tensorflow as tf

from ..errors import ConfigError
from ..inference import load_predictor
from ..inference.backends import IMAGES_SIGNATURE
from ..models.build import with_policy

EPSILON = 1e-7  # probabilities are clipped to [EPSILON, 1] before their logarithm


@dataclass(frozen=True)
class Teacher:
    """One loaded teacher: ``probabilities`` maps float32 0-255 pixels to the student's class order."""

    path: str
    kind: str
    image_size: int
    fingerprint: str
    probabilities: Callable[[tf.Tensor], tf.Tensor]

    def describe(self) -> dict:
        return {"path": self.path, "kind": self.kind, "image_size": self.image_size, "fingerprint": self.fingerprint}


def parse_teachers(spec: str | None) -> list[str]:
    """``--teacher`` (comma-separated models) as a list; empty for None."""
    return [p.strip() for p in (spec or "").split(",") if p.strip()]


def fingerprint(path: str | Path) -> str:
    """SHA-256 over a model's files (the file, or every file under a folder, in name order)."""
    path = Path(path)
    if path.is_dir() and (path / "model.keras").is_file():  # a run folder: its model
        path = path / "model.keras"
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def load_teachers(spec: str | list[str] | None, classes: list[str], policy: str = "float32") -> list[Teacher]:
    """The teachers of ``--teacher``, each checked against the student's ``classes``; Keras teachers compute
    under the dtype ``policy`` (the student's)."""
    paths = parse_teachers(spec) if isinstance(spec, (str, type(None))) else list(spec)
    return [_load(path, list(classes), policy) for path in paths]


def _load(path: str, classes: list[str], policy: str) -> Teacher:
    predictor = load_predictor(path)
    if sorted(predictor.labels) != sorted(classes):
        raise ConfigError(
            f"Teacher {path} knows the classes {predictor.labels[:10]}; the student's data has {classes[:10]}. "
            "A teacher must have been trained on the same classes: pass a model of this data's classes."
        )
    order = tf.constant([predictor.labels.index(c) for c in classes], tf.int32)
    size = predictor.image_size

    def resized(x):
        if x.shape[1] == size and x.shape[2] == size:
            return x
        return tf.clip_by_value(tf.image.resize(x, [size, size], method="bilinear", antialias=True), 0.0, 255.0)

    if predictor.kind == "keras":
        model = with_policy(predictor.model, policy)

        def run(x):
            return tf.cast(model(resized(x), training=False), tf.float32)
    elif predictor.kind == "savedmodel":
        def run(x):  # through the predictor, which keeps the SavedModel (and its variables) alive
            pixels = tf.cast(tf.round(resized(x)), tf.uint8)
            return predictor.signatures[IMAGES_SIGNATURE](images=pixels)["probabilities"]
    else:  # .tflite: LiteRT runs outside the graph
        def run(x):
            out = tf.numpy_function(lambda a: predictor.predict(a.round().astype("uint8")), [resized(x)], tf.float32,
                                    stateful=False)
            out.set_shape([None, len(classes)])
            return out

    return Teacher(str(path), predictor.kind, size, fingerprint(path), lambda x: tf.gather(run(x), order, axis=-1))


def ensemble(teachers: list[Teacher]) -> Callable[[tf.Tensor], tf.Tensor]:
    """The teachers' probabilities averaged."""
    def probabilities(x):
        return tf.add_n([t.probabilities(x) for t in teachers]) / float(len(teachers))

    return probabilities


def with_teacher_targets(teachers: list[Teacher]) -> Callable:
    """``(images, labels) -> labels | teacher probabilities`` for :func:`kclassify.data.pipeline.batches`."""
    probabilities = ensemble(teachers)

    def targets(images, labels):
        return tf.concat([labels, tf.cast(probabilities(tf.cast(images, tf.float32)), labels.dtype)], axis=-1)

    return targets


@keras.saving.register_keras_serializable(package="kclassify")
class DistillationLoss(keras.losses.Loss):
    """``(1 - alpha) * base(labels, p) + alpha * T**2 * KL(softmax(log t / T) || softmax(log p / T))``.

    ``y_true`` is ``[labels | teacher probabilities]``; with the labels alone (validation) it is ``base``.
    """

    def __init__(self, base, num_classes: int, alpha: float, temperature: float, name="distillation", **kwargs):
        super().__init__(name=name, **kwargs)
        self.base = keras.losses.get(base) if not isinstance(base, keras.losses.Loss) else base
        self.num_classes, self.alpha, self.temperature = int(num_classes), float(alpha), float(temperature)

    def call(self, y_true, y_pred):
        c = self.num_classes
        labels = y_true[..., :c]
        hard = self.base.call(labels, y_pred)
        if y_true.shape[-1] != 2 * c:
            return hard
        t = self.temperature
        student = tf.nn.log_softmax(tf.math.log(tf.clip_by_value(tf.cast(y_pred, tf.float32), EPSILON, 1.0)) / t)
        teacher = tf.nn.log_softmax(tf.math.log(tf.clip_by_value(tf.cast(y_true[..., c:], tf.float32), EPSILON, 1.0))
                                    / t)
        kl = tf.reduce_sum(tf.exp(teacher) * (teacher - student), axis=-1)
        return (1.0 - self.alpha) * tf.cast(hard, tf.float32) + self.alpha * t * t * kl

    def get_config(self):
        return {**super().get_config(), "base": keras.losses.serialize(self.base), "num_classes": self.num_classes,
                "alpha": self.alpha, "temperature": self.temperature}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["base"] = keras.losses.deserialize(config["base"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="kclassify")
class OnLabels(keras.metrics.Metric):
    """A metric of the labels half of ``[labels | teacher probabilities]`` targets (or of labels alone)."""

    def __init__(self, metric, num_classes: int, **kwargs):
        metric = keras.metrics.get(metric) if not isinstance(metric, keras.metrics.Metric) else metric
        super().__init__(name=kwargs.pop("name", metric.name), **kwargs)
        self.metric, self.num_classes = metric, int(num_classes)

    def update_state(self, y_true, y_pred, sample_weight=None):
        return self.metric.update_state(y_true[..., :self.num_classes], y_pred, sample_weight)

    def result(self):
        return self.metric.result()

    def reset_state(self):
        self.metric.reset_state()

    def get_config(self):
        return {"name": self.name, "metric": keras.metrics.serialize(self.metric), "num_classes": self.num_classes}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["metric"] = keras.metrics.deserialize(config["metric"])
        return cls(**config)
