"""TensorFlow Serving's REST ``:predict`` protocol, answered in-process from SavedModel signatures.

TensorFlow Serving itself (a C++ server) cannot be installed everywhere kclassify runs, so
this module implements the JSON mapping its REST API documents
(https://www.tensorflow.org/tfx/serving/api_rest): the row format (``instances``), the
columnar format (``inputs``), ``{"b64": ...}`` for binary strings, ``signature_name``,
``{"predictions": ...}`` / ``{"outputs": ...}`` responses and ``{"error": ...}`` on failure.
Tests check exported SavedModels against it, and ``kclassify serve`` uses it for its
TF-Serving-compatible endpoint, so a client written for TF Serving works unchanged.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Mapping

import numpy as np

DEFAULT_SIGNATURE = "serving_default"


class RestError(Exception):
    """A request TF Serving would refuse; ``status`` is the HTTP status it would answer."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def rest_predict(signatures: Mapping[str, Any], body: Any) -> tuple[int, dict]:
    """Answer one ``POST /v1/models/NAME:predict`` body; returns (HTTP status, JSON document).

    Args:
        signatures: a loaded SavedModel's ``signatures`` (name -> concrete function).
        body: the parsed JSON request.

    Example:
        >>> loaded = tf.saved_model.load("saved_models/run/export/savedmodel/1")
        >>> rest_predict(loaded.signatures, {"instances": [{"b64": base64_jpeg}]})
        (200, {'predictions': [{'label': 'cat', 'score': 0.97, 'probabilities': [...]}]})
    """
    try:
        return 200, _predict(signatures, body)
    except RestError as e:
        return e.status, {"error": str(e)}


def _predict(signatures: Mapping[str, Any], body: Any) -> dict:
    if not isinstance(body, Mapping):
        raise RestError("JSON Value: expected a JSON object with 'instances' or 'inputs'")
    name = body.get("signature_name", DEFAULT_SIGNATURE)
    if not isinstance(name, str):
        raise RestError(f"'signature_name' must be a string; received {_short(name)}")
    if name not in signatures:
        raise RestError(f"Serving signature name: \"{name}\" not found in signature def. "
                        f"Available: {', '.join(sorted(signatures))}")
    fn = signatures[name]
    specs = fn.structured_input_signature[1]
    has_rows, has_cols = "instances" in body, "inputs" in body
    if has_rows == has_cols:
        raise RestError("Missing 'inputs' or 'instances' key" if not has_rows
                        else "Only one of 'instances' or 'inputs' may be set")
    tensors = _rows(body["instances"], specs) if has_rows else _columns(body["inputs"], specs)
    try:
        outputs = fn(**tensors)
    except Exception as e:  # noqa: BLE001 - TensorFlow's InvalidArgumentError and friends
        raise RestError(_tf_message(e)) from None
    outputs = {k: _json_value(k, v.numpy()) for k, v in outputs.items()}
    if has_rows:
        if len(outputs) == 1:
            return {"predictions": next(iter(outputs.values()))}
        n = len(next(iter(outputs.values())))
        return {"predictions": [{k: v[i] for k, v in outputs.items()} for i in range(n)]}
    return {"outputs": next(iter(outputs.values())) if len(outputs) == 1 else outputs}


def _rows(instances: Any, specs: Mapping[str, Any]) -> dict:
    if not isinstance(instances, list) or not instances:
        raise RestError("'instances' must be a non-empty JSON list")
    names = list(specs)
    if len(names) == 1 and not all(_is_named(x, names) for x in instances):
        return {names[0]: _tensor([_decode(x) for x in instances], specs[names[0]])}
    columns: dict[str, list] = {n: [] for n in names}
    for row in instances:
        if not _is_named(row, names):
            raise RestError(f"Expected every instance to be an object with keys {names}; received {_short(row)}")
        for n in names:
            columns[n].append(_decode(row[n]))
    return {n: _tensor(v, specs[n]) for n, v in columns.items()}


def _columns(inputs: Any, specs: Mapping[str, Any]) -> dict:
    names = list(specs)
    if isinstance(inputs, Mapping) and not _is_b64(inputs):
        missing = [n for n in names if n not in inputs]
        if missing:
            raise RestError(f"Missing input(s) {missing} in 'inputs'")
        return {n: _tensor(_decode(inputs[n]), specs[n]) for n in names}
    if len(names) != 1:
        raise RestError(f"The signature takes {len(names)} inputs {names}: pass 'inputs' as an object")
    return {names[0]: _tensor(_decode(inputs), specs[names[0]])}


def _is_b64(value: Any) -> bool:
    return isinstance(value, Mapping) and set(value) == {"b64"}


def _is_named(value: Any, names: list[str]) -> bool:
    return isinstance(value, Mapping) and not _is_b64(value) and set(names) <= set(value)


def _decode(value: Any) -> Any:
    """JSON to Python values: ``{"b64": ...}`` objects become bytes, lists recurse."""
    if _is_b64(value):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise RestError("Unable to base64 decode") from None
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, Mapping):
        raise RestError(f"Unexpected object {_short(value)}: only {{\"b64\": ...}} objects are values")
    return value


def _tensor(values: Any, spec) -> Any:
    import tensorflow as tf

    try:
        if spec.dtype == tf.string:
            return tf.constant(values, tf.string)
        array = np.asarray(values)
        if array.dtype == object:
            raise ValueError("instances of different shapes")
        if spec.dtype.is_integer:
            if not np.issubdtype(array.dtype, np.integer):
                raise ValueError(f"expected integers for {spec.dtype.name}")
            info = np.iinfo(spec.dtype.as_numpy_dtype)
            if array.size and (array.min() < info.min or array.max() > info.max):
                raise ValueError(f"values outside [{info.min}, {info.max}] for {spec.dtype.name}")
        tensor = tf.constant(array, spec.dtype)
    except (ValueError, TypeError) as e:
        raise RestError(f"Input {spec.name or ''} of type {spec.dtype.name}: {e}") from None
    if not spec.shape.is_compatible_with(tensor.shape):
        raise RestError(f"Input {spec.name or ''} expects shape {spec.shape}; received {tensor.shape}")
    return tensor


def _json_value(name: str, array: np.ndarray) -> Any:
    """A tensor as TF Serving's JSON mapping writes it (strings as text, ``*_bytes`` as b64)."""
    if array.dtype.kind in ("S", "O"):
        if name.endswith("_bytes"):
            return _nested(array, lambda b: {"b64": base64.b64encode(b).decode("ascii")})
        return _nested(array, lambda b: b.decode("utf-8", errors="replace") if isinstance(b, bytes) else str(b))
    return array.tolist()


def _nested(array: np.ndarray, convert) -> Any:
    if not isinstance(array, np.ndarray):
        return convert(array)
    if array.ndim == 0:
        return convert(array.item())
    return [_nested(a, convert) for a in array]


def _tf_message(e: Exception) -> str:
    """The line of a TensorFlow error that says what was wrong (not "Graph execution error:")."""
    noise = ("Graph execution error", "Detected at node", "<stack traces", "[[", "File ", "Traceback")
    for line in str(getattr(e, "message", e)).splitlines():
        line = line.strip()
        if line and not line.startswith(noise):
            return line
    return type(e).__name__


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
