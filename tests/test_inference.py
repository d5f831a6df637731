"""The inference layer: every artifact behind one interface, decoding as training did, clear load errors."""

import json
import shutil

import numpy as np
import pytest

from conftest import make_image
from kclassify.errors import ModelLoadError
from kclassify.inference import detect_kind, load_predictor

LABELS = ["cat", "dog", "fox"]


def _images(size=16, n=2):
    """n images per class, labels in class order."""
    x = np.stack([make_image(k, size, seed=500 + 10 * k + i) for k in range(3) for i in range(n)])
    return x, np.repeat(np.arange(3), n)


@pytest.mark.parametrize("artifact", ["run", "keras", "savedmodel", "tflite", "tflite-int8"])
def test_every_artifact_gives_the_same_interface_and_classes(tiny_run, tiny_export, artifact):
    paths = {"run": tiny_run, "keras": tiny_run / "model.keras", "savedmodel": tiny_export.folder / "savedmodel",
             "tflite": tiny_export.folder / "model.tflite", "tflite-int8": tiny_export.folder / "model_int8.tflite"}
    predictor = load_predictor(paths[artifact])
    assert predictor.labels == LABELS and predictor.image_size == 16
    assert predictor.input_dtype == ("uint8" if artifact in ("savedmodel", "tflite-int8") else "float32")
    x, y = _images()
    probs = predictor.predict(x)
    assert probs.shape == (6, 3) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=0.02)  # uint8 outputs are dequantized to probabilities
    assert list(probs.argmax(1)) == list(y)
    reference = load_predictor(tiny_run).predict(x)
    tolerance = 0.05 if artifact == "tflite-int8" else 1e-4
    np.testing.assert_allclose(probs, reference, atol=tolerance)


def test_int8_file_takes_camera_pixels_unchanged(tiny_export):
    predictor = load_predictor(tiny_export.folder / "model_int8.tflite")
    detail = predictor.interpreter.get_input_details()[0]
    assert detail["dtype"] == np.uint8 and detail["quantization"] == (1.0, 0)


def test_predict_resizes_other_sizes_as_training_did(tiny_run):
    import tensorflow as tf

    from kclassify.data.pipeline import resize_image

    predictor = load_predictor(tiny_run)
    big, y = _images(size=40)
    small = resize_image(tf.constant(big), 16).numpy()
    np.testing.assert_allclose(predictor.predict(big), predictor.predict(small), atol=1e-6)
    assert list(predictor.predict(big).argmax(1)) == list(y)
    with pytest.raises(ValueError, match="expects uint8 RGB images"):
        predictor.predict(big.astype(np.float32))


def test_predict_files_reports_bad_files_and_predicts_the_rest(tiny_run, tmp_path):
    from PIL import Image

    files = []
    for k in range(3):
        files.append(tmp_path / f"good{k}.jpg")
        Image.fromarray(make_image(k, 30, seed=k)).save(files[-1], quality=95)
    (tmp_path / "text.jpg").write_text("not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    good = (tmp_path / "good0.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(good[: len(good) // 2])
    Image.fromarray(make_image(2, 30)).save(tmp_path / "rgba.png")  # decoded through the same checks
    paths = [files[0], tmp_path / "text.jpg", files[1], tmp_path / "missing.png", tmp_path / "empty.png",
             tmp_path / "cut.jpg", files[2], tmp_path / "rgba.png"]
    results = load_predictor(tiny_run).predict_files(paths, batch_size=2)
    assert [r.path for r in results] == [str(p) for p in paths]
    assert [r.ok for r in results] == [True, False, True, False, False, False, True, True]
    assert [int(r.probabilities.argmax()) for r in results if r.ok] == [0, 1, 2, 2]
    errors = {r.path.rsplit("/", 1)[-1]: r.error for r in results if not r.ok}
    assert errors["missing.png"] == "missing file" and "0 bytes" in errors["empty.png"]
    assert "Pillow" in errors["text.jpg"] and "decode" in errors["cut.jpg"]


def test_predict_files_sees_the_pixels_training_saw(tiny_run, tmp_path):
    """A file predicted through the inference layer equals the image the training pipeline fed, to the bit."""
    from PIL import Image

    from kclassify.data.pipeline import decoded

    path = tmp_path / "photo.jpg"
    Image.fromarray(make_image(1, 50, seed=9)).save(path, quality=80)
    predictor = load_predictor(tiny_run)
    (training_image, _), = decoded([str(path)], [0], 16, cache=None).as_numpy_iterator()
    from_file = predictor.predict_files([path])[0].probabilities
    np.testing.assert_array_equal(from_file, predictor.predict(training_image[None])[0])


def test_quantized_inputs_follow_metadata_normalization_and_tensor_scale():
    from kclassify.inference.backends import _dequantize, _quantize

    pixels = np.array([[0, 64, 128, 255]], np.uint8)
    ours = {"dtype": np.uint8, "quantization": (1.0, 0)}
    assert _quantize(pixels, ours) is pixels  # camera bytes straight in
    classic = {"dtype": np.uint8, "quantization": (1 / 128, 128)}  # a [-1, 1] model, mean/std 127.5
    q = _quantize(pixels, classic, ([127.5], [127.5]))
    assert q.dtype == np.uint8 and np.abs(q.astype(int) - pixels.astype(int)).max() <= 1
    signed = {"dtype": np.int8, "quantization": (1.0, -128)}
    assert _quantize(pixels, signed).tolist() == [[-128, -64, 0, 127]]
    floats = {"dtype": np.float32, "quantization": (0.0, 0)}
    np.testing.assert_allclose(_quantize(pixels, floats, ([127.5], [127.5])), [[-1, -0.4980392, 0.0039216, 1]],
                               atol=1e-6)
    out = {"dtype": np.uint8, "quantization": (1 / 256, 0)}
    np.testing.assert_allclose(_dequantize(np.array([0, 128, 255], np.uint8), out), [0, 0.5, 255 / 256])


def test_tflite_labels_travel_in_the_metadata(tiny_export, tmp_path):
    from kclassify.inference.tflite_metadata import read_metadata

    alone = tmp_path / "alone.tflite"  # no labels.txt beside it
    shutil.copy(tiny_export.folder / "model_int8.tflite", alone)
    assert load_predictor(alone).labels == LABELS
    meta = read_metadata(alone.read_bytes())
    assert meta.labels == LABELS and meta.label_file == "labels.txt" and meta.normalization is None
    assert read_metadata((tiny_export.folder / "model.tflite").read_bytes()).normalization == ([0.0], [1.0])
    # what a phone must do to a photo: the input size and the resize, for whoever opens the file
    assert meta.input_description.startswith("A 16x16 px photo: the whole photo resized to it, stretched")
    assert "antialiasing" in meta.input_description and "uint8" in meta.input_description


def test_load_errors_name_the_path_and_what_was_expected(tiny_run, tiny_export, tmp_path):
    cases = {
        tmp_path / "nothing": "does not exist",
        tmp_path / "empty_dir": "neither model.keras nor saved_model.pb",
        tmp_path / "notes.txt": "is a .txt file",
        tmp_path / "junk.keras": "not a Keras model",
        tmp_path / "junk.tflite": "not a TFLite model",
    }
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "junk.keras").write_bytes(b"PK\x03\x04 truncated zip")
    (tmp_path / "junk.tflite").write_bytes(b"\x00" * 64)
    for path, expected in cases.items():
        with pytest.raises(ModelLoadError, match=expected) as err:
            load_predictor(path)
        assert str(path) in str(err.value)
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(tiny_run / "model.keras", lone / "model.keras")  # a .keras without labels
    with pytest.raises(ModelLoadError, match="labels.txt"):
        load_predictor(lone / "model.keras")
    (lone / "labels.txt").write_text("a\nb\n")
    with pytest.raises(ModelLoadError, match="outputs 3 classes but its labels list 2"):
        load_predictor(lone / "model.keras")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text("{}")
    with pytest.raises(ModelLoadError, match="has not finished"):
        load_predictor(unfinished)
    foreign = tmp_path / "foreign_savedmodel"
    shutil.copytree(tiny_export.folder / "savedmodel" / "1", foreign)
    (foreign / "assets.extra" / "kclassify.json").unlink()
    with pytest.raises(ModelLoadError, match="kclassify export"):
        load_predictor(foreign)


def test_keras_files_load_in_safe_mode(tmp_path):
    """A .keras file whose Lambda layer would run code on load is refused, not executed."""
    import keras

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    keras.Model(inputs, outputs).save(tmp_path / "lambda.keras")
    (tmp_path / "labels.txt").write_text("a\nb\n")
    with pytest.raises(ModelLoadError, match="safe_mode|Lambda|unsafe|deserializ"):
        load_predictor(tmp_path / "lambda.keras")


def test_savedmodel_version_folders_follow_tf_serving(tiny_export):
    assert detect_kind(tiny_export.folder / "savedmodel") == "savedmodel"
    assert load_predictor(tiny_export.folder / "savedmodel").path.name == "1"


def test_fit_scores_the_test_split_through_the_inference_layer(tiny_run):
    """metrics.json is what the inference layer gives on split.csv's test images, recomputed by hand."""
    import csv

    from kclassify.data import prepare_data

    metrics = json.loads((tiny_run / "metrics.json").read_text())["test"]
    with open(tiny_run / "split.csv") as f:
        test = [r for r in csv.DictReader(f) if r["split"] == "test"]
    data = prepare_data(str(tiny_run.parent / "data"), split_file=tiny_run / "split.csv")
    paths, y = data.subset("test")
    assert len(paths) == len(test) > 0
    probs = np.stack([r.probabilities for r in load_predictor(tiny_run).predict_files(paths)])
    assert metrics["accuracy"] == pytest.approx(np.mean(probs.argmax(1) == np.asarray(y)))
    assert metrics["loss"] == pytest.approx(-np.mean(np.log(probs[np.arange(len(y)), y])), rel=1e-4)
