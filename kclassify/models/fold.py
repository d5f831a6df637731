"""Folding a classifier's input preprocessing into its first convolution, for the files it is converted to.

Inside every kclassify model the preprocessing (``Rescaling`` and/or ``Normalization`` layers) runs over
every input pixel before the first convolution; in a converted file (TFLite, and most of all full-int8)
each of its layers is an elementwise op over the whole image. :func:`fold_input_normalization` returns a
copy computing the same with one op fewer per layer; ``kclassify export`` converts that copy, and
:func:`kclassify.models.profile.measure_latency` times it, so a search's latency limit sees what ships.
"""

from __future__ import annotations

import functools

import numpy as np

from .build import clone_replacing


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

    def replace(layer):  # the chain's weights (an adapted mean) go nowhere
        if id(layer) == first:
            return _channel_shift_class()(shift, name=layer.name, dtype=layer.dtype_policy)
        if id(layer) in rest:
            return keras.layers.Identity(name=layer.name, dtype=layer.dtype_policy)
        return None

    copy, made = clone_replacing(model, replace)
    kernel, *bias = conv.get_weights()
    made[id(conv)].set_weights([kernel * scale[None, None, :, None].astype(kernel.dtype), *bias])
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
