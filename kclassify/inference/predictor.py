"""One interface over every model artifact kclassify writes: run folder, ``.keras``, SavedModel, ``.tflite``.

Every consumer that runs a model (fit's test scoring, ``evaluate``, ``export``'s checks,
``predict``, ``serve``) goes through :func:`load_predictor`, so images are decoded and
resized by the data layer's one decode (:func:`kclassify.data.pipeline.decode_image`),
exactly as in training, whatever file the model lives in.
"""

from __future__ import annotations

import logging
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ModelLoadError
from ..settings import PredictSettings, check_batch_size
from ..textfiles import read_labels
from .tta import check_tta, tta_views

log = logging.getLogger(__name__)

DEFAULT_BATCH = PredictSettings.batch_size
PROGRESS_FROM = 256  # files; smaller jobs finish before a bar is worth drawing


@dataclass
class FilePrediction:
    """The outcome for one file: class probabilities, or why it could not be predicted."""

    path: str
    probabilities: np.ndarray | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Predictor(ABC):
    """A loaded model: raw uint8 RGB images in, class probabilities out.

    Attributes:
        kind: ``"keras"``, ``"savedmodel"`` or ``"tflite"``.
        path: the artifact it was loaded from.
        labels: class names in output order.
        image_size: the square size the model takes; other sizes are resized to it.
        input_dtype: what the model itself takes (``float32`` pixels 0-255, or ``uint8``).
        resize: how images of another size reach ``image_size``, a key of
            :data:`kclassify.data.phone.RESIZES`: ``kclassify`` (antialiased, as training did) or
            ``mediapipe`` (as MediaPipe's ImageClassifier does on a phone, emulated exactly).
        tta: test-time augmentation, a key of :data:`kclassify.inference.tta.TTA_POLICIES`
            (``none``: one model call per image; otherwise the mean of the views' probabilities).
    """

    kind: str = ""

    def __init__(self, path: Path | None, labels: list[str], image_size: int, input_dtype: str):
        self.path = path
        self.labels = list(labels)
        self.image_size = int(image_size)
        self.input_dtype = input_dtype
        self.resize = "kclassify"
        self.tta = "none"

    def with_tta(self, policy: str) -> "Predictor":
        """This predictor, averaging its probabilities over the views of ``policy`` from now on (checked)."""
        check_tta(policy)
        self.tta = policy
        return self

    def with_resize(self, resize: str) -> "Predictor":
        """This predictor, resizing images of another size with ``resize`` from now on (checked)."""
        from ..data.phone import check_resize

        check_resize(resize)
        self.resize = resize
        return self

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def predict(self, images: np.ndarray, batch_size: int = DEFAULT_BATCH) -> np.ndarray:
        """Class probabilities ``(N, classes)`` for uint8 RGB images ``(N, H, W, 3)``.

        Images of another size are resized with :attr:`resize` (by default as training resized them).
        """
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(
                f"predict() expects uint8 RGB images shaped (N, H, W, 3); received {images.dtype} "
                f"{images.shape}. Decode files with predict_files()."
            )
        if images.shape[1:3] != (self.image_size, self.image_size):
            images = self._resize(images)
        if len(images) == 0:
            return np.zeros((0, self.num_classes), np.float32)
        out = [self.predict_batch(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
        return np.concatenate(out).astype(np.float32)

    def predict_files(self, paths: Sequence[str | Path], batch_size: int = DEFAULT_BATCH,
                      progress: bool | None = None) -> list[FilePrediction]:
        """Decode files, resize them with :attr:`resize` and predict them; a bad file gets an error, not an exception.

        Args:
            progress: draw a progress bar on stderr (None: for large jobs on a terminal).
        """
        from ..data.files import check_images
        from ..data.sources import cache_dir

        check_batch_size(batch_size)
        paths = [Path(p) for p in paths]
        checked = check_images(paths, cache_dir())
        results = [FilePrediction(str(p), None, None if c.ok else c.reason) for p, c in zip(paths, checked)]
        good = [i for i, c in enumerate(checked) if c.ok]
        if not good:
            return results
        done = set()
        bar = _progress(len(good), progress)
        for index, images in self._decoded(good, [str(checked[i].decode_path) for i in good], batch_size):
            probs = self.predict_batch(images)
            for i, p in zip(index, probs):
                results[i].probabilities = p.astype(np.float32)
                done.add(int(i))
            bar.update(len(index))
        bar.close()
        for i in good:
            if i not in done:
                results[i].error = "TensorFlow could not decode it"
        return results

    def top_k(self, probabilities: np.ndarray, k: int = 1) -> list[list[tuple[str, float]]]:
        """The ``k`` most likely (label, probability) pairs of each row."""
        k = max(1, min(int(k), self.num_classes))
        order = np.argsort(-probabilities, axis=-1)[:, :k]
        return [[(self.labels[j], float(row[j])) for j in idx] for row, idx in zip(probabilities, order)]

    def latency_ms(self, image: np.ndarray, runs: int = 50, warmup: int = 5) -> float:
        """Median milliseconds of one single-image :meth:`predict` call (uint8 image at ``image_size``)."""
        batch = np.asarray(image, np.uint8)[None]
        for _ in range(warmup):
            self.predict_batch(batch)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            self.predict_batch(batch)
            times.append(time.perf_counter() - start)
        return float(np.median(times) * 1000)

    def describe(self) -> dict:
        return {"kind": self.kind, "path": str(self.path) if self.path else None, "labels": self.labels,
                "image_size": self.image_size, "input_dtype": self.input_dtype, "resize": self.resize,
                **({"tta": self.tta} if self.tta != "none" else {})}

    def predict_batch(self, images: np.ndarray) -> np.ndarray:
        """Probabilities ``(N, C)`` for uint8 images ``(N, S, S, 3)`` already at ``image_size``.

        One model call (one per view with :attr:`tta`, their probabilities averaged); no resize, no
        split into batches (what :meth:`predict` adds): the call a server's batcher makes.
        """
        if self.tta == "none":
            return self._model_call(images)
        return np.mean([self._model_call(np.ascontiguousarray(view)) for view in tta_views(images, self.tta)],
                       axis=0)

    @abstractmethod
    def _model_call(self, images: np.ndarray) -> np.ndarray:
        """Probabilities for uint8 images already at ``image_size``: the model, once."""

    def _resize(self, images: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        from ..data.phone import PHONE_RESIZES
        from ..data.pipeline import resize_image

        if self.resize in PHONE_RESIZES:
            return np.stack([PHONE_RESIZES[self.resize](image, self.image_size) for image in images])
        return resize_image(tf.constant(images), self.image_size).numpy()

    def _decoded(self, index: list[int], paths: list[str], batch_size: int):
        """Batches of (indices, uint8 images) decoded in parallel; undecodable files drop out."""
        import tensorflow as tf

        from ..data.pipeline import decode_image

        size, resize = self.image_size, self.resize
        ds = tf.data.Dataset.from_tensor_slices((tf.constant(index, tf.int64), tf.constant(paths)))
        ds = ds.map(lambda i, p: (i, decode_image(p, size, resize)), num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.ignore_errors().batch(batch_size).prefetch(tf.data.AUTOTUNE)
        for i, images in ds:
            yield i.numpy(), images.numpy()


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def _progress(total: int, progress: bool | None):
    if progress is None:
        progress = total >= PROGRESS_FROM and sys.stderr.isatty()
    if not progress:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc="predicting", file=sys.stderr)


def read_labels_file(path: Path) -> list[str]:
    """Class names, one a line, from a ``labels.txt``."""
    try:
        labels = read_labels(path)
    except (OSError, UnicodeDecodeError) as e:
        raise ModelLoadError(f"{path} cannot be read as UTF-8 text ({e}): expected one class name a line.") from None
    if not labels:
        raise ModelLoadError(f"{path} lists no class names: expected one class name a line.")
    return labels


def check_output(path: Path, num_outputs: int, labels: list[str]) -> None:
    if num_outputs != len(labels):
        raise ModelLoadError(
            f"{path} outputs {num_outputs} classes but its labels list {len(labels)}: the labels belong to "
            "another model. Put the labels.txt written with this model beside it."
        )
