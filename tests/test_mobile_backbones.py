"""The backbones made for int8 phones: EfficientNet-Lite (kimm) and MobileNetV4 Conv (ours)."""

import subprocess
import sys

import numpy as np
import pytest

from conftest import make_image
from kclassify.errors import WeightsError
from kclassify.models import build_classifier

LITE_HEADLESS = {0: 3_413_024, 1: 4_189_344, 2: 4_869_168, 3: 6_992_768, 4: 11_837_936}  # kimm's, = timm's


@pytest.mark.parametrize("variant,params", [("small", 3_774_024), ("medium", 9_715_512)])
def test_mobilenet_v4_has_the_papers_parameters_and_only_relu(variant, params):
    """With timm's 1280-wide head and 1000 classes, the counts timm gives (3.77 M, 9.72 M): the blocks are the paper's."""
    import keras

    from kclassify.models.mobilenet_v4 import MobileNetV4

    model = MobileNetV4(variant, (64, 64, 3), include_top=True)
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == params
    activations = {type(layer).__name__ for layer in model.layers if "relu" in layer.name or "act" in layer.name}
    assert activations == {"ReLU"}  # no hard-swish, no squeeze-excite: every op quantizes
    assert not any(isinstance(layer, keras.layers.Multiply) for layer in model.layers)


@pytest.mark.parametrize("i", [0, pytest.param(4, marks=pytest.mark.slow)])
def test_efficientnet_lite_is_kimms_model_with_relu6_and_no_squeeze_excite(i):
    import keras

    from kclassify.models import efficientnet_lite

    base = getattr(efficientnet_lite, f"EfficientNetLite{i}")((32, 32, 3))
    assert base.count_params() == LITE_HEADLESS[i]
    assert "kimm" not in type(base).__module__  # a plain functional model: loads without kimm
    assert not any(isinstance(layer, keras.layers.Multiply) for layer in base.layers)


def _trained_step(name: str, size: int = 32):
    import keras

    from kclassify.models.build import adapt_preprocessing

    model = build_classifier(name, 3, size)
    x = np.stack([make_image(k % 3, size, seed=k) for k in range(12)]).astype("float32")
    y = keras.utils.to_categorical(np.arange(12) % 3, 3)
    adapt_preprocessing(model, x)
    # eager: the same step without tracing it (tracing EfficientNet-Lite0's training step took 44 s of this test's 60)
    model.compile(optimizer="adam", loss="categorical_crossentropy", run_eagerly=True)
    before = [w.copy() for w in model.get_weights()]
    model.fit(x, y, batch_size=6, epochs=1, verbose=0)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # it learned something
    return model, x


@pytest.mark.slow
@pytest.mark.parametrize("name", ["efficientnet_lite0", "mobilenet_v4_conv_small",
                                  pytest.param("mobilenet_v4_conv_medium", marks=pytest.mark.slow)])
def test_trains_round_trips_and_exports_full_int8_with_every_op_on_xnnpack(name, tmp_path):
    from kclassify.export.tflite import convert, float_ops, for_tflite, full_integer_options, io_types
    from kclassify.inference.backends import TFLitePredictor

    model, x = _trained_step(name)
    path = tmp_path / "model.keras"
    model.save(path)
    # loaded in a process where kimm cannot be imported: the saved file needs Keras only
    code = ("import sys; sys.modules['kimm'] = None; import numpy as np, keras; "
            f"m = keras.models.load_model({str(path)!r}); x = np.load({str(tmp_path / 'x.npy')!r}); "
            f"np.save({str(tmp_path / 'y.npy')!r}, m.predict(x, verbose=0))")
    np.save(tmp_path / "x.npy", x)
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), model.predict(x, verbose=0), atol=1e-5)

    data = convert(for_tflite(model, integer=True), 32, full_integer_options(x.astype(np.uint8)))  # as export does
    assert float_ops(data) == [] and io_types(data) == (["UINT8"], ["UINT8"])
    (tmp_path / "model_int8.tflite").write_bytes(data)
    # every backbone op runs on XNNPACK; only the head's uint8 softmax and the two boundary quantizations do
    # not, as in every kclassify int8 file (small_cnn's too)
    outside = TFLitePredictor(tmp_path / "model_int8.tflite", ["a", "b", "c"]).ops_outside_delegate()
    assert outside == {"QUANTIZE": 2, "SOFTMAX": 1}


@pytest.mark.slow
def test_efficientnet_lite_loads_a_local_weights_file_and_fails_offline_in_one_line(tmp_path, monkeypatch):
    import keras

    from kclassify.models.efficientnet_lite import EfficientNetLite0

    base = EfficientNetLite0((32, 32, 3))
    base.set_weights([np.random.default_rng(i).normal(size=w.shape).astype(w.dtype)
                      for i, w in enumerate(base.get_weights())])
    base.save_weights(tmp_path / "lite0.weights.h5")
    model = build_classifier("efficientnet_lite0", 2, 32, weights=str(tmp_path / "lite0.weights.h5"))
    loaded = model.get_layer("efficientnet_lite0").get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(loaded, base.get_weights()))

    def offline(fname=None, origin=None, *a, **k):
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(WeightsError) as err:
        build_classifier("efficientnet_lite0", 2, 32, weights="imagenet")
    message = str(err.value)
    assert "\n" not in message and "URL fetch failure on https://github.com/" in message
    assert "--weights none" in message
    with pytest.raises(WeightsError) as err:  # MobileNetV4's come from timm on the Hugging Face hub
        build_classifier("mobilenet_v4_conv_small", 2, 32, weights="imagenet")
    assert "\n" not in str(err.value) and "URL fetch failure on https://huggingface.co/timm/" in str(err.value)


def _write_safetensors(path, tensors: dict) -> None:
    """The safetensors layout by hand: 8-byte header length, JSON header, little-endian float32 data."""
    import json
    import struct

    header, blobs, offset = {}, [], 0
    for key, value in tensors.items():
        raw = np.ascontiguousarray(value, "<f4").tobytes()
        header[key] = {"dtype": "F32", "shape": list(value.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def _timm_state(variant: str) -> dict:
    """A state_dict shaped as timm's mobilenetv4_conv_<variant> (PyTorch layouts), random values."""
    from kclassify.models.mobilenet_v4 import VARIANTS, make_divisible

    rng = np.random.default_rng(0)
    state = {}

    def conv(name, out, cin, k, bn):
        state[f"{name}.weight"] = rng.normal(size=(out, cin, k, k)).astype("float32")
        for key in ("weight", "bias", "running_mean"):
            state[f"{bn}.{key}"] = rng.normal(size=out).astype("float32")
        state[f"{bn}.running_var"] = rng.uniform(0.5, 2, size=out).astype("float32")
        state[f"{bn}.num_batches_tracked"] = np.zeros((), "float32")

    conv("conv_stem", 32, 3, 3, "bn1")
    channels = 32
    for s, blocks in enumerate(VARIANTS[variant]):
        for i, (kind, out, _, ka, km, e) in enumerate(blocks):
            b = f"blocks.{s}.{i}"
            mid = make_divisible(channels * e)
            if kind == "cn":
                conv(f"{b}.conv", out, channels, ka, f"{b}.bn1")
            elif kind == "er":
                conv(f"{b}.conv_exp", mid, channels, ka, f"{b}.bn1")
                conv(f"{b}.conv_pwl", out, mid, 1, f"{b}.bn2")
            else:
                if ka:
                    conv(f"{b}.dw_start.conv", channels, 1, ka, f"{b}.dw_start.bn")
                conv(f"{b}.pw_exp.conv", mid, channels, 1, f"{b}.pw_exp.bn")
                if km:
                    conv(f"{b}.dw_mid.conv", mid, 1, km, f"{b}.dw_mid.bn")
                conv(f"{b}.pw_proj.conv", out, mid, 1, f"{b}.pw_proj.bn")
            channels = out
    conv("conv_head", 1280, 960, 1, "norm_head")
    state["classifier.weight"] = rng.normal(size=(1000, 1280)).astype("float32")
    state["classifier.bias"] = rng.normal(size=1000).astype("float32")
    return state


def test_mobilenet_v4_loads_timms_safetensors_onto_its_layers(tmp_path):
    from kclassify.models.mobilenet_v4 import MobileNetV4ConvSmall

    state = _timm_state("small")
    assert len(state) == 278 and len(_timm_state("medium")) == 464  # timm's state_dict key counts (timm 1.0.31)
    _write_safetensors(tmp_path / "mnv4.safetensors", state)
    model = build_classifier("mobilenet_v4_conv_small", 2, 32, weights=str(tmp_path / "mnv4.safetensors"))
    base = model.get_layer("mobilenet_v4_conv_small")
    # PyTorch (out, in, kh, kw) -> Keras (kh, kw, in, out); depthwise (c, 1, kh, kw) -> (kh, kw, c, 1)
    np.testing.assert_array_equal(base.get_layer("stem").kernel.numpy(), state["conv_stem.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(base.get_layer("blocks_2_0_dw_start").kernel.numpy(),
                                  state["blocks.2.0.dw_start.conv.weight"].transpose(2, 3, 0, 1))
    np.testing.assert_array_equal(base.get_layer("blocks_3_1_dw_mid_bn").moving_variance.numpy(),
                                  state["blocks.3.1.dw_mid.bn.running_var"])
    full = MobileNetV4ConvSmall((32, 32, 3), include_top=True, weights=str(tmp_path / "mnv4.safetensors"))
    np.testing.assert_array_equal(full.get_layer("classifier").kernel.numpy(), state["classifier.weight"].T)
    del state["blocks.3.5.pw_proj.bn.running_mean"]
    _write_safetensors(tmp_path / "broken.safetensors", state)
    with pytest.raises(WeightsError, match="does not fit backbone.*blocks.3.5.pw_proj.bn.running_mean"):
        build_classifier("mobilenet_v4_conv_small", 2, 32, weights=str(tmp_path / "broken.safetensors"))
