"""TFLite conversion variants (float32, float16, dynamic range, full integer) and the integer-kernel check."""

from __future__ import annotations

import functools
import logging
import tempfile
from pathlib import Path

import numpy as np

from ..errors import ExportError
from ..models.build import all_layers, clone_replacing
from ..models.fold import fold_input_normalization

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
    convolution (:func:`kclassify.models.fold.fold_input_normalization`) and, for a full-integer file,
    its hard-swish rewritten (:func:`integer_friendly`). The same object when neither applies."""
    model = fold_input_normalization(model)
    return integer_friendly(model) if integer else model


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
    if not any(_is_hard_swish(layer) for layer in all_layers(model)):
        return model

    copy, _ = clone_replacing(model, lambda layer: _hard_swish_class()(name=layer.name) if _is_hard_swish(layer)
                              else None)
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

