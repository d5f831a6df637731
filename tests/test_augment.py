"""Augmentation policies: each changes training images, keeps their labels, and leaves evaluation images alone."""

import numpy as np
import pytest

from conftest import make_image


@pytest.mark.parametrize("policy", ["basic", pytest.param("randaugment", marks=pytest.mark.slow),
                                    pytest.param("augmix", marks=pytest.mark.slow)])
def test_each_policy_changes_images_and_keeps_labels(policy):
    import tensorflow as tf

    from kclassify.data.augment import build_augmentation
    from kclassify.data.pipeline import batches

    images = np.stack([make_image(i % 3, 32, seed=i) for i in range(8)])
    labels = np.arange(8) % 3
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    augment = build_augmentation(1.0, "none", seed=3, policy=policy)
    (x, y), = batches(ds, 3, 8, training=True, seed=0, augment=augment).take(1)
    (plain_x, plain_y), = batches(ds, 3, 8, training=False).take(1)
    assert x.shape == plain_x.shape and x.dtype == tf.float32
    assert 0 <= float(tf.reduce_min(x)) and float(tf.reduce_max(x)) <= 255.001  # still pixels
    assert not np.allclose(np.sort(x.numpy().ravel()), np.sort(plain_x.numpy().ravel()), atol=1.0)  # changed
    # the shuffled batch holds the same labels, each still one-hot on its class
    assert sorted(np.argmax(y.numpy(), 1).tolist()) == sorted(np.argmax(plain_y.numpy(), 1).tolist())
    assert np.allclose(y.numpy().sum(1), 1.0) and np.allclose(y.numpy().max(1), 1.0)
    assert (plain_x.numpy() == images.astype(np.float32)).all()  # evaluation batches: untouched


def test_strength_zero_turns_every_policy_off():
    from kclassify.data.augment import AUGMENT_POLICIES, build_augmentation

    assert all(build_augmentation(0.0, "horizontal", 1, policy) is None for policy in AUGMENT_POLICIES)
