"""Progressive resizing (--progressive-resize): smaller training images first, the full size last and saved."""

import csv
import json

import numpy as np
import pytest

from conftest import TINY, write_class_folder


def test_stage_sides_grow_linearly_to_the_full_side_in_multiples():
    from kclassify.training.progressive import stage_sides

    # 0.5, 0.667, 0.833, 1.0 of 128, each to the nearest multiple of 8: 64, 85.3 -> 88, 106.7 -> 104, 128
    assert stage_sides(128, 0.5, multiple=8, smallest=32) == [64, 88, 104, 128]
    assert stage_sides(32, 0.25, multiple=4, smallest=16) == [16, 16, 24, 32]  # never below the backbone's minimum


def test_the_last_epoch_trains_at_the_full_size_however_short_the_schedule():
    from kclassify.training.progressive import stage_of

    assert [stage_of(e, 3) for e in range(3)] == [0, 1, 3]  # a 2-minute budget's 3 epochs: the last one full
    assert [stage_of(e, 12) for e in range(12)] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert stage_of(0, 1) == 3


def test_the_callback_stages_by_the_schedule_and_never_shrinks():
    import tensorflow as tf

    from kclassify.training.progressive import ProgressiveResize

    side = tf.Variable(0, dtype=tf.int32)
    total = [8]
    callback = ProgressiveResize(side, [16, 20, 28, 32], lambda: total[0])
    callback.on_train_begin()
    seen = []
    for epoch in range(8):
        callback.on_epoch_begin(epoch)
        seen.append(int(side.numpy()))
    assert seen == [16, 16, 20, 20, 28, 28, 32, 32]
    total[0] = 40  # a time budget that plans more epochs after a fast one: no step back
    callback.on_epoch_begin(8)
    assert int(side.numpy()) == 32


def test_the_training_pipeline_resizes_to_the_side_the_variable_holds(tmp_path):
    from kclassify import config
    from kclassify.data import prepare_for
    from kclassify.training.recipe import make_recipe
    from kclassify.data.pipeline import decoded

    data = write_class_folder(tmp_path / "data", per_class=6, size=40)
    cfg = config.build_config({**TINY, "data": str(data), "image_size": 32, "progressive_resize": 0.5})
    prepared = prepare_for(cfg)

    def images(split, size, resize="kclassify"):
        paths, labels = prepared.subset(split)
        return decoded(paths, labels, size, None, resize) if paths else None

    recipe = make_recipe(cfg, prepared, images)
    assert recipe.sides == [16, 20, 28, 32]
    for side in recipe.sides:
        recipe.side.assign(side)
        x, y = next(iter(recipe.datasets["train"]))
        assert tuple(x.shape[1:]) == (side, side, 3) and y.shape[-1] == 3
    x, _ = next(iter(recipe.datasets["val"]))
    assert tuple(x.shape[1:]) == (32, 32, 3)  # validation at the full size whatever the stage
    recipe.side.assign(recipe.sides[0])  # e.g. a search's trial rebuilt, or a run its budget stopped early
    x, _ = next(iter(recipe.final_batches()))  # what --ema's saved model recomputes BatchNorm over
    assert tuple(x.shape[1:]) == (32, 32, 3)


@pytest.mark.slow
def test_a_fit_trains_at_the_planned_sides_and_saves_the_full_size(tmp_path):
    import keras

    from kclassify import fit

    data = write_class_folder(tmp_path / "data", per_class=20, size=40)
    result = fit(data=str(data), output=tmp_path / "run", verbose=0,
                 **{**TINY, "image_size": 32, "epochs": 8, "progressive_resize": 0.5})
    with open(tmp_path / "run" / "history.csv") as f:
        sides = [int(float(r["train_side"])) for r in csv.DictReader(f)]
    assert sides == [16, 16, 20, 20, 28, 28, 32, 32]
    saved = keras.models.load_model(tmp_path / "run" / "model.keras")
    assert saved.input_shape == (None, 32, 32, 3) and result.metrics["test"]["accuracy"] == 1.0
    last = keras.models.load_model(tmp_path / "run" / "checkpoints" / "last.keras")  # trained at any size
    assert last.input_shape == (None, None, None, 3)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(saved(x), last(x), atol=1e-6)  # the kept checkpoint's weights, at a fixed size
    from kclassify.inference import load_predictor

    for checkpoint in ("best.keras", "last.keras"):  # read at the run's size
        assert load_predictor(tmp_path / "run" / "checkpoints" / checkpoint).image_size == 32
    assert json.loads((tmp_path / "run" / "run.json").read_text())["kept"]["rule"] == "last"  # the default
