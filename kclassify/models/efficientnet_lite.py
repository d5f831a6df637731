"""EfficientNet-Lite0 to Lite4 from kimm (Keras 3 ports of timm's models), in Keras applications' signature.

EfficientNet-Lite is MediaPipe Model Maker's default family: ReLU6, no squeeze-excite, a fixed stem
and head, so it quantizes to int8 with little loss. keras-hub holds only Lite0 (one Kaggle preset of
other weights, which needs Kaggle even to build); kimm holds all five with Google's TF-Lite ImageNet
checkpoints (timm ``tf_efficientnet_lite{0-4}.in1k``), downloaded from kimm's GitHub releases on
``weights="imagenet"``.

Two things differ from kimm's defaults. kimm's own input scaling is off for these weights (it divides by
the square root of ImageNet's std; the weights expect [-1, 1]), so it is left out and the registry's
``tf`` preprocessing does it. And kimm does not register its model classes with Keras, so a ``.keras``
file holding one would not load; the backbone is returned as a plain functional model over the same
layers, which any Keras loads without kimm.
"""

from __future__ import annotations


def _lite(variant: int):
    def constructor(input_shape=None, include_top=False, weights=None, **kwargs):
        import keras
        import kimm

        model = getattr(kimm.models, f"EfficientNetLiteB{variant}")(
            input_shape=input_shape, include_top=include_top, weights=weights, include_preprocessing=False, **kwargs)
        return keras.Model(model.input, model.output, name=f"efficientnet_lite{variant}")

    constructor.__name__ = constructor.__qualname__ = f"EfficientNetLite{variant}"
    constructor.__doc__ = (f"EfficientNet-Lite{variant} (kimm ``EfficientNetLiteB{variant}``) without its own "
                           "preprocessing, as a plain functional model; expects pixels in [-1, 1].")
    return constructor


EfficientNetLite0 = _lite(0)
EfficientNetLite1 = _lite(1)
EfficientNetLite2 = _lite(2)
EfficientNetLite3 = _lite(3)
EfficientNetLite4 = _lite(4)
