"""What a built model costs to run: parameters and single-image latency on this machine.

Latency is measured the way the model will run on a phone: its input preprocessing folded into its
first convolution as ``kclassify export`` does (:mod:`kclassify.models.fold`), converted with Keras' own
LiteRT export (``model.export(..., format="litert")``) and timed through the LiteRT
interpreter (``ai_edge_litert``, XNNPACK on CPU) at batch 1. Where LiteRT is not installed
(e.g. Windows) or the conversion fails, the TensorFlow model itself is timed instead and
the result says so (``backend="tensorflow"``): compare latencies of the same backend only.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Latency:
    """Median milliseconds of one single-image inference, and how it was measured."""

    ms: float
    backend: str  # "litert" or "tensorflow"
    threads: int
    runs: int


def parameter_count(model) -> int:
    """All parameters of a built model (trainable or not): what its file and memory hold."""
    return int(model.count_params())


def _litert_runner(model, folder: Path, threads: int):
    from ai_edge_litert.interpreter import Interpreter

    from .fold import fold_input_normalization

    path = folder / "model.tflite"
    # converted as kclassify export converts it
    fold_input_normalization(model).export(str(path), format="litert", verbose=False)
    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    image = np.random.default_rng(0).uniform(0, 255, size=inp["shape"]).astype(inp["dtype"])

    def run():
        interpreter.set_tensor(inp["index"], image)
        interpreter.invoke()

    return run


def _tensorflow_runner(model):
    import tensorflow as tf

    shape = [1, *model.input_shape[1:]]
    image = tf.random.uniform(shape, 0, 255, seed=0)
    call = tf.function(lambda x: model(x, training=False))

    def run():
        call(image).numpy()

    return run


def measure_latency(model, *, threads: int = 1, runs: int = 30, warmup: int = 3) -> Latency:
    """Median single-image latency of ``model`` through LiteRT (TensorFlow if LiteRT fails).

    The model's weights do not matter, only its architecture and input size, so an
    untrained model gives the latency of the trained one.

    Example:
        >>> lat = measure_latency(build_classifier("small_cnn", 6, 64, weights="none"))
        >>> lat.backend, lat.ms < 50
        ('litert', True)
    """
    with tempfile.TemporaryDirectory(prefix="kclassify-latency-") as tmp:
        try:
            run, backend = _litert_runner(model, Path(tmp), threads), "litert"
        except Exception as e:  # noqa: BLE001 - any failure falls back to TensorFlow, and says so
            log.warning("LiteRT latency unavailable (%s: %s); timing the TensorFlow model instead",
                        type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            run, backend = _tensorflow_runner(model), "tensorflow"
        for _ in range(warmup):
            run()
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
    return Latency(ms=round(statistics.median(times) * 1000, 3), backend=backend, threads=threads, runs=runs)
