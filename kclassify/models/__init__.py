"""Models layer: the backbone registry and ``build_classifier``.

Importing this package does not import TensorFlow; building a model does.
"""

from .registry import REGISTRY, BackboneSpec, get, names, register


def build_classifier(*args, **kwargs):
    from .build import build_classifier as _build

    return _build(*args, **kwargs)


build_classifier.__doc__ = "See :func:`kclassify.models.build.build_classifier`."

__all__ = ["REGISTRY", "BackboneSpec", "build_classifier", "get", "names", "register"]
