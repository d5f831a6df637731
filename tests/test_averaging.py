"""Weight averaging (--ema): the average Keras keeps, shown to checkpoints and kept at the end; BatchNorm recomputed."""

import numpy as np
import pytest

from conftest import TINY, write_class_folder


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
    import tensorflow as tf

    from kclassify.training import averaging

    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], np.float32)
    y = np.array([[1.0], [2.0], [0.5]], np.float32)
    model, seen = _tiny_model(0.5), Recorder()
    images = tf.data.Dataset.from_tensor_slices(x).batch(1)
    model.fit(x, y, batch_size=1, epochs=2, shuffle=False, verbose=0,
              callbacks=averaging.wrap(seen.callbacks, images))
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


def test_the_compiled_recompute_over_a_kept_iterator_takes_the_next_batches():
    """The callbacks' path: one compiled forward pass (traced with the momenta at 0), one iterator kept
    across epochs, so each recompute takes the batches after the last one's."""
    import keras
    import tensorflow as tf

    from kclassify.training.averaging import _Averaged

    model = keras.Sequential([keras.Input((2,)), keras.layers.BatchNormalization(momentum=0.99)])
    rows = np.repeat(np.arange(1.0, 7.0, dtype=np.float32), 4)[:, None] * np.ones((1, 2), np.float32)
    state = _Averaged(tf.data.Dataset.from_tensor_slices(rows).batch(4), steps=2)  # six batches, constant within
    bn = model.layers[0]
    for expected in (1.5, 3.5, 5.5, 1.5):  # batches (1, 2), (3, 4), (5, 6), then the repeat's (1, 2)
        assert state.recompute(model) == 2
        assert np.allclose(bn.moving_mean.numpy(), [expected, expected])
        assert np.allclose(bn.moving_variance.numpy(), [0.0, 0.0], atol=1e-4) and bn.momentum == 0.99


@pytest.mark.slow
def test_fit_with_ema_trains_and_keeps_an_average(tmp_path):
    from kclassify import fit

    data = write_class_folder(tmp_path / "data", per_class=20)
    result = fit(data=str(data), output=tmp_path / "run", verbose=0, **{**TINY, "ema": 0.9})
    assert result.metrics["test"]["accuracy"] == 1.0  # separable colours
    assert "ema: 0.9" in (result.run_dir / "config.yaml").read_text()
