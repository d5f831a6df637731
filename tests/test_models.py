"""Registry records and build_classifier: raw pixels in, probabilities out, weights handling."""

import re

import numpy as np
import pytest

from kclassify.errors import ConfigError, UnknownBackboneError, WeightsError
from kclassify.models import REGISTRY, build_classifier, get


def family(name: str) -> str:
    """resnet101_v2 -> resnet_v2, efficientnet_v2_b3 -> efficientnet_v2, convnext_tiny -> convnext."""
    base = re.sub(r"_(small|medium|large|tiny|base|xlarge|mobile|b\d|s|m|l)$", "", name)
    return re.sub(r"(?<!v)\d+", "", base)


FIRST_OF_FAMILY = {}
for _name in REGISTRY:
    FIRST_OF_FAMILY.setdefault(family(_name), _name)
# The quick lane builds one backbone per family (the first registered, usually the smallest) but the two
# slowest to build (NASNet, Inception-ResNet: seconds each); the whole registry is in the slow set, which CI
# runs too.
SLOW_TO_BUILD = {"nasnet_mobile", "inception_resnet_v2"}
ZOO = [n if n in FIRST_OF_FAMILY.values() and n not in SLOW_TO_BUILD else pytest.param(n, marks=pytest.mark.slow)
       for n in REGISTRY]


def test_families_cover_the_registry():
    assert len(FIRST_OF_FAMILY) == 18 and family("resnet101_v2") == "resnet_v2"
    assert {"vgg16", "resnet50", "mobilenet_v3_small", "efficientnet_v2_b0", "convnext_tiny"} <= set(FIRST_OF_FAMILY.values())


@pytest.mark.parametrize("name", ZOO)
def test_every_backbone_builds_and_predicts(name):
    spec = get(name)
    size = spec.min_size  # the smallest input each accepts keeps the whole zoo fast enough for CI
    model = build_classifier(name, num_classes=np.int64(3), image_size=size)  # NumPy ints accepted
    x = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype("float32")
    probs = np.asarray(model(x, training=False))  # eager: predict's tracing took 3-6x longer on large graphs
    assert probs.shape == (2, 3)
    from kclassify.models.build import backbone_of

    if spec.unfreeze_from:  # the block --unfreeze top starts from exists in this backbone
        assert any(layer.name.startswith(spec.unfreeze_from) for layer in backbone_of(model).layers)
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


@pytest.mark.parametrize("mode,module", [
    ("tf", "mobilenet_v2"), ("torch", "densenet"), ("caffe", "resnet50"),
])
def test_preprocessing_in_the_model_matches_keras_preprocess_input(mode, module):
    import importlib

    import keras

    from kclassify.models.build import _preprocess

    x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    inp = keras.Input((8, 8, 3))
    ours = keras.Model(inp, _preprocess(mode, inp)).predict(x, verbose=0)
    reference = importlib.import_module(f"keras.applications.{module}").preprocess_input(x.copy())
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "prelu", "elu", "gelu", "tanh", "sigmoid"])
def test_our_backbones_take_each_activation(activation):
    for name, options in (("small_cnn", {}), ("alexnet", {"batch_norm": activation != "relu"})):
        model = build_classifier(name, 2, 32, activation=activation, hidden_units=8,
                                 hidden_activation=activation, **options)
        assert model.predict(np.zeros((1, 32, 32, 3), "float32"), verbose=0).shape == (1, 2)
        assert model.get_layer("hidden").units == 8


def test_fixed_architectures_refuse_our_options():
    with pytest.raises(ConfigError, match="fixed architecture; activation='elu' applies only to small_cnn, alexnet"):
        build_classifier("mobilenet_v3_small", 2, 32, activation="elu")


@pytest.mark.parametrize("width,depth", [(1.0, 1), (1.5, 2), (0.5, 3)])
def test_small_cnn_width_and_depth_give_the_convolutions_they_say(width, depth):
    from kclassify.models.small_cnn import SmallCNN

    channels = [round(c * width) for c in (32, 64, 128, 256)]
    # 3x3 kernels without bias, 4 BatchNorm numbers per channel; the stem once, each block `depth` times
    expected = 9 * 3 * channels[0] + 4 * channels[0]
    for before, c in zip(channels, channels[1:]):
        expected += 9 * before * c + 4 * c + (depth - 1) * (9 * c * c + 4 * c)
    model = SmallCNN((32, 32, 3), width=width, depth=depth)
    assert model.count_params() == expected
    assert model.output_shape == (None, 4, 4, channels[-1])  # stride-2 stem and two pools, whatever the depth
    assert model.get_layer("block3_conv").filters == channels[-1]  # the names weights were saved under


def test_width_and_depth_only_where_they_apply():
    with pytest.raises(ConfigError, match="width=2.0 applies only to small_cnn"):
        build_classifier("alexnet", 2, 32, width=2.0)
    assert build_classifier("alexnet", 2, 32, width=1.0, depth=1).output_shape == (None, 2)  # defaults pass


def test_alexnet_adapts_its_stem_to_the_input_size():
    from kclassify.models.alexnet import AlexNet

    assert AlexNet((224, 224, 3)).get_layer("conv1").strides == (4, 4)
    assert AlexNet((32, 32, 3)).get_layer("conv1").strides == (1, 1)
    assert AlexNet((16, 16, 3)).output_shape[1] >= 1


@pytest.mark.parametrize("name", ["small_cnn", "mobilenet_v3_small"])
def test_parameter_count_does_not_depend_on_input_size(name):
    from kclassify.models.build import backbone_of, count_parameters

    model = build_classifier(name, 2, 64)
    assert count_parameters(name) == backbone_of(model).count_params()  # counted at the minimum size


def test_batchnorm_momentum_ours_0_9_and_settable_for_any_backbone():
    import keras

    from kclassify.models.build import all_layers

    def momenta(model):
        return {layer.momentum for layer in all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)}

    assert momenta(build_classifier("small_cnn", 3, 32)) == {0.9}
    assert momenta(build_classifier("alexnet", 3, 32)) == {0.9}
    assert momenta(build_classifier("mobilenet_v3_small", 3, 32)) == {0.999}  # Keras' own, untouched
    assert momenta(build_classifier("mobilenet_v3_small", 3, 32, bn_momentum=0.9)) == {0.9}
