"""Grad-CAM: where in an image a classifier looks for a class (Selvaraju et al., 2017).

The class score's gradient with respect to the backbone's last spatial feature map, averaged over the
map's positions, weighs its channels; the weighted sum, through a ReLU, is the heat: high where the
features that raise the class are (the Keras example "Grad-CAM class activation visualization"). The
score is the class's log-odds against the others, from the logits before the softmax: proportional, image
by image, to the log-probability's gradient, without its vanishing when a confident prediction's
probability rounds to 1 in float32 (where the report's most confident mistakes are). Every
kclassify classifier is ``image -> [block mean] -> preprocessing -> backbone -> pool -> head``, the
backbone being the registry record's model, so its last feature map is the input of the layer named
:data:`kclassify.models.build.POOL_LAYER` whatever the backbone: nothing is guessed from layer names
inside the backbone. It needs gradients, so a Keras model (a run folder or a ``.keras`` file); a
``.tflite`` file or a SavedModel has none.
"""

from __future__ import annotations

import io
from itertools import islice
from pathlib import Path

import numpy as np

from ..errors import ModelLoadError
from ..models.build import OUTPUT_LAYER, POOL_LAYER

ALPHA = 0.45  # the heat's share of an overlay pixel at full heat


def keras_model(predictor):
    """The Keras model behind ``predictor``, or a ModelLoadError saying what Grad-CAM needs."""
    model = getattr(predictor, "model", None)
    if predictor.kind != "keras" or model is None:
        raise ModelLoadError(f"{predictor.path or 'this model'} is a {predictor.kind} model: Grad-CAM needs the "
                             "gradients of a Keras model. Pass the run folder or its model.keras instead.")
    import keras

    try:
        model.get_layer(POOL_LAYER)
        output = model.get_layer(OUTPUT_LAYER)
    except ValueError:
        output = None
    if not (isinstance(output, keras.layers.Dense) and output.use_bias
            and keras.activations.serialize(output.activation) == "softmax"):
        raise ModelLoadError(f"{predictor.path or model.name} was not built by kclassify fit: Grad-CAM reads the "
                             f"feature map its classifiers pool (the input of a layer named {POOL_LAYER!r}) and the "
                             f"logits of their softmax Dense layer ({OUTPUT_LAYER!r}). Pass a run folder or its "
                             "model.keras.")
    return model


def gradcam(model, images: np.ndarray, classes=None) -> tuple[np.ndarray, np.ndarray]:
    """Heat maps ``(N, h, w)`` in 0-1 at the feature map's resolution, and the class each explains.

    Args:
        model: a kclassify Keras classifier (see :func:`keras_model`).
        images: uint8 ``(N, S, S, 3)`` at the model's input size.
        classes: the class index to explain for each image (default: the predicted one).
    """
    import keras
    import tensorflow as tf

    output = model.get_layer(OUTPUT_LAYER)
    probe = keras.Model(model.inputs, [model.get_layer(POOL_LAYER).input, output.input])
    x = tf.constant(np.asarray(images, np.float32))
    with tf.GradientTape() as tape:
        fmap, hidden = probe(x, training=False)
        logits = tf.cast(hidden, tf.float32) @ tf.cast(output.kernel, tf.float32) + tf.cast(output.bias, tf.float32)
        picked = np.argmax(logits.numpy(), axis=1) if classes is None else np.asarray(classes, np.int64)
        if picked.shape != (len(x),) or not ((picked >= 0) & (picked < logits.shape[-1])).all():
            raise ValueError(f"classes: one class index in 0-{logits.shape[-1] - 1} per image ({len(x)}), "
                             f"got {picked.tolist()}")
        mine = tf.one_hot(picked, logits.shape[-1], dtype=tf.float32)
        score = tf.reduce_sum(logits * mine, axis=1)
        if logits.shape[-1] > 1:  # log-odds: the class's logit against the log-sum-exp of the others'
            score -= tf.reduce_logsumexp(logits - 1e9 * mine, axis=1)
    # the gradient with respect to the map the model computed (a mixed-precision checkpoint's is bfloat16:
    # a float32 copy of it is not on the path to the score, and its gradient would be None)
    grads = tape.gradient(score, fmap)
    if grads is None:
        raise ModelLoadError(f"{model.name}: its output does not depend on the input of its {POOL_LAYER!r} layer, "
                             "so Grad-CAM has no gradient to weigh the feature map by; pass a model kclassify fit "
                             "built (a run folder or its model.keras).")
    grads, fmap = tf.cast(grads, tf.float32), tf.cast(fmap, tf.float32)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    heat = tf.nn.relu(tf.reduce_sum(fmap * weights, axis=-1)).numpy()
    peak = heat.reshape(len(heat), -1).max(axis=1)[:, None, None]
    # each map scaled to its own peak, however small the gradients (an untrained model's are ~1e-14)
    return np.divide(heat, peak, out=np.zeros_like(heat), where=peak > 0), picked


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """``image`` (uint8 ``(H, W, 3)``) with ``heat`` (0-1, any resolution) drawn over it in the jet colours."""
    from matplotlib import colormaps
    from PIL import Image

    h, w = image.shape[:2]
    big = np.asarray(Image.fromarray(np.uint8(np.clip(heat, 0, 1) * 255)).resize((w, h), Image.BILINEAR)) / 255.0
    colour = colormaps["jet"](big)[..., :3] * 255
    share = alpha * big[..., None]
    return np.uint8(np.clip(image * (1 - share) + colour * share, 0, 255))


def png(image: np.ndarray) -> bytes:
    """A uint8 RGB image as PNG bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    return buffer.getvalue()


def _decoded(predictor, paths):
    """(index, uint8 image at the model's input) of each file that decodes, resized as the predictor does."""
    from ..data.pipeline import decode_image

    for i, path in enumerate(paths):
        try:
            yield i, decode_image(str(path), predictor.image_size, predictor.resize).numpy()
        except Exception:  # noqa: BLE001 - an undecodable file: the caller says why elsewhere
            continue


def overlay_pngs(predictor, paths, classes, batch_size: int = 16) -> list[bytes | None]:
    """The Grad-CAM overlay (PNG) of ``classes[i]`` over each file ``paths[i]`` (None where it does not decode)."""
    model = keras_model(predictor)
    out: list[bytes | None] = [None] * len(paths)
    found = _decoded(predictor, paths)  # a generator: one batch of decoded images in memory at a time
    while chunk := list(islice(found, batch_size)):
        images = np.stack([image for _, image in chunk])
        heats, _ = gradcam(model, images, [classes[i] for i, _ in chunk])
        for (i, image), heat in zip(chunk, heats):
            out[i] = png(overlay(image, heat))
    return out


def explain_files(predictor, paths, folder, batch_size: int = 16) -> list[Path]:
    """Write ``folder/<name>.gradcam.png`` for each image file: the overlay of its predicted class.

    Images are decoded and resized as the predictor does (:attr:`Predictor.resize`); a file that cannot be
    decoded is skipped (``predict`` reports it). Names are the files' own, numbered when two collide.
    """
    model = keras_model(predictor)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written, used = [], set()
    paths = [Path(p) for p in paths]
    found = _decoded(predictor, paths)  # a generator: one batch of decoded images in memory at a time
    while chunk := list(islice(found, batch_size)):
        images = np.stack([image for _, image in chunk])
        heats, picked = gradcam(model, images)
        for (i, image), heat, klass in zip(chunk, heats, picked):
            path = paths[i]
            name, n = f"{path.stem}.{predictor.labels[klass]}.gradcam.png", 1
            while name in used:
                n += 1
                name = f"{path.stem}-{n}.{predictor.labels[klass]}.gradcam.png"
            used.add(name)
            (folder / name).write_bytes(png(overlay(image, heat)))
            written.append(folder / name)
    return written


def explain(predictor, images: np.ndarray, classes=None) -> list[tuple[np.ndarray, int]]:
    """For each uint8 image at the model's input size: its Grad-CAM overlay and the class it explains."""
    heats, picked = gradcam(keras_model(predictor), images, classes)
    return [(overlay(image, heat), int(c)) for image, heat, c in zip(images, heats, picked)]
