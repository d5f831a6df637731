"""Shared fixtures: tiny generated image folders (no dataset on disk needed), seeds, an isolated cache."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

COLOURS = [(220, 40, 40), (40, 200, 60), (50, 60, 230), (230, 220, 40)]


def make_image(label_index: int, size: int = 24, seed: int = 0) -> np.ndarray:
    """A noisy solid-colour image whose colour tells the class."""
    rng = np.random.default_rng(seed)
    base = np.array(COLOURS[label_index % len(COLOURS)], dtype=np.int16)
    noise = rng.integers(-30, 30, (size, size, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def write_class_folder(root: Path, classes=("cat", "dog", "fox"), per_class: int = 12, size: int = 24,
                       ext: str = ".png", start: int = 0) -> Path:
    from PIL import Image

    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(start, start + per_class):
            Image.fromarray(make_image(k, size, seed=1000 * k + i)).save(root / name / f"img_{i:03d}{ext}")
    return root


def batchnorm_statistics_of(model) -> list:
    from kclassify.training.averaging import batchnorm_layers, batchnorm_statistics

    return [v.numpy().copy() for v in batchnorm_statistics(batchnorm_layers(model))]


def has_own_batchnorm_statistics(model_file: Path, data: Path, split_csv: Path, image_size: int) -> bool:
    """Whether ``model_file``'s BatchNorm statistics are those of its own weights over its training images
    (``--ema``'s saved average): recomputing them over those images, as one batch, changes nothing."""
    import csv

    import keras

    from kclassify.data.pipeline import decode_image
    from kclassify.training.averaging import recompute_batchnorm

    with open(split_csv, newline="") as f:
        train = [data / r["path"] for r in csv.DictReader(f) if r["split"] == "train"]
    x = np.stack([decode_image(str(p), image_size).numpy() for p in train]).astype(np.float32)
    model = keras.models.load_model(model_file)
    kept = batchnorm_statistics_of(model)
    assert kept and recompute_batchnorm(model, [x], steps=1) == 1
    return all(np.allclose(a, b, rtol=1e-3, atol=1e-4) for a, b in zip(kept, batchnorm_statistics_of(model)))


# ---------------------------------------------------------------- the two lanes
# `pytest -m "not slow"` is the quick lane. A whole run takes it first, and the first failure there stops the
# run before the slow lane: a broken change fails in the quick lane's minutes, not the suite's. With
# pytest-xdist each worker sorts the same way, and a worker that stops makes the controller stop the rest.
BOTH_LANES = pytest.StashKey[bool]()


def _slow(item) -> bool:
    return item.get_closest_marker("slow") is not None


@pytest.hookimpl(trylast=True)  # after -m and -k have deselected
def pytest_collection_modifyitems(config, items):
    items.sort(key=_slow)  # stable: each lane keeps pytest's order (a module's tests stay together)
    config.stash[BOTH_LANES] = any(map(_slow, items)) and not all(map(_slow, items))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if outcome.get_result().failed and not _slow(item) and item.config.stash.get(BOTH_LANES, False):
        item.session.shouldfail = "a test of the quick lane failed; the slow lane was not run"


# ---------------------------------------------------------------- fixtures
@pytest.fixture(autouse=True)
def _seeds_and_cache(tmp_path_factory, monkeypatch):
    random.seed(0)
    np.random.seed(0)
    cache = tmp_path_factory.getbasetemp() / "kclassify-cache"
    monkeypatch.setenv("KCLASSIFY_CACHE_DIR", str(cache))


@pytest.fixture(autouse=True)
def _float32_on_every_cpu(monkeypatch):
    """``--mixed-precision`` auto computes in bfloat16 on a CPU with AMX and in float32 elsewhere; the tests
    compute in float32 on every machine (those of auto itself set the CPU they mean over this)."""
    monkeypatch.setattr("kclassify.training.recipe.cpu_has_amx", lambda: False)


@pytest.fixture
def image_folder(tmp_path) -> Path:
    return write_class_folder(tmp_path / "data")


def stop_after(epoch: int):
    """A Keras callback that interrupts training after ``epoch`` (its resume backup already written)."""
    import keras

    class StopAfter(keras.callbacks.Callback):
        def on_epoch_end(self, e, logs=None):
            if e == epoch:
                raise KeyboardInterrupt

    return StopAfter()


# label_smoothing: metrics.json's loss is then the plain test cross-entropy, which Keras' evaluate
# (smoothed) would not give: tests/test_inference.py tells the two apart.
# Tiny settings for tiny images. The default doubled input (--input-scale) and phone resizes (--phone-resize) are
# turned off here, so the models take 16 px; test_phone.py tests them, and fits with the defaults.
TINY = {"image_size": 16, "batch_size": 8, "epochs": 3, "augment": 0.0, "seed": 1, "lr": 3e-3, "label_smoothing": 0.1,
        "input_scale": 1, "phone_resize": 0.0}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A finished run folder of the small CNN on 3 colour classes (shared; never modify it)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KCLASSIFY_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "kclassify-cache"))
        from kclassify import fit

        root = tmp_path_factory.mktemp("tiny")
        data = write_class_folder(root / "data", per_class=20)
        result = fit(data=str(data), output=root / "run", verbose=0, **TINY)
    assert result.metrics["test"]["accuracy"] == 1.0, result.metrics  # separable colours: a broken fit fails here
    return result.run_dir


@pytest.fixture(scope="session")
def tiny_export(tiny_run, tmp_path_factory):
    """Every export format of :func:`tiny_run`, written once into its own folder."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KCLASSIFY_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "kclassify-cache"))
        from kclassify.export import export

        return export(tiny_run, "all", output=tmp_path_factory.mktemp("tiny-export") / "export", latency_runs=5)


def bomb_png(side: int = 20000, rows: int = 64) -> bytes:
    """A valid PNG header claiming side x side 8-bit grey pixels, with the data of a few rows only:
    a few KB that would take side * side bytes once decoded (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * (side + 1) * rows, 9))
            + chunk(b"IEND", b""))

