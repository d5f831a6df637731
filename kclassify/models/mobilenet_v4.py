"""MobileNetV4 Conv-Small and Conv-Medium (Qin et al., 2024), in Keras applications' signature.

The convolutional MobileNetV4s use ReLU only (no hard-swish, no squeeze-excite), so every op is one
int8 TFLite runs on XNNPACK. Neither keras-hub nor kimm holds MobileNetV4, so this follows the paper's
tables as timm writes them (``mobilenetv4_conv_small`` / ``_medium``: the same blocks, widths and
strides; with timm's 1280-wide head and 1000 classes the parameter counts are timm's 3.77 M and 9.72 M).
Stride-2 convolutions pad symmetrically as PyTorch does.

Blocks (one tuple each: type, output channels, stride, kernel a, kernel m, expansion):

- ``cn``: convolution, BatchNorm, ReLU (kernel a);
- ``er``: fused inverted bottleneck: an a x a expanding convolution (with the stride), a 1x1 projection;
- ``uir``: the universal inverted bottleneck: an optional a x a depthwise convolution first (no
  activation), a 1x1 expansion, an optional m x m depthwise convolution (the stride goes to it when
  present), a 1x1 projection; a=0 and m>0 is the classic inverted bottleneck, a>0 and m=0 ConvNeXt-like,
  both 0 a feed-forward block.

Blocks whose input and output shapes match add their input back.

ImageNet weights are timm's (PyTorch, Apache-2.0, on the Hugging Face hub): ``weights="imagenet"``
downloads the ``model.safetensors`` of ``mobilenetv4_conv_small.e2400_r224_in1k`` or
``mobilenetv4_conv_medium.e500_r224_in1k`` and :func:`load_timm` maps each tensor onto its Keras layer
(the layer names follow timm's modules; inputs normalized with ImageNet's mean and std, kclassify's
``torch`` preprocessing). A ``.safetensors`` file already on disk loads the same way.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from .small_cnn import BN_MOMENTUM

TIMM_WEIGHTS = {
    "small": "https://huggingface.co/timm/mobilenetv4_conv_small.e2400_r224_in1k/resolve/main/model.safetensors",
    "medium": "https://huggingface.co/timm/mobilenetv4_conv_medium.e500_r224_in1k/resolve/main/model.safetensors",
}
SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64}

_SMALL = [
    [("cn", 32, 2, 3, 0, 1), ("cn", 32, 1, 1, 0, 1)],
    [("cn", 96, 2, 3, 0, 1), ("cn", 64, 1, 1, 0, 1)],
    [("uir", 96, 2, 5, 5, 3), *[("uir", 96, 1, 0, 3, 2)] * 4, ("uir", 96, 1, 3, 0, 4)],
    [("uir", 128, 2, 3, 3, 6), ("uir", 128, 1, 5, 5, 4), ("uir", 128, 1, 0, 5, 4), ("uir", 128, 1, 0, 5, 3),
     *[("uir", 128, 1, 0, 3, 4)] * 2],
    [("cn", 960, 1, 1, 0, 1)],
]
_MEDIUM = [
    [("er", 48, 2, 3, 0, 4)],
    [("uir", 80, 2, 3, 5, 4), ("uir", 80, 1, 3, 3, 2)],
    [("uir", 160, 2, 3, 5, 6), *[("uir", 160, 1, 3, 3, 4)] * 2, ("uir", 160, 1, 3, 5, 4), ("uir", 160, 1, 3, 3, 4),
     ("uir", 160, 1, 3, 0, 4), ("uir", 160, 1, 0, 0, 2), ("uir", 160, 1, 3, 0, 4)],
    [("uir", 256, 2, 5, 5, 6), ("uir", 256, 1, 5, 5, 4), *[("uir", 256, 1, 3, 5, 4)] * 2, ("uir", 256, 1, 0, 0, 4),
     ("uir", 256, 1, 3, 0, 4), ("uir", 256, 1, 3, 5, 2), ("uir", 256, 1, 5, 5, 4), *[("uir", 256, 1, 0, 0, 4)] * 2,
     ("uir", 256, 1, 5, 0, 2)],
    [("cn", 960, 1, 1, 0, 1)],
]
VARIANTS = {"small": _SMALL, "medium": _MEDIUM}
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


def make_divisible(value: float, divisor: int = 8) -> int:
    """The channel count nearest ``value`` that ``divisor`` divides, never more than 10% below it."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _conv(x, filters: int | None, kernel: int, stride: int, name: str, *, act: bool = True,
          depthwise: bool = False):
    from keras import layers

    if stride > 1:
        x = layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
    padding = "valid" if stride > 1 else "same"
    if depthwise:
        x = layers.DepthwiseConv2D(kernel, stride, padding=padding, use_bias=False, name=name)(x)
    else:
        x = layers.Conv2D(filters, kernel, stride, padding=padding, use_bias=False, name=name)(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=1e-5, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x) if act else x


def _block(x, kind: str, out: int, stride: int, ka: int, km: int, expand: int, name: str):
    from keras import layers

    channels = x.shape[-1]
    if kind == "cn":
        return _conv(x, out, ka, stride, name)
    shortcut = x
    if kind == "er":
        x = _conv(x, make_divisible(channels * expand), ka, stride, f"{name}_exp")
        x = _conv(x, out, 1, 1, f"{name}_pwl", act=False)
    else:
        if ka:
            x = _conv(x, None, ka, 1 if km else stride, f"{name}_dw_start", act=False, depthwise=True)
        x = _conv(x, make_divisible(channels * expand), 1, 1, f"{name}_pw_exp")
        if km:
            x = _conv(x, None, km, stride, f"{name}_dw_mid", depthwise=True)
        x = _conv(x, out, 1, 1, f"{name}_pw_proj", act=False)
    if stride == 1 and channels == out:
        x = layers.Add(name=f"{name}_add")([shortcut, x])
    return x


def MobileNetV4(variant: str, input_shape=None, include_top: bool = False, weights=None, classes: int = 1000,
                name: str | None = None):
    """A MobileNetV4 convolutional backbone: raw features (960 channels) or, with ``include_top``, a classifier.

    Args:
        variant: ``small`` or ``medium``.
        weights: None, ``"imagenet"`` (timm's, downloaded) or a timm ``.safetensors`` file (see the module).
    """
    import keras
    from keras import layers

    inputs = keras.Input(input_shape or (None, None, 3))
    x = _conv(inputs, STEM_CHANNELS, 3, 2, "stem")
    for stage, blocks in enumerate(VARIANTS[variant]):
        for i, spec in enumerate(blocks):
            x = _block(x, *spec, name=f"blocks_{stage}_{i}")
    if include_top:
        x = layers.GlobalAveragePooling2D(keepdims=True, name="avg_pool")(x)
        x = _conv(x, HEAD_CHANNELS, 1, 1, "conv_head")
        x = layers.Flatten(name="flatten")(x)
        x = layers.Dense(classes, activation="softmax", name="classifier")(x)
    model = keras.Model(inputs, x, name=name or f"mobilenet_v4_conv_{variant}")
    if weights is not None:
        file = weights if weights != "imagenet" else keras.utils.get_file(
            f"mobilenetv4_conv_{variant}_in1k.safetensors", TIMM_WEIGHTS[variant], cache_subdir="kclassify")
        load_timm(model, read_safetensors(file), include_top=include_top and classes == 1000)
    return model


def read_safetensors(path) -> dict[str, np.ndarray]:
    """The tensors of a ``.safetensors`` file (an 8-byte header length, a JSON header, the raw data)."""
    data = Path(path).read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    out = {}
    for key, meta in header.items():
        if key == "__metadata__":
            continue
        start, end = meta["data_offsets"]
        raw = np.frombuffer(data, SAFETENSORS_DTYPES[meta["dtype"]], offset=8 + length + start,
                            count=(end - start) // np.dtype(SAFETENSORS_DTYPES[meta["dtype"]]).itemsize)
        out[key] = raw.reshape(meta["shape"]).astype(np.float32)
    return out


def _timm_name(layer_name: str) -> str:
    """Our layer name -> timm's module path: ``blocks_2_0_dw_start`` -> ``blocks.2.0.dw_start.conv``."""
    if layer_name in ("stem", "conv_head"):
        return {"stem": "conv_stem", "conv_head": "conv_head"}[layer_name]
    stage, index, *part = layer_name.split("_")[1:]
    block = f"blocks.{stage}.{index}"
    part = "_".join(part)
    return {"": f"{block}.conv", "exp": f"{block}.conv_exp", "pwl": f"{block}.conv_pwl"}.get(part, f"{block}.{part}.conv")


def _timm_norm(conv: str) -> str:
    """The BatchNorm beside a timm convolution: ``x.conv`` -> ``x.bn``; a plain block's ``bn1``/``bn2``."""
    if conv.endswith(".conv") and conv.count(".") == 4:  # blocks.s.i.part.conv
        return conv[:-len("conv")] + "bn"
    return {"conv_stem": "bn1", "conv_head": "norm_head"}.get(
        conv, conv.rsplit(".", 1)[0] + (".bn2" if conv.endswith("conv_pwl") else ".bn1"))


def load_timm(model, state: dict[str, np.ndarray], include_top: bool = False) -> None:
    """Set ``model``'s weights from timm's ``state_dict`` of the same variant; every tensor must be used."""
    from keras import layers

    used = set()

    def take(key):
        if key not in state:
            raise ValueError(f"the weights have no {key!r}: not a timm MobileNetV4 of this variant")
        used.add(key)
        return state[key]

    for layer in model.layers:
        if isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D)) and layer.name != "classifier":
            conv = _timm_name(layer.name)
            kernel = take(f"{conv}.weight")  # (out, in/groups, kh, kw)
            depthwise = isinstance(layer, layers.DepthwiseConv2D)
            layer.set_weights([kernel.transpose(2, 3, 0, 1) if depthwise else kernel.transpose(2, 3, 1, 0)])
            norm = model.get_layer(f"{layer.name}_bn")
            bn = _timm_norm(conv)
            norm.set_weights([take(f"{bn}.{k}") for k in ("weight", "bias", "running_mean", "running_var")])
    if include_top:
        model.get_layer("classifier").set_weights([take("classifier.weight").T, take("classifier.bias")])
    left = sorted(k for k in state if k not in used and not k.endswith("num_batches_tracked")
                  and (include_top or not k.startswith(("conv_head", "norm_head", "classifier"))))
    if left:
        raise ValueError(f"{len(left)} tensor(s) of the weights fit no layer (first: {left[:3]}): not a timm "
                         "MobileNetV4 of this variant")


def MobileNetV4ConvSmall(input_shape=None, include_top=False, weights=None, **kwargs):
    """MobileNetV4 Conv-Small: 1.3 M parameters without a head (3.77 M with timm's 1000-class head)."""
    return MobileNetV4("small", input_shape, include_top, weights, **kwargs)


def MobileNetV4ConvMedium(input_shape=None, include_top=False, weights=None, **kwargs):
    """MobileNetV4 Conv-Medium: 7.3 M parameters without a head (9.72 M with timm's 1000-class head)."""
    return MobileNetV4("medium", input_shape, include_top, weights, **kwargs)
