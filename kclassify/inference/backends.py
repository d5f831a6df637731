"""The three model runtimes behind :class:`~kclassify.inference.predictor.Predictor`: Keras, SavedModel, LiteRT."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from ..errors import ModelLoadError
from ..upstream import interpreter_nodes
from .predictor import Predictor, check_output

log = logging.getLogger(__name__)

# The exported SavedModel's contract (written by kclassify.export.savedmodel).
BYTES_SIGNATURE = "serving_default"  # encoded image bytes in; TF Serving's default signature
IMAGES_SIGNATURE = "serving_images"  # uint8 images of any size in
SAVEDMODEL_INFO = Path("assets.extra") / "kclassify.json"  # labels, input size


class KerasPredictor(Predictor):
    """A Keras model in memory (fit's own) or loaded from a ``.keras`` file with safe mode on."""

    kind = "keras"

    def __init__(self, model, labels: list[str], path: Path | None = None):
        import tensorflow as tf

        shape = tuple(model.input_shape)
        if len(shape) != 4 or shape[-1] != 3 or shape[1] is None or shape[1] != shape[2]:
            raise ModelLoadError(
                f"{path or model.name} takes input {shape}: expected square RGB images (None, S, S, 3), "
                "as models from kclassify fit take."
            )
        check_output(path or Path(model.name), int(model.output_shape[-1]), labels)
        super().__init__(path, labels, int(shape[1]), "float32")
        self.model = model
        spec = tf.TensorSpec((None, *shape[1:]), tf.float32)

        def call(x):  # a def, not a lambda: AutoGraph reads the source, and warns when it cannot
            return model(x, training=False)

        self._call = tf.function(call, input_signature=[spec], autograph=False)

    def _model_call(self, images: np.ndarray) -> np.ndarray:
        return self._call(images.astype(np.float32)).numpy()


def load_keras_model(path: Path):
    """A ``.keras`` file loaded with safe mode on (a file must not run code on load: Lambda layers are refused)."""
    import keras

    try:
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as e:  # noqa: BLE001 - Keras raises ValueError, zipfile and OSError alike
        raise ModelLoadError(
            f"{path} is not a Keras model kclassify can load ({type(e).__name__}: "
            f"{_first_line(e)}). Expected a .keras file saved by kclassify fit or model.save()."
        ) from None


class SavedModelPredictor(Predictor):
    """A SavedModel written by ``kclassify export``, run through its uint8 image signature."""

    kind = "savedmodel"

    def __init__(self, path: Path):
        import tensorflow as tf

        info = _read_info(path)
        try:
            self.loaded = tf.saved_model.load(str(path))
        except Exception as e:  # noqa: BLE001 - corrupt protobufs, missing variables
            raise ModelLoadError(f"{path} is not a loadable SavedModel ({type(e).__name__}: {_first_line(e)}).") from None
        signatures = dict(self.loaded.signatures)
        if IMAGES_SIGNATURE not in signatures:
            raise ModelLoadError(
                f"{path} has signatures {sorted(signatures)}; expected {IMAGES_SIGNATURE!r} and "
                f"{BYTES_SIGNATURE!r}, as `kclassify export` writes. Export the run folder with kclassify export."
            )
        self.signatures = signatures
        self._images = signatures[IMAGES_SIGNATURE]
        width = self._images.structured_outputs["probabilities"].shape[-1]
        if width is not None:
            check_output(path, int(width), info["labels"])
        super().__init__(path, info["labels"], info["image_size"], "uint8")

    def _model_call(self, images: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        return self._images(images=tf.constant(images, tf.uint8))["probabilities"].numpy()


def _read_info(path: Path) -> dict:
    file = path / SAVEDMODEL_INFO
    if not file.is_file():
        raise ModelLoadError(
            f"{path} is a SavedModel without {SAVEDMODEL_INFO} (labels and input size): expected a "
            "SavedModel written by `kclassify export`."
        )
    try:
        info = json.loads(file.read_text(encoding="utf-8"))
        return {"labels": [str(x) for x in info["labels"]], "image_size": int(info["image_size"])}
    except (ValueError, KeyError, TypeError) as e:
        raise ModelLoadError(f"{file} is corrupt ({type(e).__name__}: {e}); export the run again.") from None


class TFLitePredictor(Predictor):
    """A ``.tflite`` file run by the LiteRT interpreter (XNNPACK on CPU), one image per call, as on a phone.

    Pixels are normalized as the file's metadata says (``normalization``: per-channel mean and
    std; none for kclassify's files, whose models normalize inside), then quantized with the
    input tensor's own scale and zero point; quantized outputs are dequantized the same way.
    """

    kind = "tflite"

    def __init__(self, path: Path, labels: list[str], threads: int | None = None,
                 normalization: tuple[list[float], list[float]] | None = None):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise ModelLoadError(
                "Running .tflite files needs the LiteRT runtime: pip install ai-edge-litert."
            ) from None
        try:
            self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
            self.interpreter.allocate_tensors()
        except Exception as e:  # noqa: BLE001 - LiteRT raises ValueError/RuntimeError for bad files
            raise ModelLoadError(
                f"{path} is not a TFLite model LiteRT can run ({type(e).__name__}: {_first_line(e)})."
            ) from None
        inputs, outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelLoadError(f"{path} has {len(inputs)} inputs and {len(outputs)} outputs; expected one image "
                                 "in and one probability vector out.")
        self._in, self._out = inputs[0], outputs[0]
        shape = tuple(int(s) for s in self._in["shape"])
        signature = tuple(int(s) for s in self._in.get("shape_signature", self._in["shape"]))
        if len(shape) != 4 or shape[-1] != 3 or shape[1] != shape[2] or min(signature[1:], default=0) < 1:
            raise ModelLoadError(f"{path} takes input {signature}: expected square RGB images of a fixed size "
                                 "(1, S, S, 3).")
        check_output(path, int(self._out["shape"][-1]), labels)
        if shape[0] != 1:
            self.interpreter.resize_tensor_input(self._in["index"], [1, *shape[1:]])
            self.interpreter.allocate_tensors()
        self.threads = threads
        self.normalization = normalization
        super().__init__(path, labels, shape[1], np.dtype(self._in["dtype"]).name)

    def ops_outside_delegate(self) -> dict[str, int]:
        """Operators LiteRT runs with its own kernels instead of the XNNPACK delegate, by op name.

        A delegate node stands for one partition of the graph; a node of the model lies outside
        every partition when no delegate produces its outputs and they are consumed by a
        delegate, the model's output, or another such node. Empty: the whole graph is on the
        fast path. (LiteRT's Python API exposes nodes, not the execution plan.)
        """
        it = interpreter_nodes(self.interpreter)
        nodes = range(it.NumNodes())
        delegates = [n for n in nodes if it.NodeName(n) == "DELEGATE"]
        made = {t for n in delegates for t in it.NodeOutputs(n)}
        wanted = {t for n in delegates for t in it.NodeInputs(n)} | set(it.OutputIndices())
        candidates = [n for n in nodes if n not in delegates and not set(it.NodeOutputs(n)) & made]
        outside: set[int] = set()
        changed = True
        while changed:  # back from the partitions' inputs and the model's outputs, through undelegated chains
            changed = False
            for n in candidates:
                if n not in outside and set(it.NodeOutputs(n)) & wanted:
                    outside.add(n)
                    wanted |= set(it.NodeInputs(n))
                    changed = True
        counts: dict[str, int] = {}
        for n in sorted(outside):
            counts[it.NodeName(n)] = counts.get(it.NodeName(n), 0) + 1
        return counts

    def _model_call(self, images: np.ndarray) -> np.ndarray:
        out = []
        for image in images:
            self.interpreter.set_tensor(self._in["index"], _quantize(image[None], self._in, self.normalization))
            self.interpreter.invoke()
            out.append(_dequantize(self.interpreter.get_tensor(self._out["index"])[0], self._out))
        return np.stack(out)


def _quantize(x: np.ndarray, detail: dict, normalization=None) -> np.ndarray:
    """uint8 pixels to what the input tensor holds: normalized (metadata), then quantized (tensor)."""
    dtype = np.dtype(detail["dtype"])
    scale, zero = detail["quantization"]
    if normalization is None and dtype == np.uint8 and scale in (0.0, 1.0) and zero == 0:
        return x  # kclassify's int8 files take camera pixels as they are
    real = x.astype(np.float32)
    if normalization is not None:
        mean, std = (np.asarray(v, np.float32) for v in normalization)
        real = (real - mean) / std
    if dtype == np.float32:
        return real
    if scale == 0.0:  # an integer input without quantization parameters takes the values as they are
        return real.astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.round(real / scale + zero), info.min, info.max).astype(dtype)


def _dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero = detail["quantization"]
    if np.issubdtype(y.dtype, np.integer) and scale:
        return (y.astype(np.float32) - zero) * scale
    return y.astype(np.float32)


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else ""
