"""The phone's resize, emulated (kclassify.data.phone), against MediaPipe Tasks' ImageClassifier itself."""

from pathlib import Path

import numpy as np
import pytest

from conftest import COLOURS
from kclassify.data.phone import mediapipe_resize


def textured(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Photos of fine texture (1-3 px stripes of two class colours, noise): where antialiasing matters."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, height, width, 3), np.uint8)
    for i in range(n):
        a, b = rng.choice(3, 2, replace=False)
        stripes = np.repeat(rng.integers(0, 2, width), rng.integers(1, 4, width))[:width]
        colours = np.where(stripes[None, :, None] == 0, COLOURS[a], COLOURS[b])
        noise = rng.integers(-20, 20, (height, width, 3))
        out[i] = np.clip(colours + noise, 0, 255)
    return out


def test_the_emulation_is_opencvs_fixed_point_bilinear_corners_to_corners():
    """Hand-computed: 4 -> 2 pixels sample x = 0 and 2 (corners to corners, no half-pixel, no averaging);
    4 -> 3 samples x = 0, 4/3 and 8/3, whose 1/32 positions are 0, 43 (1 + 11/32) and 85 (2 + 21/32)."""
    row = np.array([0, 100, 200, 250], np.uint8)
    image = np.repeat(np.repeat(row[None, :, None], 3, axis=2), 4, axis=0)
    assert mediapipe_resize(image, 2)[0, :, 0].tolist() == [0, 200]
    # 100 + 100 * 11/32 = 134.375 -> 134; 200 + 50 * 21/32 = 232.8 -> 233
    assert mediapipe_resize(image, 3)[0, :, 0].tolist() == [0, 134, 233]
    up = mediapipe_resize(image[:1, :2], 4, 1)  # upscaling 2 -> 4 replicates the last pixel at the border
    assert up[0, :, 0].tolist() == [0, 50, 100, 100]
    with pytest.raises(ValueError, match="expected .H, W, 3. uint8"):
        mediapipe_resize(image.astype(np.float32), 2)


@pytest.mark.parametrize("name", ["model.tflite", "model_int8.tflite"])
def test_mediapipe_classifies_as_the_emulated_phone_path_does(tiny_export, name):
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    from kclassify.inference import load_predictor

    photos = textured(120, 72, 96)  # 6x the 16 px input: a large downscale, as a camera frame is
    options = vision.ImageClassifierOptions(
        base_options=BaseOptions(model_asset_path=str(tiny_export.folder / name)), max_results=1)
    with vision.ImageClassifier.create_from_options(options) as classifier:
        phone = [classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(p)))
                 .classifications[0].categories[0].index for p in photos]
    predictor = load_predictor(tiny_export.folder / name)
    emulated = predictor.predict(np.stack([mediapipe_resize(p, 16) for p in photos])).argmax(axis=1)
    ours = predictor.predict(photos).argmax(axis=1)  # kclassify's own (antialiased) resize
    assert np.mean(emulated == phone) >= 0.99  # measured: 1.0 for both files
    # measured 0.70 and 0.69: the two resizes differ on these photos, so the test can tell them apart
    assert np.mean(ours == phone) <= 0.8


def _striped_folder(root, per_class: int = 16, size: int = 64):
    """Three classes of 1 px stripes in two colours (red/green, green/blue, blue/red), 4x the 16 px input:
    antialiased, each class is its stripes' mean colour; sampled as the phone does, single stripes."""
    from PIL import Image

    rng = np.random.default_rng(3)
    for k, name in enumerate(("rg", "gb", "br")):
        (root / name).mkdir(parents=True)
        a, b = COLOURS[k], COLOURS[(k + 1) % 3]
        for i in range(per_class):
            stripes = (np.arange(size) + rng.integers(0, 2)) % 2
            image = np.where(stripes[None, :, None] == 0, a, b) + rng.integers(-15, 15, (size, size, 3))
            Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / name / f"{i:02d}.png")
    return root


def _mediapipe_accuracy(file, data, tests, labels) -> float:
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision
    from PIL import Image

    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(file)), max_results=1)
    with vision.ImageClassifier.create_from_options(options) as classifier:
        right = [classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB,
                                              data=np.asarray(Image.open(data / path).convert("RGB"))))
                 .classifications[0].categories[0].index == labels.index(label) for path, label in tests]
    return float(np.mean(right))


@pytest.mark.slow
def test_export_gates_each_tflite_file_on_what_mediapipe_scores_and_input_scale_passes_it(tmp_path):
    import json

    from conftest import TINY
    from kclassify import fit
    from kclassify.export import export

    # 39 test images: enough for the gate's McNemar test (measured: phone 0.436, p < 1e-4; with 12, p = 0.125)
    data = _striped_folder(tmp_path / "data", per_class=32)
    settings = {**TINY, "epochs": 6, "test_fraction": 0.4}
    run = fit(data=str(data), output=tmp_path / "run", verbose=0, **settings)
    result = export(run.run_dir, "tflite,tflite-int8,savedmodel", latency_runs=2)
    report = json.loads((run.run_dir / "export" / "export_report.json").read_text())
    rows = {f["format"]: f for f in report["formats"]}
    assert rows["savedmodel"]["phone_accuracy"] is None and rows["savedmodel"]["status"] == "ok"  # a server's file
    tests = [line.split(",") for line in (run.run_dir / "split.csv").read_text().splitlines()[1:]]
    tests = [(path, label) for path, label, split in tests if split == "test"]
    labels = (run.run_dir / "labels.txt").read_text().split()
    for name, file in (("tflite", "model.tflite"), ("tflite-int8", "model_int8.tflite")):
        row = rows[name]
        # the stripes fool the phone's resize: MediaPipe scores what export's phone column says
        assert row["phone_accuracy"] == pytest.approx(
            _mediapipe_accuracy(run.run_dir / "export" / f"rejected-{file}", data, tests, labels), abs=1e-4)
        assert row["accuracy"] == 1.0 and row["phone_accuracy"] < 0.9  # the stripes fool the phone's resize
        assert row["phone_drop"] == pytest.approx((report["keras"]["accuracy"] - row["phone_accuracy"]) * 100, abs=0.01)
        # the gate judges the phone: kclassify's own accuracy passes, the file does not ship
        assert row["accuracy_drop"] <= 1 and row["status"] == "rejected" and "as a phone feeds it" in row["message"]
        assert row["phone_p"] < 0.05  # more than the test images' noise
        assert not (run.run_dir / "export" / file).exists()
    assert not result.ok
    # evaluate --preprocess mediapipe: the run's own model through the phone's resize, in its own report
    from kclassify.evaluation import evaluate

    metrics_before = (run.run_dir / "metrics.json").read_text()
    phone = evaluate(run.run_dir, preprocess="mediapipe")
    assert phone.folder == run.run_dir / "evaluation-mediapipe" and phone.report["model"]["resize"] == "mediapipe"
    assert phone.headline["accuracy"] == pytest.approx(rows["tflite"]["phone_accuracy"], abs=1e-4)
    assert (run.run_dir / "metrics.json").read_text() == metrics_before  # the run's figures stay kclassify's
    assert "photos resized: mediapipe" in (phone.folder / "report.html").read_text()

    # the model takes the photos' own 64 px and averages 4x4 blocks inside: the phone's resize no longer matters
    run = fit(data=str(data), output=tmp_path / "scaled", verbose=0, **{**settings, "input_scale": 4})
    result = export(run.run_dir, "tflite,tflite-int8", latency_runs=2)
    for f in result.formats:
        assert f.status == "ok" and f.accuracy == 1.0 and f.phone_accuracy == 1.0, f
        assert _mediapipe_accuracy(run.run_dir / "export" / Path(f.file).name, data, tests, labels) == 1.0


def test_phone_resize_in_the_pipeline_is_the_emulation_and_an_unknown_one_says_the_choices(tmp_path):
    from PIL import Image

    from kclassify.data.pipeline import decode_files
    from kclassify.errors import ConfigError

    photos = textured(3, 40, 52)
    paths = []
    for i, p in enumerate(photos):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(p).save(paths[-1])
    phone = decode_files(paths, 16, resize="mediapipe")
    assert np.array_equal(phone, np.stack([mediapipe_resize(p, 16) for p in photos]))
    assert np.abs(decode_files(paths, 16).astype(int) - phone).max() > 40  # the antialiased resize is another
    with pytest.raises(ConfigError, match="Did you mean 'mediapipe'"):
        decode_files(paths, 16, resize="mediapip")


def test_mixed_resizes_draws_a_share_of_phone_images_afresh_each_epoch():
    import tensorflow as tf

    from kclassify.data.pipeline import mixed_resizes

    n = 400
    plain = tf.data.Dataset.from_tensor_slices((np.zeros((n, 2, 2, 3), np.uint8), np.arange(n)))
    phone = tf.data.Dataset.from_tensor_slices((np.full((n, 2, 2, 3), 255, np.uint8), np.arange(n)))
    assert mixed_resizes(plain, phone, 0.0) is plain
    mixed = mixed_resizes(plain, phone, 0.25, seed=3)
    epochs = [np.array([int(x[0, 0, 0]) == 255 for x, _ in mixed]) for _ in range(2)]
    labels = [int(y) for _, y in mixed]
    assert labels == list(range(n))  # images stay with their labels, in order
    assert all(0.18 < e.mean() < 0.32 for e in epochs), [e.mean() for e in epochs]
    assert (epochs[0] != epochs[1]).mean() > 0.2  # drawn afresh: not the same images every epoch
    assert all(int(x[0, 0, 0]) == 255 for x, _ in mixed_resizes(plain, phone, 1.0))


def test_input_scale_averages_blocks_before_the_backbone_and_defaults_to_the_photos_size():
    from kclassify.config import Config
    from kclassify.errors import ConfigError
    from kclassify.models.build import build_classifier
    from kclassify.training.recipe import input_size, resolve

    model = build_classifier("small_cnn", 3, 16, input_scale=2)
    assert model.input_shape == (None, 32, 32, 3)
    layer = model.get_layer("downsample")
    x = np.arange(2 * 32 * 32 * 3, dtype=np.float32).reshape(2, 32, 32, 3) % 251
    expected = x.reshape(2, 16, 2, 16, 2, 3).mean(axis=(2, 4))  # each 2x2 block's mean, by hand
    assert np.allclose(layer(x).numpy(), expected, atol=1e-4)
    assert build_classifier("small_cnn", 3, 16).input_shape == (None, 16, 16, 3)  # the function's own default: 1
    with pytest.raises(ConfigError, match="at least 1"):
        build_classifier("small_cnn", 3, 16, input_scale=0)
    # the settings' default: 2 for photos at least twice the size, within 256 px; 2 where their size is unknown
    from kclassify.data.phone import typical_side
    from kclassify.models.build import default_input_scale

    assert [default_input_scale(32, 150), default_input_scale(64, 150), default_input_scale(64, 4000)] == [2, 2, 2]
    assert [default_input_scale(224, 4000), default_input_scale(32, 20), default_input_scale(64)] == [1, 1, 2]
    assert typical_side("builtin:digits") == 8.0 and typical_side("tfds:mnist") is None
    assert input_size(Config()) == 64 and resolve(Config()).model.input_scale == 1  # small_cnn's 64 px on 8 px digits
    assert input_size(Config().replace(data="tfds:mnist", image_size=128)) == 256
    assert input_size(Config().replace(data="tfds:mnist", backbone="mobilenet_v2")) == 224
    assert input_size(Config().replace(image_size=32, input_scale=3)) == 96


@pytest.mark.slow
def test_a_fit_with_the_defaults_doubles_the_input_and_mixes_phone_resizes(tmp_path):
    import yaml

    from conftest import TINY, write_class_folder
    from kclassify import fit
    from kclassify.inference import load_predictor

    data = write_class_folder(tmp_path / "data", per_class=12, size=40)  # 40 px photos: twice 16 px and more
    settings = {k: v for k, v in TINY.items() if k not in ("input_scale", "phone_resize")}
    run = fit(data=str(data), output=tmp_path / "run", verbose=0, **settings)
    config = yaml.safe_load((run.run_dir / "config.yaml").read_text())
    assert config["model"]["input_scale"] == 2 and config["data"]["phone_resize"] == 0.5  # resolved and kept
    assert load_predictor(run.run_dir).image_size == 32  # a 32 px input for a 16 px backbone
    assert run.metrics["test"]["accuracy"] == 1.0  # separable colours: a broken pipeline fails here


def test_the_phone_gate_rejects_drops_beyond_the_test_images_noise():
    from types import SimpleNamespace

    from kclassify.export.export import FormatReport, _gate_reasons, _score_phone

    fmt = SimpleNamespace(float32=False)
    y = np.array([0] * 100 + [1] * 100)
    report = FormatReport("tflite-int8", None, "ok", accuracy=1.0, accuracy_drop=0.0, agreement=1.0)
    phone = y.copy()
    phone[:3] = 1  # 3 photos the phone gets wrong: 1.5 points, a McNemar p of 2 * 0.5 ** 3
    _score_phone(report, y, phone, y, 1.0)
    assert report.phone_drop == pytest.approx(1.5) and report.phone_p == pytest.approx(0.25)
    assert _gate_reasons(report, fmt, 1.0) == []  # over 1 point, within the noise: ships
    phone[:10] = 1  # 10 of them: 5 points, p = 2 / 1024
    _score_phone(report, y, phone, y, 1.0)
    assert report.phone_p == pytest.approx(2 / 1024)
    [reason] = _gate_reasons(report, fmt, 1.0)
    assert "5.00 points below" in reason and "McNemar p = 0.002" in reason
    assert _gate_reasons(report, fmt, 6.0) == []  # within --max-accuracy-drop


def test_a_jpeg_decodes_to_pillows_pixels(tmp_path):
    """The accurate DCT: TensorFlow's default (fast) one moves pixels, which a phone's resize then aliases."""
    import tensorflow as tf
    from PIL import Image

    from kclassify.data.pipeline import decode_full

    photo = textured(1, 48, 64, seed=5)[0]
    Image.fromarray(photo).save(tmp_path / "photo.jpg", quality=80)
    data = tf.io.read_file(str(tmp_path / "photo.jpg"))
    pillow = np.asarray(Image.open(tmp_path / "photo.jpg").convert("RGB"))
    assert np.array_equal(decode_full(data).numpy(), pillow)
    assert not np.array_equal(tf.io.decode_image(data, channels=3).numpy(), pillow)  # the fast DCT differs
    Image.fromarray(photo).save(tmp_path / "photo.png")  # other formats as before
    assert np.array_equal(decode_full(tf.io.read_file(str(tmp_path / "photo.png"))).numpy(), photo)
