"""TensorFlow Serving's two signatures over any served model, for the REST mapping in
:mod:`kclassify.inference.tfserving` (written for an exported SavedModel's own signatures).

``serving_default`` takes ``image_bytes`` (``{"b64": ...}`` encoded files), ``serving_images``
takes ``images`` (uint8 pixel arrays of any size); both answer ``probabilities``, ``label`` and
``score``, exactly as the SavedModel ``kclassify export`` writes, so a client written against
TF Serving and that SavedModel gets the same answers from ``kclassify serve`` whatever the backend.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..inference.backends import BYTES_SIGNATURE, IMAGES_SIGNATURE
from ..inference.calibration import apply_temperature
from ..inference.tfserving import RestError
from .images import BadImage


class Signature:
    """What :func:`~kclassify.inference.tfserving.rest_predict` uses of a concrete function."""

    def __init__(self, name: str, spec, run: Callable[[object], np.ndarray], labels: list[str], temperature: float):
        self.structured_input_signature = ((), {name: spec})
        self._name, self._run, self._labels, self._t = name, run, labels, temperature

    def __call__(self, **tensors):
        import tensorflow as tf

        probs = apply_temperature(self._run(tensors[self._name]), self._t)
        top = probs.argmax(axis=1)
        return {"probabilities": tf.constant(probs), "label": tf.constant([self._labels[i] for i in top]),
                "score": tf.constant(probs.max(axis=1))}


def signatures(served, decoder, predict: Callable[[np.ndarray], np.ndarray]) -> dict[str, Signature]:
    """Both signatures of ``served``; ``predict`` runs uint8 images at the model's size (the batcher)."""
    import tensorflow as tf

    size = served.predictor.image_size

    def from_bytes(tensor) -> np.ndarray:
        images = []
        for i, data in enumerate(tensor.numpy().tolist()):
            try:
                images.append(decoder(data))
            except BadImage as e:
                raise RestError(f"instance {i}: {e}") from None
        return predict(np.stack(images))

    def from_images(tensor) -> np.ndarray:
        images = tensor.numpy()
        if images.shape[1:3] != (size, size):
            images = np.stack([decoder.resize(image) for image in images])
        return predict(images)

    labels, t = served.predictor.labels, served.temperature
    return {
        BYTES_SIGNATURE: Signature("image_bytes", tf.TensorSpec([None], tf.string, name="image_bytes"),
                                   from_bytes, labels, t),
        IMAGES_SIGNATURE: Signature("images", tf.TensorSpec([None, None, None, 3], tf.uint8, name="images"),
                                    from_images, labels, t),
    }
