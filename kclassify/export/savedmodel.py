"""The TF-Serving SavedModel: encoded image bytes or uint8 images of any size in, probabilities and class out.

Two signatures, both decoding and resizing inside the graph with the data layer's own
functions (so a served image gets the pixels a trained one did):

- ``serving_default`` (TF Serving's default): ``image_bytes``, a batch of encoded JPEG, PNG,
  BMP or GIF files (string ``[N]``). A TF Serving REST client sends
  ``{"instances": [{"b64": "<base64 file>"}]}``.
- ``serving_images``: ``images``, uint8 RGB ``[N, H, W, 3]`` of any size.

Both resize as training did (``resize: kclassify`` in ``kclassify.json``: bilinear with antialiasing),
so raw camera frames of any size get the pixels a trained image did. Both return ``probabilities`` (float32 ``[N, classes]``), ``label`` (the top class name) and
``score`` (its probability). ``export`` places it as TF Serving expects under a model's base
path: ``savedmodel/1/``, then ``savedmodel/2/`` for the next export (TF Serving loads a new
version number; it does not reload one it has served).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..inference.backends import BYTES_SIGNATURE, IMAGES_SIGNATURE, SAVEDMODEL_INFO
from ..textfiles import LABELS_FILE, write_labels


def write_savedmodel(model, labels: list[str], image_size: int, target: Path) -> None:
    """Save ``model`` as a SavedModel folder ``target`` with kclassify's two serving signatures."""
    import keras
    import tensorflow as tf

    from ..data.pipeline import decode_bytes, resize_image

    size = int(image_size)
    names = [str(x) for x in labels]

    def classify(images):
        pixels = tf.cast(resize_image(images, size), tf.float32)
        probs = tf.cast(model(pixels, training=False), tf.float32)
        top = tf.argmax(probs, axis=-1)
        return {"probabilities": probs, "label": tf.gather(tf.constant(names), top),
                "score": tf.reduce_max(probs, axis=-1)}

    def from_bytes(image_bytes):
        images = tf.map_fn(lambda b: decode_bytes(b, size), image_bytes,
                           fn_output_signature=tf.TensorSpec([size, size, 3], tf.uint8))
        return classify(images)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(BYTES_SIGNATURE, from_bytes,
                         input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    archive.add_endpoint(IMAGES_SIGNATURE, classify,
                         input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    archive.write_out(str(target), verbose=False)
    info = target / SAVEDMODEL_INFO
    info.parent.mkdir(parents=True, exist_ok=True)
    info.write_text(json.dumps({"labels": names, "image_size": size, "resize": "kclassify"}, indent=1) + "\n",
                    encoding="utf-8")
    write_labels(target / "assets.extra" / LABELS_FILE, names)
