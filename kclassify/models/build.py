"""``build_classifier``: registry backbone + preprocessing + head, raw pixels in, probabilities out."""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import ConfigError, WeightsError
from .registry import BackboneSpec, get

log = logging.getLogger(__name__)

NORMALIZATION_LAYER = "normalization"


def _backbone(spec: BackboneSpec, image_size: int, weights: str):
    ctor = spec.resolve()
    shape = (image_size, image_size, 3)
    if weights == "none":
        return ctor(input_shape=shape, include_top=False, weights=None, **spec.kwargs)
    if weights == "imagenet":
        if not spec.imagenet:
            raise WeightsError(
                f"Backbone {spec.name!r} has no ImageNet weights. Pass --weights none or a "
                "local .weights.h5 file."
            )
        try:
            return ctor(input_shape=shape, include_top=False, weights="imagenet", **spec.kwargs)
        except Exception as e:  # urllib errors, wrapped by Keras as Exception("URL fetch failure ...")
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise WeightsError(
                f"Could not fetch ImageNet weights for {spec.name!r} ({first}). Offline, pass "
                "--weights none or --weights PATH to a local .weights.h5 file."
            ) from None
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsError(
            f"Weights file {weights!r} does not exist. Expected none, imagenet, or a path to a "
            "backbone .weights.h5 file."
        )
    model = ctor(input_shape=shape, include_top=False, weights=None, **spec.kwargs)
    try:
        model.load_weights(str(path))
    except Exception as e:
        raise WeightsError(
            f"Weights file {weights!r} does not fit backbone {spec.name!r} at {image_size}px "
            f"({type(e).__name__}: {str(e).splitlines()[0][:160]}). Pass weights saved from the "
            "same backbone."
        ) from None
    return model


def build_classifier(
    backbone: str,
    num_classes: int,
    image_size: int | None = None,
    *,
    weights: str = "none",
    dropout: float = 0.2,
    pooling: str = "avg",
):
    """Build a Keras classifier that takes raw RGB pixels (0-255) and returns probabilities.

    Preprocessing lives inside the model, as the registry record says, so export and
    serving never reimplement it. A ``normalization`` backbone must be adapted with
    :func:`adapt_preprocessing` before training.

    Args:
        backbone: registry name, e.g. ``"small_cnn"`` or ``"mobilenet_v3_small"``.
        num_classes: size of the softmax output.
        image_size: square input size (default: the backbone's default).
        weights: ``"none"``, ``"imagenet"`` or a path to a backbone ``.weights.h5``.

    Example:
        >>> model = build_classifier("small_cnn", num_classes=3, image_size=32)
        >>> model.output_shape
        (None, 3)
    """
    import keras
    from keras import layers

    spec = get(backbone)
    size = int(image_size or spec.default_size)
    if size < spec.min_size:
        raise ConfigError(
            f"Backbone {spec.name!r} needs an input of at least {spec.min_size}px; received "
            f"image_size={size}. Pass --image-size {spec.min_size} or more."
        )
    num_classes = int(num_classes)  # Keras 3 rejects NumPy integers as layer sizes
    inputs = keras.Input((size, size, 3), name="image")
    x = inputs
    if spec.preprocessing == "normalization":
        x = layers.Normalization(axis=-1, name=NORMALIZATION_LAYER)(x)
    base = _backbone(spec, size, weights)
    x = base(x)
    pool = layers.GlobalAveragePooling2D if pooling == "avg" else layers.GlobalMaxPooling2D
    x = pool(name="pool")(x)
    if dropout > 0:
        x = layers.Dropout(float(dropout), name="dropout")(x)
    # float32 output keeps softmax stable under mixed precision.
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(x)
    return keras.Model(inputs, outputs, name=f"kclassify_{spec.name}")


def adapt_preprocessing(model, images) -> bool:
    """Adapt the model's Normalization layer on a dataset of images; False if it has none."""
    try:
        layer = model.get_layer(NORMALIZATION_LAYER)
    except ValueError:
        return False
    layer.adapt(images)
    return True
