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


@pytest.fixture(autouse=True)
def _seeds_and_cache(tmp_path_factory, monkeypatch):
    random.seed(0)
    np.random.seed(0)
    cache = tmp_path_factory.getbasetemp() / "kclassify-cache"
    monkeypatch.setenv("KCLASSIFY_CACHE_DIR", str(cache))


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
