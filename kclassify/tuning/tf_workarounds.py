"""A TensorFlow memory leak across trials, and its release."""

from __future__ import annotations

import contextlib

from ..textfiles import write_atomic
from ..upstream import gradient_registry, tuner_json_module


@contextlib.contextmanager
def released_custom_gradients():
    """Forget, once a trial is over, the custom gradients TensorFlow registered while it trained.

    Keras' TensorFlow optimizer sums gradients through ``ReplicaContext.all_reduce``, a
    ``tf.custom_gradient``; traced in graph mode, each registers ``CustomGradient-N`` in
    TensorFlow's process-wide gradient registry, which is never emptied and keeps the whole
    traced training step alive. ``keras.backend.clear_session()`` and ``gc.collect()`` (which
    KerasTuner runs before each build) do not reach it (tensorflow#61791, tf-keras#286).
    Measured here: the resident size grows with every small_cnn trial without this, stays flat with
    it (docs/benchmarks.md, "tune's time, draws, memory and latency").
    """
    registry = gradient_registry()
    if registry is None:  # TensorFlow changed its internals: nothing to release
        yield
        return
    before = set(registry)
    try:
        yield
    finally:
        for name in set(registry) - before:
            if name.startswith("CustomGradient-"):
                registry.pop(name, None)


def atomic_tuner_state() -> None:
    """Make KerasTuner write its state files (oracle.json, tuner0.json, trial.json) atomically.

    KerasTuner writes each JSON in place; a kill -9 during the write leaves an empty file, and the
    rerun meant to resume dies in ``json.loads`` (seen in CI: tuner0.json of 0 bytes after a kill
    mid-trial). Every such write goes through ``keras_tuner.src.utils.save_json``, so that one
    function is replaced, for local paths, by write-to-temporary then ``os.replace``.
    """
    import json

    utils = tuner_json_module()
    if utils is None:  # another KerasTuner layout: leave it as it is
        return
    if getattr(utils.save_json, "kclassify_atomic", False):
        return
    original = utils.save_json

    def save_json(path, obj):
        path = str(path)
        if "://" in path:  # gs://, s3://: tf.io's own writers
            return original(path, obj)
        text = json.dumps(obj)
        write_atomic(path, text)
        return text

    save_json.kclassify_atomic = True
    utils.save_json = save_json
