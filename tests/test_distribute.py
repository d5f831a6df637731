"""Distribution: MirroredStrategy over 2 logical CPU devices; mixed precision."""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import write_class_folder

MIRRORED = """
import json, sys, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from kclassify import fit
r = fit(data=sys.argv[1], output=sys.argv[2], strategy="mirrored", epochs=3, image_size=16, batch_size=8,
        lr=3e-3, augment=0.0, verbose=0)
from kclassify.training.strategy import select_strategy
print(json.dumps({"replicas": select_strategy("mirrored").num_replicas_in_sync, "metrics": r.metrics}))
"""


@pytest.mark.slow
def test_mirrored_on_two_logical_cpus(tmp_path):
    data = write_class_folder(tmp_path / "data", per_class=20)
    out = subprocess.run([sys.executable, "-c", MIRRORED, str(data), str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2 and result["metrics"]["test"]["accuracy"] >= 0.8  # chance: 1/3
    assert (tmp_path / "run" / "model.keras").is_file()


@pytest.mark.slow
def test_mixed_precision_trains_in_bfloat16_and_saves_a_float32_model(image_folder, tmp_path):
    import keras

    from kclassify import fit
    from kclassify.inference import load_predictor

    seen = []

    class Policy(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen.append(self.model.get_layer("small_cnn").get_layer("stem_conv").dtype_policy.compute_dtype)

    import tensorflow as tf

    half = "float16" if tf.config.list_logical_devices("GPU") else "bfloat16"
    result = fit(data=str(image_folder), output=tmp_path / "run", mixed_precision=True, epochs=1,
                 image_size=16, batch_size=8, verbose=0, callbacks=[Policy()])
    assert seen == [half]  # trained in bfloat16 on a CPU ...
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after the fit
    assert json.loads((tmp_path / "run" / "run.json").read_text())["precision"] == f"mixed_{half}"
    model = keras.models.load_model(tmp_path / "run" / "model.keras")
    # ... and saved computing in float32, with the trained weights: the saved model's test scores are fit's
    assert {layer.dtype_policy.compute_dtype for layer in _layers(model)} == {"float32"}
    rows = [r.split(",") for r in (tmp_path / "run" / "split.csv").read_text().splitlines()[1:]]
    test = [(image_folder / path, label) for path, label, split in rows if split == "test"]
    predictor = load_predictor(tmp_path / "run")
    predicted = predictor.predict_files([p for p, _ in test])
    accuracy = np.mean([predictor.labels[r.probabilities.argmax()] == label for r, (_, label) in zip(predicted, test)])
    assert accuracy == pytest.approx(result.metrics["test"]["accuracy"], abs=1e-9)


def _layers(model):
    for layer in model.layers:
        yield layer
        yield from _layers(layer) if hasattr(layer, "layers") else ()


def test_float32_model_keeps_the_weights_and_nearly_the_outputs():
    import keras

    from kclassify.models.build import adapt_preprocessing, build_classifier, float32_model

    x = np.random.default_rng(0).uniform(100, 160, (8, 32, 32, 3)).astype("float32")
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        mixed = build_classifier("small_cnn", 3, 32)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert adapt_preprocessing(mixed, x)  # the normalisation's mean ~130 lives in variables: copied too
    plain = float32_model(mixed)
    assert {layer.dtype_policy.compute_dtype for layer in _layers(plain)} == {"float32"}
    assert all(np.array_equal(a, b) for a, b in zip(mixed.get_weights(), plain.get_weights()))
    a, b = mixed.predict(x, verbose=0), plain.predict(x, verbose=0)
    assert 0 < np.abs(a - b).max() < 0.02  # bfloat16 keeps ~3 significant digits; float32 differs a little
    assert float32_model(plain) is plain


@pytest.mark.parametrize("backbone", ["mobilenet_v3_small", pytest.param("efficientnet_b0", marks=pytest.mark.slow)])
def test_float32_model_of_a_nested_application_is_that_model_built_in_float32(backbone):
    """keras.applications nest a Functional backbone with its own Rescaling/Normalization: all of it is copied."""
    import keras

    from kclassify.models.build import build_classifier, float32_model

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        mixed = build_classifier(backbone, 3, 32)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    rng = np.random.default_rng(1)
    mixed.set_weights([w + rng.normal(0, 0.01, w.shape).astype(w.dtype) for w in mixed.get_weights()])
    reference = build_classifier(backbone, 3, 32)
    reference.set_weights(mixed.get_weights())
    plain = float32_model(mixed)
    assert {layer.dtype_policy.compute_dtype for layer in _layers(plain)} == {"float32"}
    assert [w.path for w in plain.weights] == [w.path for w in mixed.weights]
    x = rng.uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(plain.predict(x, verbose=0), reference.predict(x, verbose=0), atol=1e-6)


def test_auto_precision_is_resolved_once_and_a_resumed_run_keeps_what_it_started_with(tmp_path):
    from kclassify.config import build_config, to_yaml
    from kclassify.training import recipe

    auto = build_config({"mixed_precision": "auto"})
    assert auto.train.mixed_precision is None  # "auto" names the default
    here = recipe.policy_for(None) != "float32"
    assert recipe.resolve_precision(auto).train.mixed_precision is here
    started = tmp_path / "config.yaml"
    started.write_text(to_yaml(build_config({"mixed_precision": not here})))  # e.g. a run from before auto
    assert recipe.resolve_precision(auto, started).train.mixed_precision is (not here)
    assert recipe.resolve_precision(auto, tmp_path / "missing.yaml").train.mixed_precision is here
    explicit = build_config({"mixed_precision": here})
    assert recipe.resolve_precision(explicit, started).train.mixed_precision is here  # a flag given wins


def test_a_search_resolves_auto_precision_into_its_base_settings(tmp_path):
    from kclassify.config import build_config, to_yaml
    from kclassify.training.recipe import policy_for
    from kclassify.tuning.tune import BASE_SETTINGS, base_settings

    here = policy_for(None) != "float32"
    assert base_settings(tmp_path, build_config({})).train.mixed_precision is here
    (tmp_path / BASE_SETTINGS).write_text(to_yaml(build_config({"mixed_precision": not here})))
    assert base_settings(tmp_path, build_config({})).train.mixed_precision is (not here)  # resumed: as it began


@pytest.mark.parametrize("gpu, amx, setting, policy", [
    (False, True, None, "mixed_bfloat16"),  # auto: a CPU with AMX
    (False, False, None, "float32"),  # auto: bfloat16 would be emulated
    (True, True, None, "float32"),  # auto on a GPU: float16 is opt-in
    (True, False, True, "mixed_float16"),
    (False, False, True, "mixed_bfloat16"),
    (False, True, False, "float32"),
])
def test_mixed_precision_auto_picks_bfloat16_only_on_a_cpu_with_amx(monkeypatch, gpu, amx, setting, policy):
    import tensorflow as tf

    from kclassify.training import recipe

    monkeypatch.setattr(recipe, "cpu_has_amx", lambda: amx)
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind=None: ["gpu:0"] if gpu and kind == "GPU" else [])
    assert recipe.policy_for(setting) == policy
    if policy == "mixed_bfloat16" and setting is None:
        monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")  # bfloat16 without oneDNN: slow kernels
        assert recipe.policy_for(None) == "float32"


def _free_ports(n):
    import socket

    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _workers(data, out, epochs):
    import os

    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    procs = []
    for index in range(2):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
               "TF_CONFIG": json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "kclassify", "fit", "--data", str(data), "--output", str(out),
             "--strategy", "multiworker", "--epochs", str(epochs), "--image-size", "16", "--batch-size", "8",
             "--augment", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    return procs


@pytest.mark.slow
def test_multiworker_resumes_after_both_workers_are_killed(tmp_path):
    """Two workers on loopback train, are killed, resume and finish as one run (the same loss on both)."""
    import csv
    import os
    import re
    import signal
    import time

    data = write_class_folder(tmp_path / "data", per_class=8)
    out = tmp_path / "run"
    procs = _workers(data, out, 12)
    meta = out / "checkpoints" / "backup" / "train" / "training_metadata.json"
    deadline = time.time() + 240
    try:
        while time.time() < deadline and all(p.poll() is None for p in procs):
            if meta.is_file() and json.loads(meta.read_text() or "{}").get("epoch", 0) >= 2:
                break
            time.sleep(0.05)
        assert all(p.poll() is None for p in procs), "training ended before it could be killed"
    finally:
        for p in procs:
            os.kill(p.pid, signal.SIGKILL)
            p.communicate()
    assert not (out / "metrics.json").exists()
    procs = _workers(data, out, 12)
    outputs = [p.communicate(timeout=400) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    assert "resuming the unfinished run" in outputs[0][1]
    losses = [re.findall(r"epoch 12/12: .*?\bloss: ([0-9.]+)", err) for _, err in outputs]
    assert losses[0] and losses[0] == losses[1]  # both workers end with the same loss
    for name in ("config.yaml", "run.json", "split.csv", "labels.txt", "model.keras", "history.csv", "metrics.json"):
        assert (out / name).is_file(), name
    assert list((out / "logs" / "train").glob("events.out.tfevents.*"))
    with open(out / "history.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == list(range(12))
    # 12 epochs over two workers and a kill: still far above the 1/3 of chance on colour-coded classes
    assert json.loads((out / "metrics.json").read_text())["test"]["accuracy"] >= 0.66
