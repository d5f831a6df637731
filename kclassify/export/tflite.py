"""TFLite conversion variants (float32, float16, dynamic range, full integer) and the integer-kernel check."""

from __future__ import annotations

import functools
import logging
import tempfile
from pathlib import Path

import numpy as np

from ..errors import ExportError
from ..models.build import all_layers

log = logging.getLogger(__name__)

# Ops that only move or reinterpret data between the uint8 input and output of a full-integer
# file; every other op of such a file must take and produce integer tensors.
BOUNDARY_OPS = {"QUANTIZE", "DEQUANTIZE"}


def convert(model, image_size: int, options: dict) -> bytes:
    """Convert a Keras classifier to TFLite with LiteRT converter ``options``.

    Keras' own LiteRT export (``model.export(format="litert")``) does the conversion; the
    input is one float32 image ``(1, S, S, 3)`` of raw 0-255 pixels, as phones feed them.
    Only builtin TFLite ops are allowed (Keras' default also admits TensorFlow "Flex" ops,
    which a phone runs only with the extra select-ops runtime), so an op LiteRT cannot
    express is a conversion error here, not a crash on the device.
    """
    import tensorflow as tf

    spec = [tf.TensorSpec((1, int(image_size), int(image_size), 3), tf.float32, name="image")]
    options = dict(options)
    target = {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS], **options.pop("target_spec", {})}
    with tempfile.TemporaryDirectory(prefix="kclassify-tflite-") as tmp:
        path = Path(tmp) / "model.tflite"
        try:
            model.export(str(path), format="litert", verbose=False, input_signature=spec,
                         target_spec=target, **options)
        except Exception as e:  # noqa: BLE001 - the converter raises ConverterError, ValueError, RuntimeError
            first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            raise ExportError(f"TFLite conversion failed ({type(e).__name__}: {first}).") from None
        return path.read_bytes()


def float16_options() -> dict:
    import tensorflow as tf

    return {"optimizations": [tf.lite.Optimize.DEFAULT], "target_spec": {"supported_types": [tf.float16]}}


def dynamic_range_options() -> dict:
    import tensorflow as tf

    return {"optimizations": [tf.lite.Optimize.DEFAULT]}


def full_integer_options(calibration: np.ndarray) -> dict:
    """Full-integer quantization with uint8 input and output, calibrated on ``calibration`` images.

    The input's quantization comes from the range the calibration images cover; one pixel of
    the first image is set to 0 and one to 255 so that the range is exactly 0-255, giving the
    input scale 1 and zero point 0: camera pixels then go in unchanged, as MediaPipe and
    Android apps feed them (a calibration set whose darkest pixel were 3 would otherwise
    make every phone-side input slightly wrong).
    """
    import tensorflow as tf

    if len(calibration) == 0:
        raise ExportError("Full-integer quantization needs calibration images; the training split gave none.")
    images = np.asarray(calibration, np.float32).copy()
    images[0, 0, 0, :], images[0, -1, -1, :] = 0.0, 255.0

    def representative():
        for image in images:
            yield [image[None]]

    return {
        "optimizations": [tf.lite.Optimize.DEFAULT],
        "representative_dataset": representative,
        "target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]},
        "inference_input_type": tf.uint8,
        "inference_output_type": tf.uint8,
    }


def for_tflite(model, *, integer: bool = False):
    """``model`` as kclassify converts it to TFLite: its input normalization folded into its first
    convolution (:func:`fold_input_normalization`) and, for a full-integer file, its hard-swish
    rewritten (:func:`integer_friendly`). The same object when neither applies."""
    model = fold_input_normalization(model)
    return integer_friendly(model) if integer else model


def fold_input_normalization(model):
    """A copy of ``model`` whose input preprocessing is folded into its first convolution, with the same outputs.

    The preprocessing inside a classifier (``Rescaling`` and/or ``Normalization``: ``a * pixel + b``, one
    ``a`` and ``b`` per channel) runs over every input pixel before the first convolution. In a
    full-integer file each of its layers is an elementwise op over the whole image: measured at 224 px,
    1 thread, MobileNetV4 Conv-Small's ImageNet mean/std took 1.26 ms of its int8 file's 2.62
    (docs/benchmarks.md, "Where MobileNetV4 Conv-Small's int8 time goes"). Folded, the copy adds
    ``b / a`` (one op, ``a * pixel + b = a * (pixel + b / a)``) and the convolution's kernel is multiplied by
    ``a`` along its input channels. The addition stays because a convolution pads with zero: zero after
    it is what zero was after the normalization, so the padded border keeps its value and the copy
    computes what ``model`` computes (to float rounding) for every input.

    Folds only a chain of ``Rescaling`` / ``Normalization`` layers, each used once, that feeds (through
    ``ZeroPadding2D`` layers only, inside a nested backbone model or not) one ``Conv2D``. Other models
    come back unchanged (the same object).
    """
    import keras

    plan = _fold_plan(model)
    if plan is None:
        return model
    chain, conv, scale, shift = plan
    first, rest = id(chain[0]), {id(x) for x in chain[1:]}
    made = {}  # id(original layer) -> its clone

    def clone(layer):
        if isinstance(layer, keras.Model):
            new = keras.models.clone_model(layer, clone_function=clone)
        elif id(layer) == first:
            new = _channel_shift_class()(shift, name=layer.name, dtype=layer.dtype_policy)
        elif id(layer) in rest:
            new = keras.layers.Identity(name=layer.name, dtype=layer.dtype_policy)
        else:
            new = layer.__class__.from_config(layer.get_config())
        made[id(layer)] = new
        return new

    copy = keras.models.clone_model(model, clone_function=clone)
    for old in all_layers(model):  # the replaced preprocessing layers' weights (an adapted mean) go nowhere
        new = made.get(id(old))
        if new is None or type(new) is not type(old) or isinstance(old, keras.Model) or not old.weights:
            continue
        weights = old.get_weights()
        if old is conv:
            weights[0] = weights[0] * scale[None, None, :, None].astype(weights[0].dtype)
        new.set_weights(weights)
        if hasattr(new, "finalize_state"):
            new.finalize_state()
    return copy


def _fold_plan(model):
    """(the preprocessing layers, the convolution they feed, per-channel ``a``, ``b / a``), or None."""
    import keras
    from keras import layers

    affine = (layers.Rescaling, layers.Normalization)
    layer = next((x for x in model.layers if isinstance(x, affine)), None)
    graph = _graph(model)
    if layer is None or graph is None:
        return None
    consumers, _, calls, outputs = graph
    chain, model_now = [], model
    while True:
        if calls.get(layer.name, 1) != 1:
            return None  # a shared layer: the fold would change its other calls too
        if isinstance(layer, affine):
            if model_now is not model or (chain and chain[-1] is not previous):
                return None  # preprocessing inside the backbone, or after a padding: not a leading chain
            chain.append(layer)
        elif isinstance(layer, keras.Model) and model_now is model:
            graph = _graph(layer)
            if graph is None or len(graph[1]) != 1:
                return None
            consumers, (name,), calls, outputs = graph
            model_now, layer = layer, layer.get_layer(name)
        elif type(layer) is layers.Conv2D:
            break
        elif not isinstance(layer, (layers.ZeroPadding2D, layers.InputLayer)):
            return None
        following = consumers.get(layer.name, [])
        if len(following) != 1 or layer.name in outputs:
            return None
        previous, layer = layer, model_now.get_layer(following[0])
    if layer.groups != 1 or layer.data_format != "channels_last":
        return None
    coefficients = _affine(chain, layer.get_weights()[0].shape[2])
    if coefficients is None:
        return None
    a, b = coefficients
    return chain, layer, a.astype(np.float32), (b / a).astype(np.float32)


def _affine(chain, channels: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``a`` and ``b`` (one per channel) of the ``a * x + b`` that a chain of ``Rescaling`` and
    ``Normalization`` layers computes, checked on a probe image; None if it is not that."""
    import keras
    from keras import layers

    a, b = np.ones(channels), np.zeros(channels)
    for step in chain:
        if isinstance(step, layers.Rescaling):
            scale, offset = np.asarray(step.scale, np.float64), np.asarray(step.offset, np.float64)
            a, b = a * scale, b * scale + offset
        else:
            axis = tuple(step.axis) if isinstance(step.axis, (list, tuple)) else (step.axis,)
            if step.invert or axis not in ((-1,), (3,)):
                return None
            mean = np.asarray(keras.ops.convert_to_numpy(step.mean), np.float64).reshape(-1)
            std = np.maximum(np.sqrt(np.asarray(keras.ops.convert_to_numpy(step.variance), np.float64)),
                             keras.backend.epsilon()).reshape(-1)
            a, b = a / std, (b - mean) / std
    try:
        a, b = np.broadcast_to(a, (channels,)), np.broadcast_to(b, (channels,))
    except ValueError:
        return None
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b)) and np.all(a != 0)):
        return None
    probe = np.linspace(0.0, 255.0, 4 * channels, dtype=np.float32).reshape(1, 2, 2, channels)
    out = probe
    for step in chain:  # what was read from the layers is what they compute
        out = keras.ops.convert_to_numpy(step(out))
    return (a, b) if out.shape == probe.shape and np.allclose(out, a * probe + b, rtol=1e-4, atol=1e-4) else None


def _graph(model):
    """A functional model's consumers (:func:`_consumers`), input layer names, how many times each layer is
    called, and the names of its output layers; None for other models."""
    import keras

    try:
        config = model.get_config()
        inputs = config["input_layers"]
        if inputs and isinstance(inputs[0], str):  # one input: [name, node, tensor]
            inputs = [inputs]
        names = [i[0] for i in inputs]
        calls = {layer["config"]["name"]: len(layer.get("inbound_nodes") or [None]) for layer in config["layers"]}
        outputs = {x for x in keras.tree.flatten(config["output_layers"]) if isinstance(x, str)}
        return _consumers(config), names, calls, outputs
    except (NotImplementedError, KeyError, TypeError, AttributeError, IndexError):
        return None


def _consumers(config: dict) -> dict[str, list[str]]:
    """Layer name -> the names of the layers that take its output, in a functional model's ``get_config()``."""
    found: dict[str, list[str]] = {}
    for layer in config["layers"]:
        for history in _histories(layer.get("inbound_nodes", [])):
            found.setdefault(history[0], []).append(layer["config"]["name"])
    return found


def _histories(node):
    if isinstance(node, dict):
        if "keras_history" in node:
            yield node["keras_history"]
        for value in node.values():
            yield from _histories(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from _histories(value)


@functools.cache
def _channel_shift_class():
    import keras

    class ChannelShift(keras.layers.Layer):
        """``x + shift``, one constant per channel: a folded preprocessing's ``b / a``."""

        def __init__(self, shift, **kwargs):
            super().__init__(**kwargs)
            self.shift = np.asarray(shift, np.float32)
            if self.shift.size and np.all(self.shift == self.shift.flat[0]):  # one value: a scalar
                self.shift = np.asarray(self.shift.flat[0], np.float32)

        def call(self, x):
            return x + self.shift

        def get_config(self):
            return {**super().get_config(), "shift": self.shift.tolist()}

    return ChannelShift


def integer_friendly(model):
    """A copy of ``model`` whose hard-swish activations quantize into ops XNNPACK runs in int8.

    TFLite's converter fuses hard-swish into one HARD_SWISH op, which XNNPACK (LiteRT's CPU
    fast path) runs only in float: in an int8 file each one falls back to LiteRT's own
    kernel and splits the graph. Measured here on MobileNetV3Small at 96 px, 1 thread: every
    HARD_SWISH op left XNNPACK, the graph ran in many partitions, and the int8 file ran several
    times slower than float32 (docs/benchmarks.md, "Export formats"). Written as
    ``relu6(x + 3) * (x / 6)`` (same values) the converter emits ADD (with the ReLU6 fused), MUL,
    MUL, all delegated in int8.
    Other models come back unchanged (the same object).
    """
    import keras

    if not any(_is_hard_swish(layer) for layer in all_layers(model)):
        return model

    def clone(layer):
        if isinstance(layer, keras.Model):
            return keras.models.clone_model(layer, clone_function=clone)
        if _is_hard_swish(layer):
            return _hard_swish_class()(name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def _is_hard_swish(layer) -> bool:
    import keras

    return isinstance(layer, keras.layers.Activation) and layer.get_config().get("activation") in (
        "hard_swish", "hard_silu")


@functools.cache
def _hard_swish_class():
    import keras
    from keras import ops

    class HardSwish(keras.layers.Layer):
        """hard_swish(x) = x * relu6(x + 3) / 6, in an order TFLite does not fuse into HARD_SWISH."""

        def call(self, x):
            return ops.relu6(x + 3.0) * (x * (1.0 / 6.0))

    return HardSwish


def float_ops(model_bytes: bytes) -> list[str]:
    """Operators of a TFLite model that compute in float: ``"CONV_2D(name)"`` for each.

    A full-integer file must have none but the boundary (de)quantize ops; TFLite's converter
    can silently leave float kernels inside an "int8" file (tensorflow#57619), which then
    runs slower and differs from what was measured as int8.
    """
    from tensorflow.lite.python import schema_py_generated as schema_fb

    model = schema_fb.Model.GetRootAs(model_bytes, 0)
    names = _builtin_names(schema_fb)
    found = []
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        for o in range(graph.OperatorsLength()):
            op = graph.Operators(o)
            code = model.OperatorCodes(op.OpcodeIndex())
            name = names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")
            if name in BOUNDARY_OPS:
                continue
            tensors = [op.Inputs(i) for i in range(op.InputsLength())] + [op.Outputs(i) for i in range(op.OutputsLength())]
            floats = [graph.Tensors(t) for t in tensors if t >= 0
                      and graph.Tensors(t).Type() in (schema_fb.TensorType.FLOAT32, schema_fb.TensorType.FLOAT16)]
            if floats:
                found.append(f"{name}({floats[0].Name().decode()})")
    return found


def io_types(model_bytes: bytes) -> tuple[list[str], list[str]]:
    """Type names of a TFLite model's input and output tensors, e.g. (['UINT8'], ['UINT8'])."""
    from tensorflow.lite.python import schema_py_generated as schema_fb

    graph = schema_fb.Model.GetRootAs(model_bytes, 0).Subgraphs(0)
    names = {v: k for k, v in vars(schema_fb.TensorType).items() if not k.startswith("_")}
    return ([names[graph.Tensors(graph.Inputs(i)).Type()] for i in range(graph.InputsLength())],
            [names[graph.Tensors(graph.Outputs(i)).Type()] for i in range(graph.OutputsLength())])


def check_integer(model_bytes: bytes, filename: str) -> None:
    """Raise :class:`ExportError` unless a full-integer file is uint8 in, uint8 out and integer inside."""
    ops = float_ops(model_bytes)
    if ops:
        shown = ", ".join(ops[:5]) + (f" and {len(ops) - 5} more" if len(ops) > 5 else "")
        raise ExportError(
            f"{filename} is not fully integer: {len(ops)} operator(s) still compute in float ({shown}). "
            "TFLite's converter left float kernels in the file (tensorflow#57619); it would run slower "
            "than measured and not on integer-only accelerators. Ship tflite-dynamic or tflite instead."
        )
    inputs, outputs = io_types(model_bytes)
    if inputs != ["UINT8"] or outputs != ["UINT8"]:
        raise ExportError(
            f"{filename} takes {inputs} and returns {outputs}; a full-integer file must take and return UINT8 "
            "(phones feed camera bytes; MediaPipe refuses other integer inputs)."
        )


def _builtin_names(schema_fb) -> dict[int, str]:
    return {v: k for k, v in vars(schema_fb.BuiltinOperator).items() if not k.startswith("_")}

