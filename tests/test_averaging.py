"""Weight averaging (--ema): the average Keras keeps, shown to checkpoints and kept at the end; BatchNorm's statistics
averaged each epoch and recomputed for the saved model."""

import numpy as np
import pytest

from conftest import TINY, has_own_batchnorm_statistics, write_class_folder


class Recorder:
    """Keras callbacks that note the weights: after every step, and when the epoch's checkpoints run."""

    def __init__(self):
        import keras

        outer = self

        class Steps(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                outer.steps.append(self.model.get_weights()[0].copy())

        class Checkpoint(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                outer.checkpoints.append(self.model.get_weights()[0].copy())

        self.steps, self.checkpoints = [], []
        self.callbacks = [Steps(), Checkpoint()]


def _tiny_model(momentum: float):
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, use_bias=False)])
    model.compile(optimizer=keras.optimizers.SGD(0.1, use_ema=True, ema_momentum=momentum), loss="mse")
    return model


def test_the_kept_weights_are_the_hand_computed_average():
    from kclassify.training import averaging

    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], np.float32)
    y = np.array([[1.0], [2.0], [0.5]], np.float32)
    model, seen = _tiny_model(0.5), Recorder()
    model.fit(x, y, batch_size=1, epochs=2, shuffle=False, verbose=0, callbacks=averaging.wrap(seen.callbacks))
    w = seen.steps  # the raw weights after each of the 6 steps
    average = w[0]  # Keras starts the average at the first step's weights
    expected = []
    for i, step in enumerate(w[1:], 2):
        average = 0.5 * average + 0.5 * step
        if i % 3 == 0:
            expected.append(average.copy())
    assert len(w) == 6 and not np.allclose(w[2], expected[0])  # the average is not the last iterate
    assert np.allclose(seen.checkpoints[0], expected[0]) and np.allclose(seen.checkpoints[1], expected[1])
    assert np.allclose(model.get_weights()[0], expected[1])  # kept at the end
    # epoch 2 trained on from the raw weights, not from the average shown to the checkpoint
    lr_step = w[3] - w[2]
    grad = 2 * x[0:1].T @ (x[0:1] @ w[2] - y[0:1])  # d(mse)/dw at the raw weights, first sample
    assert np.allclose(lr_step, -0.1 * grad, atol=1e-5)


def test_batchnorm_statistics_become_the_mean_over_the_batches():
    import keras
    import tensorflow as tf

    from kclassify.training.averaging import recompute_batchnorm

    model = keras.Sequential([keras.Input((2,)), keras.layers.BatchNormalization(momentum=0.99)])
    batches = [np.full((4, 2), v, np.float32) + np.array([[0, 0], [0, 2], [0, 0], [0, 2]], np.float32)
               for v in (1.0, 3.0, 8.0)]
    used = recompute_batchnorm(model, tf.data.Dataset.from_tensor_slices(np.concatenate(batches)).batch(4), steps=3)
    bn = model.layers[0]
    assert used == 3 and bn.momentum == 0.99  # restored
    assert np.allclose(bn.moving_mean.numpy(), [4.0, 5.0])  # mean of (1, 3, 8) and of (2, 4, 9)
    assert np.allclose(bn.moving_variance.numpy(), [0.0, 1.0], atol=1e-3)  # each batch's variance: 0 and 1


def test_each_epoch_shows_the_moving_average_of_the_batchnorm_statistics():
    """Validation and checkpoints see the raw weights' statistics averaged at the weights' momentum, brought
    up to date at each epoch's end as M ** steps (no forward pass); training goes on from the raw ones."""
    import keras

    from kclassify.training import averaging

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((1,)), keras.layers.BatchNormalization(momentum=0.5), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.01, use_ema=True, ema_momentum=0.8), loss="mse")
    bn = model.layers[0]
    x = np.array([[1.0], [3.0], [5.0], [9.0], [2.0], [2.0]], np.float32)  # batches of 2: means 2, 7, 2; variances 1, 4, 0
    raw, shown = [], []

    class Raw(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            raw.append((float(bn.moving_mean.numpy()[0]), float(bn.moving_variance.numpy()[0])))

    class Shown(keras.callbacks.Callback):
        def on_test_begin(self, logs=None):  # validation's view
            shown.append((float(bn.moving_mean.numpy()[0]), float(bn.moving_variance.numpy()[0])))

    model.fit(x, x, batch_size=2, epochs=2, shuffle=False, verbose=0, validation_data=(x, x),
              callbacks=averaging.wrap([Raw(), Shown()]))
    # the raw statistics by hand, momentum 0.5 from Keras' start (mean 0, variance 1), over both epochs:
    # epoch 2 goes on from epoch 1's raw (3, 1.25), not from the average it showed
    expected_raw, mean, var = [], 0.0, 1.0
    for batch_mean, batch_var in [(2.0, 1.0), (7.0, 4.0), (2.0, 0.0)] * 2:
        mean, var = 0.5 * mean + 0.5 * batch_mean, 0.5 * var + 0.5 * batch_var
        expected_raw.append((mean, var))
    assert np.allclose(raw, expected_raw)
    decay = 0.8 ** 3  # three steps an epoch
    first = [decay * s + (1 - decay) * r for s, r in zip((0.0, 1.0), expected_raw[2])]
    second = [decay * a + (1 - decay) * r for a, r in zip(first, expected_raw[5])]
    assert np.allclose(shown, [first, second])
    assert np.allclose([bn.moving_mean.numpy()[0], bn.moving_variance.numpy()[0]], second)  # kept at the end


@pytest.mark.slow
def test_fit_with_ema_trains_and_keeps_an_average(tmp_path):
    from kclassify import fit

    data = write_class_folder(tmp_path / "data", per_class=20)
    result = fit(data=str(data), output=tmp_path / "run", verbose=0, **{**TINY, "ema": 0.9})
    assert result.metrics["test"]["accuracy"] == 1.0  # separable colours
    assert "ema: 0.9" in (result.run_dir / "config.yaml").read_text()


@pytest.mark.slow
def test_the_saved_average_has_batchnorm_statistics_of_its_own(tmp_path):
    """model.keras' statistics are recomputed for the averaged weights, at the full size, where the epochs'
    checkpoints hold the moving average."""
    from kclassify import fit

    data = write_class_folder(tmp_path / "data", per_class=12)
    settings = {**TINY, "ema": 0.5, "batch_size": 64, "mixed_precision": False,  # one batch: the whole training set
                "progressive_resize": 0.5}
    run = fit(data=str(data), output=tmp_path / "run", verbose=0, **settings).run_dir
    split, size = run / "split.csv", TINY["image_size"]
    assert has_own_batchnorm_statistics(run / "model.keras", data, split, size)
    assert not has_own_batchnorm_statistics(run / "checkpoints" / "last.keras", data, split, size)
