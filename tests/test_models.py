"""Registry records and build_classifier: raw pixels in, probabilities out, weights handling."""

import numpy as np
import pytest

from kclassify.errors import ConfigError, UnknownBackboneError, WeightsError
from kclassify.models import REGISTRY, build_classifier, get


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_backbone_builds_and_predicts(name):
    spec = get(name)
    size = max(spec.min_size, 32)
    model = build_classifier(name, num_classes=np.int64(3), image_size=size)  # NumPy ints accepted
    x = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype("float32")
    probs = model.predict(x, verbose=0)
    assert probs.shape == (2, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_unknown_backbone_lists_valid_ones():
    with pytest.raises(UnknownBackboneError, match="Did you mean 'small_cnn'.*Valid backbones: small_cnn"):
        get("smal_cnn")


def test_too_small_input_says_the_minimum():
    with pytest.raises(ConfigError, match="at least 32px"):
        build_classifier("mobilenet_v3_small", 2, image_size=16)


def test_local_weights_file_round_trip(tmp_path):
    from kclassify.models.small_cnn import SmallCNN

    base = SmallCNN((24, 24, 3))
    path = tmp_path / "small.weights.h5"
    base.save_weights(path)
    model = build_classifier("small_cnn", 2, 24, weights=str(path))
    loaded = model.get_layer("small_cnn").get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(loaded, base.get_weights()))
    with pytest.raises(WeightsError, match="does not fit backbone 'small_cnn'"):
        other = SmallCNN((24, 24, 3), filters=(8, 8))
        other.save_weights(tmp_path / "other.weights.h5")
        build_classifier("small_cnn", 2, 24, weights=str(tmp_path / "other.weights.h5"))
    with pytest.raises(WeightsError, match="does not exist"):
        build_classifier("small_cnn", 2, 24, weights=str(tmp_path / "nope.weights.h5"))


def test_imagenet_offline_is_one_clear_line(monkeypatch):
    import keras

    def offline(fname, origin=None, *a, **k):
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    monkeypatch.setattr("keras.src.applications.mobilenet_v3.file_utils.get_file", offline)
    with pytest.raises(WeightsError) as err:
        build_classifier("mobilenet_v3_small", 2, 32, weights="imagenet")
    message = str(err.value)
    assert "\n" not in message and "URL fetch failure on https://" in message
    assert "--weights none" in message and ".weights.h5" in message
    with pytest.raises(WeightsError, match="has no ImageNet weights"):
        build_classifier("small_cnn", 2, 32, weights="imagenet")
