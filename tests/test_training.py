"""Every optimizer, schedule and loss trains a step; fit writes a complete, resumable run folder."""

import csv
import dataclasses
import json

import keras
import numpy as np
import pytest

from conftest import stop_after
from kclassify.config import LOSSES, OPTIMIZERS, SCHEDULES, build_config
from kclassify.errors import RunFolderError
from kclassify.models.build import build_classifier
from kclassify.training.losses import build_loss
from kclassify.training.optimizers import build_optimizer

FAST = {"image_size": 16, "batch_size": 8, "augment": 0.5, "seed": 3}


def _one_step(**settings):
    cfg = build_config(settings)
    model = build_classifier("small_cnn", 3, 16)
    model.compile(optimizer=build_optimizer(cfg.train, steps_per_epoch=4), loss=build_loss(cfg.train),
                  metrics=["accuracy"], run_eagerly=True)  # eager: no tracing, the same step
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (8, 16, 16, 3)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 3, 8), 3)
    before = [w.copy() for w in model.get_layer("predictions").get_weights()]
    for _ in range(2):  # two steps: a warm-up schedule starts at learning rate 0
        logs = model.train_on_batch(x, y, return_dict=True)
    after = model.get_layer("predictions").get_weights()
    assert np.isfinite(logs["loss"])
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))
    return model


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_each_optimizer_trains_a_step(optimizer):
    model = _one_step(optimizer=optimizer, weight_decay=1e-4, clipnorm=1.0)
    assert model.optimizer.clipnorm == 1.0


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_each_schedule_trains_a_step(schedule):
    model = _one_step(schedule=schedule, warmup_epochs=1, epochs=3, decay_epochs=1)  # asserts the weights moved
    lr = model.optimizer._learning_rate
    expected = {"constant": "float", "plateau": "float", "cosine": "CosineDecay", "exponential": "ExponentialDecay",
                "step": "ExponentialDecay"}[schedule]
    assert (type(lr).__name__ if callable(lr) else "float") == expected
    if schedule == "step":
        assert lr.staircase and not build_optimizer(build_config({"schedule": "exponential"}).train, 4) \
            ._learning_rate.staircase


def test_schedules_shape_the_learning_rate():
    cfg = build_config({"schedule": "cosine", "warmup_epochs": 1, "epochs": 4, "lr": 0.1})
    sched = build_optimizer(cfg.train, 10)._learning_rate  # the schedule object
    assert float(sched(0)) == 0.0 and abs(float(sched(10)) - 0.1) < 1e-6 and float(sched(39)) < 0.01
    step = build_optimizer(build_config({"schedule": "step", "lr": 1.0, "decay_epochs": 2, "decay_rate": 0.5}).train, 10)._learning_rate
    assert [round(float(step(s)), 3) for s in (0, 19, 20, 40)] == [1.0, 1.0, 0.5, 0.25]


@pytest.mark.parametrize("loss", LOSSES)
def test_each_loss_trains_a_step(loss):
    model = _one_step(loss=loss, label_smoothing=0.1, clipvalue=0.5)  # asserts a finite loss and moved weights
    expected = {"crossentropy": "CategoricalCrossentropy", "focal": "CategoricalFocalCrossentropy",
                "mse": "MeanSquaredError"}[loss]
    assert type(model.loss).__name__ == expected and model.optimizer.clipvalue == 0.5


def test_balanced_class_weights():
    from kclassify.training.losses import class_weights

    assert class_weights("balanced", [0] * 30 + [1] * 10) == {0: pytest.approx(40 / 60), 1: pytest.approx(40 / 20)}
    assert class_weights("none", [0, 1]) is None


def test_fit_writes_a_complete_run_folder(image_folder, tmp_path):
    from kclassify import fit

    out = tmp_path / "run"
    result = fit(data=str(image_folder), output=out, epochs=2, class_weight="balanced",
                 schedule="cosine", verbose=0, **FAST)
    expected = {"config.yaml", "run.json", "split.csv", "excluded.csv", "labels.txt", "model.keras",
                "history.csv", "metrics.json", "logs", "checkpoints"}
    assert expected <= {p.name for p in out.iterdir()}
    assert (out / "labels.txt").read_text().split() == ["cat", "dog", "fox"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["test"]) >= {"accuracy", "loss"} and metrics == result.metrics
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "finished" and info["train_images_per_sec"] > 0 and info["seed"] == 3
    assert {"python", "tensorflow", "keras", "kclassify"} <= set(info["versions"])
    assert len(info["data"]["fingerprint"]) == 64
    with open(out / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["0", "1"] and "learning_rate" in rows[0] and "val_loss" in rows[0]
    assert list((out / "logs" / "train").glob("events.out.tfevents.*"))
    assert (out / "checkpoints" / "best.keras").is_file() and (out / "checkpoints" / "last.keras").is_file()
    assert info["kept"] == {"rule": "last", "monitor": "val_loss", "epoch": 2, "epochs": 2}  # --keep last, the default
    _assert_same_weights(out / "model.keras", out / "checkpoints" / "last.keras")
    with open(out / "split.csv") as f:
        split_rows = list(csv.DictReader(f))
    assert len(split_rows) == 36 and {r["split"] for r in split_rows} == {"train", "val", "test"}
    model = keras.models.load_model(out / "model.keras")
    probs = model.predict(np.full((1, 16, 16, 3), 128.0, "float32"), verbose=0)
    assert probs.shape == (1, 3) and abs(float(probs.sum()) - 1) < 1e-5
    assert sorted(p.name for p in image_folder.iterdir()) == ["cat", "dog", "fox"]  # data untouched
    with pytest.raises(RunFolderError, match="already holds a finished run"):
        fit(data=str(image_folder), output=out, epochs=2, verbose=0, **FAST)




def _assert_same_weights(a, b):
    wa, wb = (keras.models.load_model(p).get_weights() for p in (a, b))
    assert len(wa) == len(wb) and all(np.array_equal(x, y) for x, y in zip(wa, wb))


@pytest.mark.slow
def test_keep_best_saves_the_epoch_of_the_best_monitored_loss(image_folder, tmp_path):
    """--keep best, with validation images (val_loss) and without (the training loss)."""
    from kclassify import fit

    for validation, monitor in (({}, "val_loss"), ({"val_fraction": 0.0}, "loss")):
        out = tmp_path / f"run-{monitor}"
        fit(data=str(image_folder), output=out, epochs=3, keep="best", lr=0.05, verbose=0, **validation, **FAST)
        info = json.loads((out / "run.json").read_text())
        with open(out / "history.csv") as f:
            losses = [float(r[monitor]) for r in csv.DictReader(f)]
        assert info["kept"] == {"rule": "best", "monitor": monitor, "epoch": losses.index(min(losses)) + 1, "epochs": 3}
        _assert_same_weights(out / "model.keras", out / "checkpoints" / "best.keras")
        # lr 0.05 makes epochs differ: unless the best is the last, model.keras is not the final epoch's
        if losses.index(min(losses)) != 2:
            with pytest.raises(AssertionError):
                _assert_same_weights(out / "model.keras", out / "checkpoints" / "last.keras")


@pytest.mark.slow
def test_interrupted_fit_resumes_to_the_same_epoch_count(image_folder, tmp_path):
    from kclassify import fit

    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        fit(data=str(image_folder), output=out, epochs=4, callbacks=[stop_after(1)], verbose=0, cache="disk", **FAST)
    assert not (out / "metrics.json").exists()
    assert json.loads((out / "checkpoints" / "backup" / "train" / "training_metadata.json").read_text())["epoch"] == 2
    with pytest.raises(RunFolderError, match=r"other settings \(epochs: 4 -> 5\)"):
        fit(data=str(image_folder), output=out, epochs=5, verbose=0, cache="disk", **FAST)
    seen = []

    class Epochs(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append(epoch)

    fit(data=str(image_folder), output=out, epochs=4, callbacks=[Epochs()], verbose=0, cache="disk", **FAST)
    assert seen == [2, 3]
    with open(out / "history.csv") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["0", "1", "2", "3"]
    assert not (out / "checkpoints" / "backup").exists()  # fit removes the backup when done


@pytest.mark.parametrize("mode", ["mixup", "cutmix"])
def test_mixing_gives_each_label_the_share_of_the_image_it_mixed_in(mode):
    """Image i is filled with 40*(class+1); after mixing, its mean pixel is its labels' weighted class value."""
    import tensorflow as tf

    from kclassify.data.augment import build_mixing
    from kclassify.data.pipeline import batches

    classes = np.arange(32) % 4
    images = np.broadcast_to((40.0 * (classes + 1))[:, None, None, None], (32, 64, 64, 3)).astype("uint8")
    ds = tf.data.Dataset.from_tensor_slices((images, classes.astype("int32")))
    x, y = next(iter(batches(ds, 4, 32, training=True, seed=1, mix=build_mixing(mode, 1.0, seed=2))))
    x, y = x.numpy(), y.numpy()
    np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-5)
    mixed = (y.max(axis=1) < 0.99).sum()
    assert mixed >= 16, f"{mode} with alpha 1 should mix most images; mixed {mixed} of 32"
    # Keras' CutMix labels the patch's exact area, its mask rounds to whole pixels: up to a row and a
    # column of 64 off, i.e. 3 % of a 120-wide class gap (unmixed labels would be off by up to 60).
    np.testing.assert_allclose(x.mean(axis=(1, 2, 3)), y @ (40.0 * np.arange(1, 5)),
                               atol=0.5 if mode == "mixup" else 4.0)
    if mode == "cutmix":  # pasted, not blended: each image holds at most two of the four class values
        assert all(len(np.unique(image)) <= 2 for image in x)
    assert build_mixing("none", 1.0) is None


def test_training_batches_run_without_autotuning_and_keep_every_image():
    """tf.data's autotuning ran whole training epochs at half speed (docs/benchmarks.md, "Half-speed epochs"):
    training pipelines turn it off; evaluation pipelines keep TensorFlow's default. Every image still
    comes once an epoch, with its own label (image i is filled with 10 * class; flips, shifts, zooms and
    contrast keep a flat image's mean)."""
    import tensorflow as tf

    from kclassify.data.augment import build_augmentation
    from kclassify.data.pipeline import batches

    classes = np.arange(20) % 4
    images = np.broadcast_to((10.0 * classes)[:, None, None, None], (20, 8, 8, 3)).astype("uint8")
    ds = tf.data.Dataset.from_tensor_slices((images, classes.astype("int32")))
    train = batches(ds, 4, 8, training=True, seed=1, augment=build_augmentation(1.0, seed=1))
    assert train.options().autotune.enabled is False
    assert batches(ds, 4, 8, training=False).options().autotune.enabled is not False
    seen = [(x.numpy().mean(axis=(1, 2, 3)), y.numpy().argmax(1)) for x, y in train]
    means, labels = np.concatenate([m for m, _ in seen]), np.concatenate([lb for _, lb in seen])
    assert sorted(labels.tolist()) == sorted(classes.tolist())
    np.testing.assert_allclose(means, 10.0 * labels, atol=0.5)


def test_each_choice_family_is_one_table_whose_keys_are_the_valid_values():
    from kclassify import config
    from kclassify.data import augment
    from kclassify.models.build import PREPROCESSORS
    from kclassify.models.registry import PREPROCESSING
    from kclassify.training import losses, optimizers

    assert tuple(optimizers.OPTIMIZERS) == config.OPTIMIZERS
    assert tuple(optimizers.SCHEDULES) == config.SCHEDULES
    assert tuple(losses.LOSSES) == config.LOSSES
    assert set(PREPROCESSORS) == set(PREPROCESSING)
    assert tuple(augment.MIXES) == config.MIXES
    assert tuple(augment.AUGMENT_POLICIES) == config.AUGMENT_POLICIES
    from kclassify.training.fit import KEEP_RULES

    assert tuple(KEEP_RULES) == config.KEEP_RULES


def test_early_stopping_with_keep_last_is_warned_of():
    from kclassify.config import Config
    from kclassify.training.fit import keep_warning

    train = Config().train
    assert train.keep == "last" and keep_warning(train) is None  # the default, no early stopping
    stopping = dataclasses.replace(train, early_stopping=3)
    assert "up to 3 epoch(s) past the best one; give --keep best" in keep_warning(stopping)
    assert keep_warning(dataclasses.replace(stopping, keep="best")) is None
