"""Export: every format converts and is checked by running the file; SavedModel speaks TF Serving; the gate bites."""

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import make_image
from kclassify.cli import main
from kclassify.errors import ConfigError, ExportError
from kclassify.export import FORMATS, parse_formats
from kclassify.export.formats import Format

LABELS = ["cat", "dog", "fox"]


def test_every_format_exports_and_agrees_with_keras(tiny_export):
    report = json.loads((tiny_export.folder / "export_report.json").read_text())
    assert report["ok"] and report["split"] == "test" and report["images"] == tiny_export.images > 0
    rows = {f["format"]: f for f in report["formats"]}
    assert list(rows) == list(FORMATS)
    for name, row in rows.items():
        assert row["status"] == "ok", row
        assert (tiny_export.folder / FORMATS[name].filename).exists()
        assert row["accuracy"] == report["keras"]["accuracy"] == 1.0  # separable colours
        assert row["agreement"] == 1.0 and row["accuracy_drop"] == 0.0 and row["latency_ms"] > 0
    assert rows["tflite"]["size_vs_tflite"] == 1.0
    assert rows["tflite-fp16"]["size_vs_tflite"] < 0.6  # float16 weights: half
    assert rows["tflite-int8"]["size_vs_tflite"] < 0.35 and rows["tflite-dynamic"]["size_vs_tflite"] < 0.35
    assert report["fastest_tflite"] in rows and report["fastest_tflite"].startswith("tflite")
    assert (tiny_export.folder / "labels.txt").read_text().split() == LABELS


def test_int8_file_is_fully_integer_and_the_check_catches_float_kernels(tiny_export):
    from kclassify.export.tflite import check_integer, float_ops

    int8 = (tiny_export.folder / "model_int8.tflite").read_bytes()
    assert float_ops(int8) == []
    check_integer(int8, "model_int8.tflite")
    float_io = _int8_with_float_io(tiny_export)  # integer inside, float at both ends: not what phones feed
    assert float_ops(float_io) == []
    with pytest.raises(ExportError, match=r"takes \['FLOAT32'\] and returns \['FLOAT32'\]"):
        check_integer(float_io, "float_io.tflite")
    for name in ("model.tflite", "model_dynamic.tflite"):  # float kernels: must be caught
        data = (tiny_export.folder / name).read_bytes()
        assert any(op.startswith("CONV_2D(") for op in float_ops(data))
        with pytest.raises(ExportError, match=r"not fully integer: \d+ operator\(s\) still compute in float"):
            check_integer(data, name)


def _int8_with_float_io(tiny_export) -> bytes:
    import tensorflow as tf

    from kclassify.export.tflite import convert, full_integer_options

    model = _tiny_model(tiny_export)
    options = full_integer_options(np.stack([make_image(k % 3, 16, seed=k) for k in range(6)]))
    options.update(inference_input_type=tf.float32, inference_output_type=tf.float32)
    return convert(model, 16, options)


def _tiny_model(tiny_export):
    from kclassify.inference import load_predictor

    return load_predictor(tiny_export.settings["run"]).model


def _jpeg(k: int, size: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(make_image(k, size, seed=77)).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def test_savedmodel_signatures_take_any_size_and_encoded_bytes(tiny_export):
    import tensorflow as tf

    loaded = tf.saved_model.load(str(tiny_export.folder / "savedmodel" / "1"))
    assert set(loaded.signatures) == {"serving_default", "serving_images"}
    images = np.stack([make_image(k, 41, seed=3) for k in range(3)])  # not the model's 16 px
    out = loaded.signatures["serving_images"](images=tf.constant(images))
    assert [s.decode() for s in out["label"].numpy()] == LABELS
    np.testing.assert_allclose(out["score"].numpy(), out["probabilities"].numpy().max(1))
    jpegs = tf.constant([_jpeg(k, size) for k, size in ((2, 30), (0, 64), (1, 16))])
    out = loaded.signatures["serving_default"](image_bytes=jpegs)
    assert [s.decode() for s in out["label"].numpy()] == ["fox", "cat", "dog"]


def test_a_tf_serving_rest_client_works_unchanged(tiny_export):
    """docs/tf-serving.md's request and response, through TF Serving's JSON mapping."""
    import tensorflow as tf

    from kclassify.inference.tfserving import rest_predict

    loaded = tf.saved_model.load(str(tiny_export.folder / "savedmodel" / "1"))
    body = json.loads(json.dumps({"instances": [{"b64": base64.b64encode(_jpeg(1, 40)).decode()},
                                                {"b64": base64.b64encode(_jpeg(2, 24)).decode()}]}))
    status, doc = rest_predict(loaded.signatures, body)
    assert status == 200 and list(doc) == ["predictions"] and len(doc["predictions"]) == 2
    first = doc["predictions"][0]
    assert set(first) == {"label", "score", "probabilities"}
    assert first["label"] == "dog" and doc["predictions"][1]["label"] == "fox"
    assert len(first["probabilities"]) == 3 and first["score"] == max(first["probabilities"])
    json.dumps(doc, allow_nan=False)  # plain JSON
    status, doc = rest_predict(loaded.signatures, {"signature_name": "serving_images",
                                                    "instances": [make_image(0, 20).tolist()]})
    assert status == 200 and doc["predictions"][0]["label"] == "cat"
    status, doc = rest_predict(loaded.signatures, {"inputs": {"image_bytes": [{"b64": base64.b64encode(
        _jpeg(0, 16)).decode()}]}})
    assert status == 200 and doc["outputs"]["label"] == ["cat"]
    bad = {
        "no key": {"signature_name": "serving_default"},
        "not base64": {"instances": [{"b64": "%%%"}]},
        "not an image": {"instances": [{"b64": base64.b64encode(b"hello").decode()}]},
        "unknown signature": {"signature_name": "nope", "instances": [1]},
        "out of range": {"signature_name": "serving_images", "instances": [[[[300, 0, 0]]]]},
    }
    for case, body in bad.items():
        status, doc = rest_predict(loaded.signatures, body)
        assert status == 400 and set(doc) == {"error"} and doc["error"], case
    assert "Unknown image file format" in rest_predict(loaded.signatures, bad["not an image"])[1]["error"]


@pytest.mark.parametrize("name", ["model.tflite", "model_int8.tflite"])
def test_mediapipe_image_classifier_reads_our_metadata(tiny_export, name):
    import mediapipe as mp  # a test dependency (.[dev]): the real ImageClassifier an Android app runs
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.ImageClassifierOptions(
        base_options=BaseOptions(model_asset_path=str(tiny_export.folder / name)), max_results=3)
    with vision.ImageClassifier.create_from_options(options) as classifier:
        for k, label in enumerate(LABELS):
            image = mp.Image(image_format=mp.ImageFormat.SRGB, data=make_image(k, 16, seed=11))
            top = classifier.classify(image).classifications[0].categories[0]
            assert top.category_name == label and top.score > 0.5


def _degraded_tflite(src, path):
    """The float32 TFLite writer, run on a copy of the model whose output bias always favours 'fox'."""
    import keras

    model = keras.models.clone_model(src.model)
    model.set_weights(src.model.get_weights())
    kernel, bias = model.get_layer("predictions").get_weights()
    model.get_layer("predictions").set_weights([kernel, bias + np.array([0.0, 0.0, 50.0], "float32")])
    FORMATS_ORIGINAL["tflite"].write(type(src)(**{**src.__dict__, "model": model}), path)


FORMATS_ORIGINAL = dict(FORMATS)


@pytest.mark.slow
def test_the_gate_rejects_a_degraded_file_and_keeps_the_shipped_one(tiny_run, tmp_path, monkeypatch, capsys):
    out = tmp_path / "export"
    assert main(["export", str(tiny_run), "--formats", "tflite", "--output", str(out)]) == 0
    shipped = (out / "model.tflite").read_bytes()
    capsys.readouterr()
    monkeypatch.setitem(FORMATS, "tflite", Format("tflite", "model.tflite", "degraded on purpose", True,
                                                  _degraded_tflite))
    code = main(["export", str(tiny_run), "--formats", "tflite,tflite-dynamic", "--output", str(out)])
    printed = capsys.readouterr().out
    assert code == 1
    assert (out / "model.tflite").read_bytes() == shipped  # the earlier, good file still ships
    assert (out / "rejected-model.tflite").is_file() and (out / "model_dynamic.tflite").is_file()
    assert not list(out.glob(".staging-*"))
    report = json.loads((out / "export_report.json").read_text())
    rows = {f["format"]: f for f in report["formats"]}
    assert not report["ok"] and rows["tflite"]["status"] == "rejected" and rows["tflite-dynamic"]["status"] == "ok"
    assert rows["tflite"]["accuracy_drop"] > 50 and "Kept as rejected-model.tflite" in rows["tflite"]["message"]
    assert "must give Keras' class" in rows["tflite"]["message"]  # float32: the agreement rule too
    assert "rejected" in printed and "tflite-dynamic" in printed
    # the page: the degraded file's disagreements, each with Keras' answer, the file's, and where Keras looks
    shown = rows["tflite"]["disagreements"]
    assert len(shown) == min(24, round((1 - rows["tflite"]["agreement"]) * report["images"])) > 0
    assert all(d["keras"] != d["file"] and d["true"] == d["keras"] for d in shown)  # Keras is right on tiny_run
    import subprocess

    from cdp import FLAGS, chromium_path

    dom = subprocess.run([chromium_path(), *FLAGS, "--dump-dom", (out / "export_report.html").resolve().as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    assert "Where tflite disagrees with Keras" in dom and "Where tflite-dynamic" not in dom
    assert dom.count('class="tile wide"') == len(shown) and dom.count("<figcaption>keras looks for ") == 2 * len(shown)


def test_a_format_that_fails_is_reported_and_the_others_ship(tiny_run, tmp_path, monkeypatch):
    from kclassify.export import export

    def broken(src, path):
        raise RuntimeError("converter exploded\nsecond line")

    monkeypatch.setitem(FORMATS, "tflite-fp16", Format("tflite-fp16", "model_fp16.tflite", "broken", False, broken))
    result = export(tiny_run, "tflite-fp16,savedmodel", output=tmp_path / "a", latency_runs=2)
    rows = {f.format: f for f in result.formats}
    assert rows["tflite-fp16"].status == "failed" and rows["tflite-fp16"].message == "RuntimeError: converter exploded"
    assert rows["savedmodel"].status == "ok" and not result.ok
    assert Path(rows["savedmodel"].file) == tmp_path / "a" / "savedmodel" / "1"
    again = export(tiny_run, "savedmodel", output=tmp_path / "a", latency_runs=2)  # TF Serving: a new version
    assert Path(again.formats[0].file) == tmp_path / "a" / "savedmodel" / "2" and (tmp_path / "a" / "savedmodel" / "1").is_dir()
    from kclassify.inference import load_predictor

    assert load_predictor(tmp_path / "a" / "savedmodel").path.name == "2"
    users = tmp_path / "my_assets"
    users.mkdir()
    (users / "labels.txt").write_text("mine")
    with pytest.raises(ExportError, match="kclassify did not export"):
        export(tiny_run, "tflite", output=users)
    assert (users / "labels.txt").read_text() == "mine"
    with pytest.raises(ConfigError, match="calibration_images must be at least 1"):
        export(tiny_run, "tflite-int8", output=tmp_path / "b", calibration_images=0)


def test_formats_are_parsed_from_the_table():
    assert parse_formats(None) == ["savedmodel", "tflite", "tflite-int8"]
    assert parse_formats("tflite-int8, savedmodel") == ["savedmodel", "tflite-int8"]
    assert parse_formats("all") == list(FORMATS)
    with pytest.raises(ConfigError, match="Did you mean 'tflite-int8'"):
        parse_formats("tflite-int9")


def test_export_refuses_an_unfinished_run_and_a_moved_dataset(tiny_run, tmp_path, capsys):
    import shutil

    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text("{}")
    assert main(["export", str(unfinished)]) == 2
    assert "not a finished run" in capsys.readouterr().err
    moved = tmp_path / "moved"
    shutil.copytree(tiny_run, moved, ignore=shutil.ignore_patterns("checkpoints", "logs"))
    text = (moved / "config.yaml").read_text().replace(str(tiny_run.parent / "data"), str(tmp_path / "gone"))
    (moved / "config.yaml").write_text(text)
    assert main(["export", str(moved), "--formats", "tflite"]) == 2
    assert "pass --data with its new location" in capsys.readouterr().err
    assert main(["export", str(moved), "--formats", "tflite", "--data", str(tiny_run.parent / "data")]) == 0
    assert (moved / "export" / "model.tflite").is_file()


@pytest.mark.slow
def test_int8_mobilenet_v3_keeps_hard_swish_on_xnnpack(tmp_path):
    """HARD_SWISH runs off XNNPACK in int8 (3x slower there); the rewrite computes the same and quantizes into ops it runs."""
    from kclassify.export.tflite import _is_hard_swish, convert, float_ops, full_integer_options, integer_friendly
    from kclassify.inference.backends import TFLitePredictor
    from kclassify.models.build import all_layers, build_classifier

    model = build_classifier("mobilenet_v3_small", 3, 32)
    x = np.stack([make_image(k % 3, 32, seed=k) for k in range(6)]).astype("float32")
    rewritten = integer_friendly(model)
    assert rewritten is not model
    np.testing.assert_allclose(rewritten.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    small = build_classifier("small_cnn", 3, 16)
    assert integer_friendly(small) is small  # nothing to rewrite: the same object
    calibration = np.stack([make_image(k % 3, 32, seed=100 + k) for k in range(12)])
    # The model as built converts to HARD_SWISH ops that leave XNNPACK in int8 (more than 5 of them, seen
    # when this test converted it too; docs/benchmarks.md, "Export formats"); the rewrite leaves none.
    assert sum(map(_is_hard_swish, all_layers(model))) > 5 and not any(map(_is_hard_swish, all_layers(rewritten)))
    data = convert(rewritten, 32, full_integer_options(calibration))
    assert float_ops(data) == []
    (tmp_path / "rewritten.tflite").write_bytes(data)
    outside = TFLitePredictor(tmp_path / "rewritten.tflite", ["a", "b", "c"]).ops_outside_delegate()
    assert "HARD_SWISH" not in outside


def _nested_torch_like_model():
    """raw pixels -> Rescaling(1/255) -> Normalization(ImageNet mean/std) -> [a nested backbone: ZeroPadding2D,
    a stride-2 3x3 Conv2D without bias, ReLU] -> pooling -> softmax: MobileNetV4's layout, small."""
    import keras
    from keras import layers

    from kclassify.models.build import IMAGENET_MEAN, IMAGENET_STD

    inner_in = keras.Input((None, None, 3))
    y = layers.ZeroPadding2D(1, name="stem_pad")(inner_in)
    y = layers.Conv2D(8, 3, 2, padding="valid", use_bias=False, name="stem")(y)
    backbone = keras.Model(inner_in, layers.ReLU()(y), name="backbone")
    inputs = keras.Input((16, 16, 3))
    x = layers.Rescaling(1 / 255, name="preprocess_scale")(inputs)
    x = layers.Normalization(mean=IMAGENET_MEAN, variance=np.square(IMAGENET_STD), name="preprocess")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(backbone(x))
    model = keras.Model(inputs, layers.Dense(3, activation="softmax")(x))
    model.get_layer("backbone").get_layer("stem").set_weights([np.random.default_rng(0).normal(size=(3, 3, 3, 8))])
    return model


def test_folding_the_input_normalization_keeps_every_output_border_included():
    """a * pixel + b before a convolution becomes pixel + b / a, the kernel times a: the same outputs, the
    zero-padded border included (padding raw pixels with zero instead would change the border's outputs)."""
    import keras

    from kclassify.models.fold import fold_input_normalization
    from kclassify.models.build import adapt_preprocessing, build_classifier

    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (4, 16, 16, 3)).astype("float32")
    model = _nested_torch_like_model()
    folded = fold_input_normalization(model)
    assert folded is not model
    kinds = [type(layer).__name__ for layer in folded.layers]
    assert "Normalization" not in kinds and "Rescaling" not in kinds and "Identity" in kinds
    # hand-computed: a = 1 / (255 std), b / a = -255 mean; the kernel's input channels times a
    from kclassify.models.build import IMAGENET_MEAN, IMAGENET_STD

    shift = folded.get_layer("preprocess_scale")
    np.testing.assert_allclose(shift.shift, -255 * np.asarray(IMAGENET_MEAN), rtol=1e-6)
    kernel = model.get_layer("backbone").get_layer("stem").get_weights()[0]
    np.testing.assert_allclose(folded.get_layer("backbone").get_layer("stem").get_weights()[0],
                               kernel / (255 * np.asarray(IMAGENET_STD))[None, None, :, None], rtol=1e-6)
    np.testing.assert_allclose(folded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    # the feature map itself, its padded first row and column included
    corner = keras.Model(model.input, model.get_layer("pool").input)
    folded_corner = keras.Model(folded.input, folded.get_layer("pool").input)
    np.testing.assert_allclose(folded_corner.predict(x, verbose=0), corner.predict(x, verbose=0), atol=1e-4)

    # kclassify's default backbone: a Normalization adapted on the training images, a same-padded stem
    small = build_classifier("small_cnn", 3, 16)
    images = rng.normal([200, 90, 30], [20, 40, 10], (32, 16, 16, 3)).clip(0, 255).astype("float32")
    import tensorflow as tf

    adapt_preprocessing(small, tf.data.Dataset.from_tensor_slices(images).batch(8))
    folded_small = fold_input_normalization(small)
    assert folded_small is not small
    np.testing.assert_allclose(folded_small.predict(images[:4], verbose=0), small.predict(images[:4], verbose=0),
                               atol=1e-5)


def test_a_normalization_the_fold_cannot_prove_exact_is_left_as_it_is():
    import keras
    from keras import layers

    from kclassify.models.fold import fold_input_normalization

    inputs = keras.Input((8, 8, 3))
    x = layers.Normalization(mean=[1.0, 2.0, 3.0], variance=[4.0, 4.0, 4.0])(inputs)
    two_uses = keras.Model(inputs, layers.Concatenate()([layers.Conv2D(2, 3, padding="same")(x), x]))  # used twice
    assert fold_input_normalization(two_uses) is two_uses
    inputs = keras.Input((8, 8, 3))
    x = layers.Normalization(mean=[1.0, 2.0, 3.0], variance=[4.0, 4.0, 4.0])(inputs)
    pooled_first = keras.Model(inputs, layers.Conv2D(2, 3)(layers.MaxPooling2D()(x)))  # max pooling is not linear
    assert fold_input_normalization(pooled_first) is pooled_first
    inputs = keras.Input((8, 8, 3))
    depthwise = keras.Model(inputs, layers.DepthwiseConv2D(3)(layers.Rescaling(2.0)(inputs)))
    assert fold_input_normalization(depthwise) is depthwise
    inputs = keras.Input((8, 8, 3))
    x = layers.Rescaling(2.0)(inputs)
    also_an_output = keras.Model(inputs, [layers.Conv2D(2, 3)(x), x])
    assert fold_input_normalization(also_an_output) is also_an_output
    inputs = keras.Input((8, 8, 3))
    shared = layers.Conv2D(3, 1)
    twice = keras.Model(inputs, shared(shared(layers.Rescaling(2.0)(inputs))))  # scaling it would change call 2
    assert fold_input_normalization(twice) is twice
    inputs = keras.Input((8, 8, 3))
    per_pixel = layers.Normalization(axis=(1, 2), mean=np.ones((8, 8)), variance=np.ones((8, 8)))(inputs)
    spatial = keras.Model(inputs, layers.Conv2D(2, 3)(per_pixel))
    assert fold_input_normalization(spatial) is spatial


@pytest.mark.slow
def test_mobilenet_v4s_tflite_files_start_with_one_addition_and_agree_with_keras(tmp_path):
    """Issue 27's int8 profile: MobileNetV4's per-channel mean/std cost 1.26 of 2.62 ms in int8; folded, one
    ADD (and the stem's PAD) runs before the first convolution, in float32 and int8 alike."""
    from kclassify.export.tflite import convert, float_ops, for_tflite, full_integer_options
    from kclassify.inference.backends import TFLitePredictor
    from kclassify.models.build import build_classifier

    model = build_classifier("mobilenet_v4_conv_small", 3, 32)
    x = np.random.default_rng(2).integers(0, 256, (8, 32, 32, 3)).astype("float32")
    before = [op.split("(")[0] for op in float_ops(convert(model, 32, {}))]
    data = convert(for_tflite(model), 32, {})
    ops = [op.split("(")[0] for op in float_ops(data)]
    assert before[:before.index("CONV_2D")] == ["MUL", "SUB", "MUL", "PAD"]  # what the fold removes
    assert ops[:ops.index("CONV_2D")] == ["ADD", "PAD"]
    (tmp_path / "model.tflite").write_bytes(data)
    predictor = TFLitePredictor(tmp_path / "model.tflite", ["a", "b", "c"])
    np.testing.assert_allclose(predictor.predict_batch(x.astype(np.uint8)), model.predict(x, verbose=0), atol=1e-5)
    int8 = convert(for_tflite(model, integer=True), 32, full_integer_options(x.astype(np.uint8)))
    assert float_ops(int8) == []
