"""Grad-CAM: the heat is where the class is decided; overlays are PNGs; models without gradients are refused."""

import io

import numpy as np
import pytest
from PIL import Image

from conftest import TINY

SIZE = 32
PATCH = 10


def corner_image(corner: str, seed: int) -> np.ndarray:
    """Grey noise with a bright patch in one corner: the corner is the class, the rest is noise."""
    rng = np.random.default_rng(seed)
    image = rng.integers(40, 120, (SIZE, SIZE, 3)).astype(np.uint8)
    rows = slice(0, PATCH) if corner == "top_left" else slice(SIZE - PATCH, SIZE)
    cols = slice(0, PATCH) if corner == "top_left" else slice(SIZE - PATCH, SIZE)
    image[rows, cols] = (250, 230, 40)
    return image


def write_corners(root, per_class: int = 24):
    for corner in ("top_left", "bottom_right"):
        (root / corner).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(corner_image(corner, 1000 * (corner == "top_left") + i)).save(root / corner / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def corner_run(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KCLASSIFY_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "kclassify-cache"))
        from kclassify import fit

        root = tmp_path_factory.mktemp("corners")
        data = write_corners(root / "data")
        settings = {**TINY, "image_size": SIZE, "epochs": 6}
        result = fit(data=str(data), output=root / "run", verbose=0, **settings)
    assert result.metrics["test"]["accuracy"] == 1.0, result.metrics
    return result.run_dir


def _quadrant_heat(heat: np.ndarray) -> tuple[float, float]:
    """Mean heat in the top-left quarter and in the bottom-right quarter (an odd side's middle in neither)."""
    h, w = heat.shape
    return float(heat[: h // 2, : w // 2].mean()), float(heat[(h + 1) // 2:, (w + 1) // 2:].mean())


@pytest.mark.slow
def test_the_heat_is_in_the_corner_that_decides_the_class(corner_run):
    from kclassify.inference import load_predictor
    from kclassify.inference.explain import gradcam, keras_model

    predictor = load_predictor(corner_run)
    model = keras_model(predictor)
    labels = predictor.labels
    for corner, other in (("top_left", "bottom_right"), ("bottom_right", "top_left")):
        images = np.stack([corner_image(corner, 5000 + i) for i in range(6)])
        heats, picked = gradcam(model, images)
        assert [labels[c] for c in picked] == [corner] * 6
        for heat in heats:
            top_left, bottom_right = _quadrant_heat(heat)
            assert (top_left > bottom_right) if corner == "top_left" else (bottom_right > top_left), heat.round(2)


@pytest.mark.slow
def test_overlays_are_pngs_of_the_image_size(corner_run):
    from kclassify.inference import load_predictor
    from kclassify.inference.explain import explain, png

    predictor = load_predictor(corner_run)
    images = np.stack([corner_image("top_left", 7)])
    (picture, klass), = explain(predictor, images)
    assert picture.shape == (SIZE, SIZE, 3) and predictor.labels[klass] == "top_left"
    assert not np.array_equal(picture, images[0])  # the heat is drawn over it
    with Image.open(io.BytesIO(png(picture))) as im:
        assert im.format == "PNG" and im.size == (SIZE, SIZE)


def test_a_mixed_precision_model_gets_the_same_heat_as_its_float32_copy():
    """A checkpoint saved while training in mixed bfloat16 computes its feature map in bfloat16."""
    import keras

    from kclassify.inference.explain import gradcam
    from kclassify.models.build import build_classifier

    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        mixed = build_classifier("small_cnn", 2, SIZE)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    plain = build_classifier("small_cnn", 2, SIZE)
    plain.set_weights(mixed.get_weights())
    images = np.stack([corner_image("top_left", i) for i in range(3)])
    (heat_mixed, picked_mixed), (heat_plain, picked_plain) = gradcam(mixed, images), gradcam(plain, images)
    assert np.isfinite(heat_mixed).all() and heat_mixed.max() == 1.0
    assert np.array_equal(picked_mixed, picked_plain)
    assert np.abs(heat_mixed - heat_plain).max() < 0.1  # bfloat16 rounding, not another map


def test_a_model_without_gradients_is_refused_with_what_to_pass():
    from kclassify.errors import ModelLoadError
    from kclassify.inference.explain import keras_model

    class TFLiteLike:
        kind, path, model = "tflite", "model_int8.tflite", None

    with pytest.raises(ModelLoadError, match="Grad-CAM needs the gradients of a Keras model. Pass the run folder"):
        keras_model(TFLiteLike())


@pytest.mark.slow
def test_predict_explain_writes_an_overlay_per_image(corner_run, tmp_path, capsys):
    from kclassify.cli import main

    images = tmp_path / "images"
    images.mkdir()
    for i, corner in enumerate(("top_left", "bottom_right")):
        Image.fromarray(corner_image(corner, 9000 + i)).save(images / f"{corner}.png")
    (images / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "heat"
    assert main(["predict", str(corner_run), str(images), "--explain", str(out)]) == 1  # the broken file
    assert sorted(p.name for p in out.iterdir()) == ["bottom_right.bottom_right.gradcam.png",
                                                    "top_left.top_left.gradcam.png"]
    with Image.open(out / "top_left.top_left.gradcam.png") as im:
        assert im.format == "PNG" and im.size == (SIZE, SIZE)
    capsys.readouterr()
    assert main(["predict", str(corner_run / "model.keras"), str(images / "top_left.png"), "--explain",
                 str(tmp_path / "k")]) == 0  # a .keras file has gradients too
    assert (tmp_path / "k" / "top_left.top_left.gradcam.png").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("backbone,size,grid", [("mobilenet_v3_small", 96, 3), ("efficientnet_lite0", 64, 2),
                                                ("mobilenet_v4_conv_small", 64, 2), ("resnet50", 64, 2)])
def test_every_family_gives_a_heat_map_over_its_last_feature_map(backbone, size, grid):
    """Keras applications, kimm's EfficientNet-Lite and our MobileNetV4: the pooled map is found the same way,
    preprocessing (and a 2x block mean) inside the model, at a resolution of the backbone's last stride."""
    import keras

    from kclassify.inference.explain import gradcam
    from kclassify.models.build import build_classifier

    keras.utils.set_random_seed(0)
    model = build_classifier(backbone, 3, size, input_scale=2)
    images = np.stack([corner_image("top_left", i) for i in range(2)])
    images = np.stack([np.asarray(Image.fromarray(im).resize((2 * size, 2 * size))) for im in images])
    heats, picked = gradcam(model, images)
    assert heats.shape == (2, grid, grid) and np.isfinite(heats).all() and picked.shape == (2,)
    assert heats.min() >= 0 and all(h.max() in (0.0, 1.0) for h in heats)  # scaled to its peak
