"""Two-phase transfer learning: frozen head phase, fine-tuning with BatchNorm frozen, transfer from a run."""

import contextlib
import csv

import keras
import numpy as np
import pytest

from conftest import make_image, stop_after, write_class_folder
from kclassify.config import build_config
from kclassify.errors import ConfigError, WeightsError
from kclassify.inference import load_predictor
from kclassify.inference.explain import gradcam, keras_model
from kclassify.models.build import POOL_LAYER, backbone_of, build_classifier
from kclassify.models.small_cnn import SmallCNN
from kclassify.training.finetune import _first_unfrozen, plan_phases, unfreeze_top

FAST = {"image_size": 16, "batch_size": 8, "augment": 0.0, "seed": 5, "verbose": 0}


class Snapshots(keras.callbacks.Callback):
    """Backbone weights by name at the start and end of each phase's fit."""

    def __init__(self):
        super().__init__()
        self.begin, self.end, self.epochs = [], [], []

    def _take(self):
        return {w.path: np.array(w.numpy()) for w in backbone_of(self.model).weights}

    def on_train_begin(self, logs=None):
        self.begin.append(self._take())

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)

    def on_train_end(self, logs=None):
        self.end.append(self._take())


@pytest.fixture
def pretrained(tmp_path):
    path = tmp_path / "small.weights.h5"
    base = SmallCNN((16, 16, 3))
    rng = np.random.default_rng(1)
    base.set_weights([w + rng.normal(0, 0.05, w.shape).astype(w.dtype) if "moving_variance" not in v.path else w
                      for w, v in zip(base.get_weights(), base.weights)])
    base.save_weights(path)
    return path, {v.path: v.numpy() for v in base.weights}


def test_phases_plan():
    assert [p.name for p in plan_phases(build_config({"epochs": 8}))] == ["train"]
    two = plan_phases(build_config({"epochs": 8, "weights": "imagenet"}))
    assert [(p.name, p.start, p.end, p.lr_factor) for p in two] == [("head", 0, 2, 1.0), ("finetune", 2, 8, 0.1)]
    assert [p.name for p in plan_phases(build_config({"epochs": 3, "weights": "x", "head_epochs": 3}))] == ["head"]


def test_unfreeze_by_count_fraction_name_all():
    model = build_classifier("small_cnn", 2, 16, weights="none")
    layers = backbone_of(model).layers
    n = len(layers)
    assert _first_unfrozen(layers, "all") == 0
    assert _first_unfrozen(layers, "4") == n - 4
    assert _first_unfrozen(layers, "0.5") == n - round(0.5 * n)
    assert layers[_first_unfrozen(layers, "block3")].name == "block3_conv"
    assert _first_unfrozen(layers, "top", "block3") == _first_unfrozen(layers, "block3")
    assert _first_unfrozen(layers, "top", None) == _first_unfrozen(layers, "0.25")
    with pytest.raises(ConfigError, match="names no layer"):
        _first_unfrozen(layers, "block9")
    trained = unfreeze_top(model, "block3")
    assert trained == 1  # block3_conv; block3_bn stays frozen, activations have no weights
    assert not backbone_of(model).get_layer("block3_bn").trainable


def test_head_phase_freezes_and_finetune_keeps_batchnorm(image_folder, tmp_path, pretrained):
    from kclassify import fit

    path, initial = pretrained
    snap = Snapshots()
    fit(data=str(image_folder), output=tmp_path / "run", weights=str(path), epochs=3, head_epochs=1,
        lr=0.01, callbacks=[snap], **FAST)
    assert snap.epochs == [0, 1, 2]  # one continuous timeline over both phases
    after_head, after_finetune = snap.end
    for name, value in initial.items():
        np.testing.assert_array_equal(after_head[name], value)  # phase 1: backbone untouched
    changed = [n for n in initial if "kernel" in n and not np.array_equal(after_finetune[n], initial[n])]
    assert len(changed) == 4  # stem + 3 conv blocks fine-tuned
    for name in initial:
        if "_bn/" in name:  # gamma, beta, moving mean and variance all frozen
            np.testing.assert_array_equal(after_finetune[name], initial[name])
    with open(tmp_path / "run" / "history.csv") as f:
        lrs = [float(r["learning_rate"]) for r in csv.DictReader(f)]
    assert lrs[1] < 0.0011  # fine-tuning starts at lr x 0.1

    # Grad-CAM of a two-phase run finds the pooled feature map as in any run (issue 30)
    predictor = load_predictor(tmp_path / "run")
    model, size = keras_model(predictor), predictor.image_size
    heats, picked = gradcam(model, np.stack([make_image(k, size, seed=7) for k in range(3)]))
    cells = tuple(model.get_layer(POOL_LAYER).input.shape[1:3])
    assert heats.shape == (3, *cells) and min(cells) > 1 and np.isfinite(heats).all() and picked.shape == (3,)


# inside the head phase, at the phase boundary, inside fine-tuning; the quick lane resumes at the boundary
@pytest.mark.parametrize("stop", [pytest.param(0, marks=pytest.mark.slow), 1, pytest.param(2, marks=pytest.mark.slow)])
def test_resume_across_the_phase_boundary(image_folder, tmp_path, pretrained, stop):
    from kclassify import fit

    path, _ = pretrained
    settings = dict(data=str(image_folder), output=tmp_path / "run", weights=str(path), epochs=4,
                    head_epochs=2, **FAST)
    with pytest.raises(KeyboardInterrupt):
        fit(callbacks=[stop_after(stop)], **settings)
    snap = Snapshots()
    fit(callbacks=[snap], **settings)
    assert [e for e in snap.epochs] == list(range(stop + 1, 4))
    with open(tmp_path / "run" / "history.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [0, 1, 2, 3]


@pytest.mark.slow
def test_transfer_from_an_earlier_run(image_folder, tmp_path):
    from kclassify import fit

    first = fit(data=str(image_folder), output=tmp_path / "a", epochs=1, **FAST)
    source = {w.path: w.numpy() for w in backbone_of(first.model).weights}
    other = write_class_folder(tmp_path / "other", classes=("x", "y"), per_class=8)
    snap = Snapshots()
    fit(data=str(other), output=tmp_path / "b", weights=str(tmp_path / "a"), epochs=2, head_epochs=1,
        callbacks=[snap], **FAST)
    for name, value in source.items():
        np.testing.assert_array_equal(snap.begin[0][name], value)
    same = build_classifier("small_cnn", 3, 16, weights=str(tmp_path / "a" / "model.keras"))
    assert same.output_shape == (None, 3)
    with pytest.raises(WeightsError, match="cannot take its weights"):
        build_classifier("mobilenet_v3_small", 3, 32, weights=str(tmp_path / "a"))
    with pytest.raises(WeightsError, match="holds no model.keras"):
        build_classifier("small_cnn", 3, 16, weights=str(tmp_path))


@pytest.mark.slow
def test_same_classes_load_the_head_too(image_folder, tmp_path):
    from kclassify import fit
    from kclassify.models.build import transfer_head

    fit(data=str(image_folder), output=tmp_path / "a", epochs=1, **FAST)
    model = build_classifier("small_cnn", 3, 16, weights=str(tmp_path / "a"))
    assert transfer_head(model, str(tmp_path / "a"), ["cat", "dog", "fox"])
    source = keras.models.load_model(tmp_path / "a" / "model.keras")
    np.testing.assert_array_equal(model.get_layer("predictions").get_weights()[0],
                                  source.get_layer("predictions").get_weights()[0])
    assert not transfer_head(model, str(tmp_path / "a"), ["cat", "dog", "owl"])
    # A run folder named "none" in the working directory must not turn --weights none into a transfer.
    (tmp_path / "a").rename(tmp_path / "none")
    with contextlib.chdir(tmp_path):
        assert not transfer_head(model, "none", ["cat", "dog", "fox"])
        assert build_classifier("small_cnn", 3, 16, weights="none").output_shape == (None, 3)
