"""The backbone registry: one record per backbone, read by everything else.

Records are plain data (constructors are import paths resolved on use), so the
CLI can list names and sizes without importing TensorFlow. Adding a backbone is
adding one :class:`BackboneSpec` to :data:`REGISTRY`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import UnknownBackboneError, did_you_mean

# How raw 0-255 pixels become what the backbone expects; always inside the model.
PREPROCESSING = {
    "builtin": "the backbone rescales its own input (e.g. include_preprocessing=True)",
    "normalization": "a Keras Normalization layer adapted on the training split",
}


@dataclass(frozen=True)
class BackboneSpec:
    """Everything the rest of kclassify may know about one backbone.

    Attributes:
        name: registry name users type (snake_case).
        constructor: ``"module:attr"`` of a callable taking ``input_shape``,
            ``include_top=False`` and ``weights`` (Keras applications' signature).
        default_size: input size used when ``--image-size`` is not given.
        min_size: smallest input size the architecture accepts.
        preprocessing: a key of :data:`PREPROCESSING`.
        imagenet: whether ImageNet weights can be downloaded for it.
        kwargs: extra constructor arguments.
        unfreeze_from: name of the layer block from which fine-tuning unfreezes.
    """

    name: str
    constructor: str
    default_size: int
    min_size: int
    preprocessing: str
    imagenet: bool
    kwargs: dict[str, Any] = field(default_factory=dict)
    unfreeze_from: str | None = None

    def resolve(self) -> Callable:
        module, attr = self.constructor.split(":")
        return getattr(importlib.import_module(module), attr)


REGISTRY: dict[str, BackboneSpec] = {}


def register(spec: BackboneSpec) -> BackboneSpec:
    if spec.preprocessing not in PREPROCESSING:
        raise ValueError(f"{spec.name}: unknown preprocessing {spec.preprocessing!r}")
    REGISTRY[spec.name] = spec
    return spec


def get(name: str) -> BackboneSpec:
    if name not in REGISTRY:
        raise UnknownBackboneError(
            f"Unknown backbone {name!r}.{did_you_mean(name, REGISTRY)} "
            f"Valid backbones: {', '.join(REGISTRY)}."
        )
    return REGISTRY[name]


def names() -> list[str]:
    return list(REGISTRY)


register(BackboneSpec(
    "small_cnn", "kclassify.models.small_cnn:SmallCNN", default_size=64, min_size=16,
    preprocessing="normalization", imagenet=False,
))
register(BackboneSpec(
    "mobilenet_v3_small", "keras.applications:MobileNetV3Small", default_size=224, min_size=32,
    preprocessing="builtin", imagenet=True, kwargs={"include_preprocessing": True},
))
register(BackboneSpec(
    "mobilenet_v3_large", "keras.applications:MobileNetV3Large", default_size=224, min_size=32,
    preprocessing="builtin", imagenet=True, kwargs={"include_preprocessing": True},
))
