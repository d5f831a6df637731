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
    "tf": "Rescaling to [-1, 1], as preprocess_input(mode='tf')",
    "torch": "Rescaling to [0, 1] then ImageNet mean/std, as preprocess_input(mode='torch')",
    "caffe": "RGB to BGR and ImageNet mean subtraction, as preprocess_input(mode='caffe')",
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
        options: model settings (``ModelConfig`` names) the constructor accepts.
    """

    name: str
    constructor: str
    default_size: int
    min_size: int
    preprocessing: str
    imagenet: bool
    kwargs: dict[str, Any] = field(default_factory=dict)
    unfreeze_from: str | None = None
    options: tuple[str, ...] = ()

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
    preprocessing="normalization", imagenet=False, options=("activation", "width", "depth"),
    unfreeze_from="block3",
))
register(BackboneSpec(
    "alexnet", "kclassify.models.alexnet:AlexNet", default_size=224, min_size=16,
    preprocessing="normalization", imagenet=False, options=("activation", "batch_norm"),
    unfreeze_from="conv3",
))


def _application(name: str, attr: str, size: int, preprocessing: str, min_size: int, kwargs: dict,
                 block: str | None):
    """Register a ``keras.applications`` backbone."""
    register(BackboneSpec(name, f"keras.applications:{attr}", default_size=size, min_size=min_size,
                          preprocessing=preprocessing, imagenet=True, kwargs=kwargs, unfreeze_from=block))


_BUILTIN = {"include_preprocessing": True}
# name, keras.applications attribute, default size, preprocessing, minimum size, kwargs,
# block fine-tuning unfreezes from with --unfreeze top (None: the top quarter of layers)
for _name, _attr, _size, _prep, _min, _kw, _block in [
    ("vgg16", "VGG16", 224, "caffe", 32, {}, "block5"),
    ("vgg19", "VGG19", 224, "caffe", 32, {}, "block5"),
    ("resnet50", "ResNet50", 224, "caffe", 32, {}, "conv5_block1"),
    ("resnet101", "ResNet101", 224, "caffe", 32, {}, "conv5_block1"),
    ("resnet152", "ResNet152", 224, "caffe", 32, {}, "conv5_block1"),
    ("resnet50_v2", "ResNet50V2", 224, "tf", 32, {}, "conv5_block1"),
    ("resnet101_v2", "ResNet101V2", 224, "tf", 32, {}, "conv5_block1"),
    ("resnet152_v2", "ResNet152V2", 224, "tf", 32, {}, "conv5_block1"),
    ("inception_v3", "InceptionV3", 299, "tf", 75, {}, "mixed9"),
    ("inception_resnet_v2", "InceptionResNetV2", 299, "tf", 75, {}, "block8_1"),
    ("xception", "Xception", 299, "tf", 71, {}, "block13"),
    ("mobilenet", "MobileNet", 224, "tf", 32, {}, "conv_dw_12"),
    ("mobilenet_v2", "MobileNetV2", 224, "tf", 32, {}, "block_13"),
    ("mobilenet_v3_small", "MobileNetV3Small", 224, "builtin", 32, _BUILTIN, "expanded_conv_9"),
    ("mobilenet_v3_large", "MobileNetV3Large", 224, "builtin", 32, _BUILTIN, "expanded_conv_12"),
    ("densenet121", "DenseNet121", 224, "torch", 32, {}, "conv5_block1"),
    ("densenet169", "DenseNet169", 224, "torch", 32, {}, "conv5_block1"),
    ("densenet201", "DenseNet201", 224, "torch", 32, {}, "conv5_block1"),
    ("nasnet_mobile", "NASNetMobile", 224, "tf", 32, {}, None),
    ("nasnet_large", "NASNetLarge", 331, "tf", 32, {}, None),
    *[(f"efficientnet_b{i}", f"EfficientNetB{i}", size, "builtin", 32, {}, "block6a")
      for i, size in enumerate((224, 240, 260, 300, 380, 456, 528, 600))],
    *[(f"efficientnet_v2_{v.lower()}", f"EfficientNetV2{v}", size, "builtin", 32, _BUILTIN, "block6a")
      for v, size in (("B0", 224), ("B1", 240), ("B2", 260), ("B3", 300), ("S", 384), ("M", 480), ("L", 480))],
    *[(f"convnext_{v.lower()}", f"ConvNeXt{v}", 224, "builtin", 32, _BUILTIN, f"convnext_{v.lower()}_stage_3")
      for v in ("Tiny", "Small", "Base", "Large", "XLarge")],
]:
    _application(_name, _attr, _size, _prep, _min, _kw, _block)

# Made for int8 phones (ReLU/ReLU6, no squeeze-excite, no hard-swish): EfficientNet-Lite from kimm with
# Google's ImageNet weights ([-1, 1] input), MobileNetV4's convolutional models of our own (no Keras 3
# source holds them) with timm's ImageNet weights (ImageNet mean and std).
for _i, _size in enumerate((224, 240, 260, 300, 380)):
    register(BackboneSpec(
        f"efficientnet_lite{_i}", f"kclassify.models.efficientnet_lite:EfficientNetLite{_i}", default_size=_size,
        min_size=32, preprocessing="tf", imagenet=True, unfreeze_from="blocks_5_0",
    ))
for _variant, _size in (("small", 224), ("medium", 256)):
    register(BackboneSpec(
        f"mobilenet_v4_conv_{_variant}", f"kclassify.models.mobilenet_v4:MobileNetV4Conv{_variant.title()}",
        default_size=_size, min_size=32, preprocessing="torch", imagenet=True, unfreeze_from="blocks_3_0",
    ))
