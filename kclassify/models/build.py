"""``build_classifier``: registry backbone + preprocessing + head, raw pixels in, probabilities out."""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import ConfigError, WeightsError
from ..textfiles import LABELS_FILE, read_labels, write_json
from .registry import REGISTRY, BackboneSpec, get
from .small_cnn import activation_layer

log = logging.getLogger(__name__)

INPUT_LAYER = "image"
NORMALIZATION_LAYER = "normalization"
POOL_LAYER = "pool"  # its input is the backbone's last spatial feature map (Grad-CAM reads it)
OUTPUT_LAYER = "predictions"  # the softmax Dense; Grad-CAM reads its logits
DOWNSAMPLE_LAYER = "downsample"  # with input_scale K > 1: the KxK average the input goes through first
AUTO_SCALE_MAX_INPUT = 256  # --input-scale's default keeps the model's input within this


def default_input_scale(image_size: int, photo_side: float | None = None) -> int:
    """``--input-scale`` when not given: 2 where the photos are at least twice ``image_size`` (or their
    size is unknown) and the doubled input stays within 256 px; else 1 (photos no larger than the
    input: a phone only upscales them, which aliases nothing).

    Measured on intel_scenes (150 px photos, three splits): with half the training images resized as a
    phone does, K = 2 gave the best phone accuracy at 32 and 64 px (well above K = 1 without them, and a
    little better through kclassify's own resize too); K = 4 at 32 px, an input nearer the photos' size,
    left the phone less gap but scored a little lower on both paths (docs/benchmarks.md, "Which recipe
    survives the phone's resize (issue 26)"). Not above
    256 px: for pretrained backbones at 224 px a doubled input costs a 4x larger decode cache and
    augmentation, and was not measured.
    """
    size = int(image_size)
    if 2 * size > AUTO_SCALE_MAX_INPUT or (photo_side is not None and photo_side < 2 * size):
        return 1
    return 2


WEIGHT_KEYWORDS = ("none", "imagenet")  # --weights values that name no file, even beside a folder of that name


def _backbone(spec: BackboneSpec, image_size: int | None, weights: str, options: dict):
    ctor = spec.resolve()
    shape = (image_size, image_size, 3)  # (None, None, 3): any size
    kwargs = {**spec.kwargs, **options}
    if weights == "none":
        return ctor(input_shape=shape, include_top=False, weights=None, **kwargs)
    if weights == "imagenet":
        if not spec.imagenet:
            raise WeightsError(
                f"Backbone {spec.name!r} has no ImageNet weights. Pass --weights none or a "
                "local .weights.h5 file."
            )
        try:
            return ctor(input_shape=shape, include_top=False, weights="imagenet", **kwargs)
        except Exception as e:  # urllib errors, wrapped by Keras as Exception("URL fetch failure ...")
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise WeightsError(
                f"Could not fetch ImageNet weights for {spec.name!r} ({first}). Offline, pass "
                "--weights none or --weights PATH to a local .weights.h5 file."
            ) from None
    path = Path(weights).expanduser()
    if path.suffix == ".safetensors" and path.is_file():  # a PyTorch checkpoint the constructor maps itself
        try:
            return ctor(input_shape=shape, include_top=False, weights=str(path), **kwargs)
        except Exception as e:
            raise WeightsError(
                f"Weights file {weights!r} does not fit backbone {spec.name!r} ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:160]}). Pass timm's .safetensors of the same model, or a .weights.h5."
            ) from None
    model = ctor(input_shape=shape, include_top=False, weights=None, **kwargs)
    if path.is_dir() or path.suffix == ".keras":
        _copy_backbone(model, _source_model(path), spec, weights)
        return model
    if not path.is_file():
        raise WeightsError(
            f"Weights file {weights!r} does not exist. Expected none, imagenet, a backbone "
            ".weights.h5 file, or a run folder / .keras model with the same backbone."
        )
    try:
        model.load_weights(str(path))
    except Exception as e:
        raise WeightsError(
            f"Weights file {weights!r} does not fit backbone {spec.name!r} at {image_size}px "
            f"({type(e).__name__}: {str(e).splitlines()[0][:160]}). Pass weights saved from the "
            "same backbone."
        ) from None
    return model


def _source_model(path: Path):
    """A model to transfer from: ``model.keras`` of a run folder, or a ``.keras`` file."""
    import keras

    file = path / "model.keras" if path.is_dir() else path
    if not file.is_file():
        raise WeightsError(
            f"{str(path)!r} holds no model.keras. Pass a finished run folder, a .keras model, or "
            "a backbone .weights.h5 file."
        )
    return keras.models.load_model(file, compile=False)


def backbone_of(model):
    """The backbone of a classifier from :func:`build_classifier`: its one nested Model."""
    import keras

    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(nested) != 1:
        raise ValueError(f"expected one backbone sub-model in {model.name}; found {len(nested)}")
    return nested[0]


def _copy_backbone(target, source, spec: BackboneSpec, where: str) -> None:
    try:
        base = backbone_of(source)
    except ValueError:
        base = None
    shapes = [tuple(w.shape) for w in target.weights]
    if base is None or base.name != target.name or [tuple(w.shape) for w in base.weights] != shapes:
        found = base.name if base is not None else "no single backbone"
        raise WeightsError(
            f"{where} holds {found}; backbone {spec.name!r} ({target.name}) cannot take its weights. "
            f"Pass --backbone matching that run (see its config.yaml), or --weights none."
        )
    target.set_weights(base.get_weights())


def transfer_head(model, weights: str, classes: list[str]) -> bool:
    """Load the whole classifier (head included) from a run folder with the same classes."""
    if weights in WEIGHT_KEYWORDS:
        return False
    path = Path(str(weights)).expanduser()
    labels = path / LABELS_FILE
    if not (path.is_dir() and labels.is_file()):
        return False
    if read_labels(labels) != list(classes):
        return False  # other classes: the backbone was transferred, the head stays new
    source = _source_model(path)
    if [tuple(w.shape) for w in source.weights] != [tuple(w.shape) for w in model.weights]:
        return False
    model.set_weights(source.get_weights())
    return True


def build_classifier(
    backbone: str,
    num_classes: int,
    image_size: int | None = None,
    *,
    weights: str = "none",
    dropout: float = 0.2,
    pooling: str = "avg",
    hidden_units: int = 0,
    hidden_activation: str = "relu",
    bn_momentum: float | None = None,
    input_scale: int = 1,
    any_size: bool = False,
    **options,
):
    """Build a Keras classifier that takes raw RGB pixels (0-255) and returns probabilities.

    Preprocessing lives inside the model, as the registry record says, so export and
    serving never reimplement it. A ``normalization`` backbone must be adapted with
    :func:`adapt_preprocessing` before training.

    Args:
        backbone: registry name, e.g. ``"small_cnn"`` or ``"mobilenet_v3_small"``.
        num_classes: size of the softmax output.
        image_size: square input size (default: the backbone's default).
        weights: ``"none"``, ``"imagenet"``, a backbone ``.weights.h5``, or a run folder /
            ``.keras`` model with the same backbone (transfer from an earlier run).
        hidden_units: size of an optional dense layer between pooling and output.
        bn_momentum: moving-average momentum for every BatchNorm layer of the backbone
            (None: the backbone's own).
        input_scale: K > 1 makes the input K times ``image_size`` and averages each KxK block
            first (a frozen depthwise convolution, on XNNPACK in int8 too), so the backbone still works
            at ``image_size``. A phone resizes photos without antialiasing; to a K times larger
            input that loses far less (``docs/android.md``).
        any_size: the input takes any height and width (progressive resizing trains on smaller
            images first); :func:`with_input_size` fixes it to ``image_size`` for saving.
        options: backbone options the registry record lists (``activation``,
            ``batch_norm``, ``width``, ``depth``); others must keep their defaults.

    Example:
        >>> model = build_classifier("small_cnn", num_classes=3, image_size=32)
        >>> model.output_shape
        (None, 3)
    """
    import keras

    spec = get(backbone)
    size, k = _checked_sizes(spec, image_size, input_scale)
    num_classes = int(num_classes)  # Keras 3 rejects NumPy integers as layer sizes
    side = None if any_size else size * k
    inputs = keras.Input((side, side, 3), name=INPUT_LAYER)
    x = _block_mean(inputs, k) if k > 1 else inputs
    x = _preprocess(spec.preprocessing, x)
    base = _backbone(spec, None if any_size else size, weights, _backbone_options(spec, options))
    if bn_momentum is not None:
        _set_bn_momentum(base, float(bn_momentum))
    # A pretrained backbone runs in inference mode (BatchNorm keeps its statistics) even when
    # fine-tuned, as in the Keras transfer-learning guide; one trained from scratch does not.
    x = base(x, training=False) if weights != "none" else base(x)
    outputs = _head(x, num_classes, pooling, hidden_units, hidden_activation, dropout)
    return keras.Model(inputs, outputs, name=f"kclassify_{spec.name}")


def _set_bn_momentum(base, momentum: float) -> None:
    from keras import layers

    for layer in all_layers(base):
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = momentum


def _head(x, num_classes: int, pooling: str, hidden_units: int, hidden_activation: str, dropout: float):
    """Pooling (the ``POOL_LAYER`` Grad-CAM reads), an optional hidden layer, dropout and the softmax."""
    from keras import layers

    pool = layers.GlobalAveragePooling2D if pooling == "avg" else layers.GlobalMaxPooling2D
    x = pool(name=POOL_LAYER)(x)
    if hidden_units:
        x = layers.Dense(int(hidden_units), name="hidden")(x)
        x = activation_layer(hidden_activation, name="hidden_act")(x)
    if dropout > 0:
        x = layers.Dropout(float(dropout), name="dropout")(x)
    # float32 output keeps softmax stable under mixed precision.
    return layers.Dense(num_classes, activation="softmax", dtype="float32", name=OUTPUT_LAYER)(x)


def _checked_sizes(spec: BackboneSpec, image_size: int | None, input_scale: int) -> tuple[int, int]:
    """The backbone's working size (default: the registry's) and the input scale, or a ConfigError."""
    size, k = int(image_size or spec.default_size), int(input_scale)
    if size < spec.min_size:
        raise ConfigError(
            f"Backbone {spec.name!r} needs an input of at least {spec.min_size}px; received "
            f"image_size={size}. Pass --image-size {spec.min_size} or more."
        )
    if k < 1:
        raise ConfigError(f"--input-scale must be a whole number of at least 1; received {input_scale!r}.")
    return size, k


def float32_model(model):
    """``model`` computing in float32 throughout, with the same weights; ``model`` itself if it does.

    A mixed-precision model keeps its variables in float32 and computes in bfloat16 or
    float16; the copy the run folder saves computes in float32, so the saved model, its
    SavedModel and TFLite exports and every later score run the same arithmetic on any
    machine (bfloat16 is emulated, and slow, on CPUs without it). The copy is not compiled.
    """
    return with_policy(model, "float32")


def with_policy(model, policy: str):
    """``model`` rebuilt to compute under the Keras dtype policy ``policy``, with the same weights; ``model``
    itself if every layer already computes in its compute dtype. Not compiled.

    ``float32`` turns every layer to float32 (:func:`float32_model`). A mixed policy (``mixed_bfloat16``,
    ``mixed_float16``) turns every layer to it except the model's outputs, which keep float32, as the
    classifier head kclassify builds does (e.g. a ``fit --teacher`` model computing as its student does).
    """
    import keras

    compute = keras.DTypePolicy(policy).compute_dtype
    if compute == "float32" and all(layer.dtype_policy.compute_dtype == "float32" for layer in all_layers(model)):
        return model  # before get_config(): a float32 model that cannot be serialized is still returned as it is
    config = model.get_config()
    outputs = _output_layer_names(config)
    if all(layer.dtype_policy.compute_dtype == ("float32" if layer.name in outputs else compute)
           for layer in all_layers(model)):
        return model

    def turned(node, to):
        if isinstance(node, dict):
            if node.get("class_name") == "DTypePolicy" and isinstance(node.get("config"), dict):
                return {**node, "config": {**node["config"], "name": to}}
            if to == "float32":  # a nested model's input is declared in the compute dtype the outer layers hand it
                return {k: "float32" if k == "dtype" and v in ("bfloat16", "float16") else turned(v, to)
                        for k, v in node.items()}
            return {k: turned(v, to) for k, v in node.items()}
        if isinstance(node, list):
            return [turned(v, to) for v in node]
        return node

    if policy == "float32" or "layers" not in config:
        config = turned(config, policy)
    else:  # a functional or Sequential model: its output layers stay float32
        config = {**config, "layers": [turned(layer, "float32" if layer.get("config", {}).get("name") in outputs
                                              else policy) for layer in config["layers"]]}
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(policy)  # layers that name no dtype take the global one
    try:
        copy = model.__class__.from_config(config)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    return _with_weights_of(copy, model)


def _output_layer_names(config: dict) -> set[str]:
    """The names of the layers a model's ``get_config()`` outputs from: a functional model's
    ``output_layers`` (``[name, node, tensor]`` entries in any list or dict structure), a Sequential model's
    last layer."""
    import keras

    outputs = config.get("output_layers")
    if outputs:
        return {x for x in keras.tree.flatten(outputs) if isinstance(x, str)}
    layers = config.get("layers") or []
    return {layers[-1].get("config", {}).get("name")} if layers else set()


def _with_weights_of(copy, model):
    """``copy`` (rebuilt from ``model``'s config) with ``model``'s weights and the state derived from them."""
    copy.set_weights(model.get_weights())
    for layer in all_layers(copy):  # e.g. an adapted Normalization derives its mean from its variables here
        if hasattr(layer, "finalize_state"):
            layer.finalize_state()
    return copy


def clone_replacing(model, replace):
    """A clone of ``model``, nested models included, in which ``replace(layer)`` stands in for each layer it
    returns a layer for (None: the layer is rebuilt from its config); every rebuilt layer gets its weights.
    Returns the clone and ``{id(original layer): its clone}``."""
    import keras

    made = {}

    def clone(layer):
        if isinstance(layer, keras.Model):
            new = keras.models.clone_model(layer, clone_function=clone)
        else:
            new = replace(layer)
            new = layer.__class__.from_config(layer.get_config()) if new is None else new
        made[id(layer)] = new
        return new

    copy = keras.models.clone_model(model, clone_function=clone)
    for old in all_layers(model):
        new = made.get(id(old))
        if new is not None and type(new) is type(old) and not isinstance(old, keras.Model) and old.weights:
            new.set_weights(old.get_weights())
            if hasattr(new, "finalize_state"):  # e.g. an adapted Normalization derives its mean here
                new.finalize_state()
    return copy, made


def all_layers(model):
    """Every layer of a model, nested models' layers included."""
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from all_layers(layer)


DEFAULT_OPTIONS = {"activation": "relu", "batch_norm": True, "width": 1.0, "depth": 1}


def _backbone_options(spec: BackboneSpec, options: dict) -> dict:
    """The options this backbone takes; a non-default option it does not take is an error."""
    unknown = set(options) - set(DEFAULT_OPTIONS)
    if unknown:
        raise TypeError(f"build_classifier() got unexpected options {sorted(unknown)}")
    for key, value in options.items():
        if key not in spec.options and value != DEFAULT_OPTIONS[key]:
            raise ConfigError(
                f"Backbone {spec.name!r} has a fixed architecture; {key}={value!r} applies only "
                f"to {', '.join(n for n, s in REGISTRY.items() if key in s.options)}. Drop it or "
                "pick one of those backbones."
            )
    return {k: v for k, v in options.items() if k in spec.options}


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


F32 = {"dtype": "float32"}  # preprocessing stays in float32 under mixed precision


def _block_mean(x, k: int):
    """Each KxK block's mean: a frozen depthwise convolution of weights 1/K^2, stride K.

    An ``AveragePooling2D`` computes the same, but in an int8 file LiteRT's XNNPACK delegate leaves
    AVERAGE_POOL_2D to LiteRT's own kernel (measured: the int8 file's one op off XNNPACK), while an int8
    DEPTHWISE_CONV_2D runs on it; 1/K^2 is exact in its per-channel int8 weights for K = 2 and 4.
    """
    import numpy as np
    from keras import layers

    conv = layers.DepthwiseConv2D(k, strides=k, use_bias=False, trainable=False, name=DOWNSAMPLE_LAYER, **F32)
    y = conv(x)
    conv.set_weights([np.full((k, k, 3, 1), 1.0 / (k * k), "float32")])
    return y


def _normalization(x):  # adapted on the training split (adapt_preprocessing)
    from keras import layers

    return layers.Normalization(axis=-1, name=NORMALIZATION_LAYER, **F32)(x)


def _tf(x):
    from keras import layers

    return layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess", **F32)(x)


def _torch(x):
    import numpy as np
    from keras import layers

    x = layers.Rescaling(1.0 / 255.0, name="preprocess_scale", **F32)(x)
    return layers.Normalization(mean=IMAGENET_MEAN, variance=np.square(IMAGENET_STD), name="preprocess", **F32)(x)


def _caffe(x):
    """A frozen 1x1 convolution: its kernel swaps RGB to BGR, its bias subtracts the mean."""
    import numpy as np
    from keras import layers

    conv = layers.Conv2D(3, 1, trainable=False, name="preprocess", **F32)
    y = conv(x)
    kernel = np.zeros((1, 1, 3, 3), "float32")
    for c in range(3):
        kernel[0, 0, 2 - c, c] = 1.0
    conv.set_weights([kernel, -np.asarray(CAFFE_MEAN_BGR, "float32")])
    return y


# registry preprocessing mode -> the stock Keras layers doing it (stock layers keep model.keras
# loadable without kclassify and convertible to TFLite); the keys are registry.PREPROCESSING's.
PREPROCESSORS = {
    "builtin": lambda x: x,  # the backbone rescales its own input
    "normalization": _normalization,
    "tf": _tf,
    "torch": _torch,
    "caffe": _caffe,
}


def _preprocess(mode: str, x):
    """Raw 0-255 RGB -> what the backbone expects."""
    return PREPROCESSORS[mode](x)


def classifier_for(model_config, num_classes: int, image_size: int, *, weights: str | None = None,
                   any_size: bool = False):
    """:func:`build_classifier` from a :class:`kclassify.config.ModelConfig` (``weights`` overrides its own)."""
    m = model_config
    return build_classifier(
        m.backbone, num_classes, image_size, weights=m.weights if weights is None else weights, dropout=m.dropout,
        pooling=m.pooling, hidden_units=m.hidden_units, hidden_activation=m.hidden_activation,
        activation=m.activation, batch_norm=m.batch_norm, width=m.width, depth=m.depth, bn_momentum=m.bn_momentum,
        input_scale=m.input_scale or 1, any_size=any_size,
    )


def with_input_size(model, image_size: int, input_scale: int = 1):
    """``model`` (built with ``any_size``) taking ``image_size * input_scale`` pixels, with the same weights;
    ``model`` itself when its input already has a size.

    The classifier's input and its backbone's get the sizes :func:`build_classifier` gives them without
    ``any_size``, so the copy is the model a fit at that size builds: exports and predictors read the size.
    """
    if model.input_shape[1] is not None:
        return model
    size = int(image_size)
    config = model.get_config()
    for layer in config["layers"]:
        if layer["class_name"] == "InputLayer":
            layer["config"]["batch_shape"] = [None, size * int(input_scale), size * int(input_scale), 3]
        elif isinstance(layer["config"], dict) and "layers" in layer["config"]:  # the backbone
            for inner in layer["config"]["layers"]:
                if inner["class_name"] == "InputLayer":
                    inner["config"]["batch_shape"] = [None, size, size, 3]
    return _with_weights_of(model.__class__.from_config(config), model)


def count_parameters(backbone: str) -> int:
    """Parameters of a backbone without head (independent of the input size), built at its minimum size."""
    import keras

    spec = get(backbone)
    model = spec.resolve()(input_shape=(spec.min_size, spec.min_size, 3), include_top=False,
                           weights=None, **spec.kwargs)
    count = int(model.count_params())
    keras.backend.clear_session()
    return count


def parameter_counts(names: list[str]) -> dict[str, int]:
    """Parameters of each backbone without head (:func:`count_parameters`), cached per Keras version.

    The cache is ``backbone_parameters-keras<version>.json`` in kclassify's cache folder
    (:func:`kclassify.data.cache_dir`); only backbones missing from it are built (``kclassify models``).
    """
    import json
    from importlib import metadata

    from ..data import cache_dir

    path = cache_dir() / f"backbone_parameters-keras{metadata.version('keras')}.json"
    counts = json.loads(path.read_text()) if path.is_file() else {}
    missing = [n for n in names if n not in counts]
    for i, name in enumerate(missing, 1):
        log.info("counting parameters %d/%d: %s", i, len(missing), name)
        counts[name] = count_parameters(name)
    if missing:
        write_json(path, counts, indent=1)
    return counts


def adapt_preprocessing(model, images) -> bool:
    """Adapt the model's Normalization layer on a dataset of images; False if it has none."""
    try:
        layer = model.get_layer(NORMALIZATION_LAYER)
    except ValueError:
        return False
    layer.adapt(images)
    return True
