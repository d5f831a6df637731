"""Grad-CAM: the heat is where the class is decided; overlays are PNGs; models without gradients are refused."""

import io

import numpy as np
import pytest
from PIL import Image

from conftest import TINY

SIZE = 32
YELLOW, CYAN = (250, 230, 40), (40, 230, 250)  # as bright as each other
QUARTERS = ("top_left", "top_right", "bottom_left", "bottom_right")


def patch_image(corner: str, seed: int, colour=YELLOW, size: int = SIZE) -> np.ndarray:
    """Grey noise with a patch of ``colour`` on ~a third of the side in ``corner``."""
    rng = np.random.default_rng(seed)
    image = rng.integers(40, 120, (size, size, 3)).astype(np.uint8)
    patch = size * 10 // 32
    rows = slice(0, patch) if corner.startswith("top") else slice(size - patch, size)
    cols = slice(0, patch) if corner.endswith("left") else slice(size - patch, size)
    image[rows, cols] = colour
    return image


def corner_image(corner: str, seed: int) -> np.ndarray:
    """Grey noise with a yellow patch in one corner: the corner is the class, the rest is noise."""
    return patch_image(corner, seed)


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


def _quarter_means(heat: np.ndarray) -> dict[str, float]:
    h, w = heat.shape
    top, bottom, left, right = slice(0, h // 2), slice((h + 1) // 2, h), slice(0, w // 2), slice((w + 1) // 2, w)
    return {"top_left": float(heat[top, left].mean()), "top_right": float(heat[top, right].mean()),
            "bottom_left": float(heat[bottom, left].mean()), "bottom_right": float(heat[bottom, right].mean())}


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
            means = _quarter_means(heat)
            assert means[corner] > means[other], heat.round(2)


@pytest.mark.slow
def test_a_mobile_backbone_looks_at_the_patch_whose_colour_is_the_class(tmp_path, monkeypatch):
    """MobileNetV3Small from scratch at 128 px: a 4x4 last feature map whose every cell sees the whole image.

    The class is the patch's colour and its corner is random: the evidence is the patch, wherever it is (with
    the corner as the class, a two-class model may decide by where the patch is *not*, and Grad-CAM rightly
    shows that). By chance the patch's quarter would be the hottest of the four for a quarter of the 40 new
    images; 18 or more: p = 0.005. How each mobile family does on this set: docs/benchmarks.md, "Where
    Grad-CAM looks, per backbone family".
    """
    monkeypatch.setenv("KCLASSIFY_CACHE_DIR", str(tmp_path / "cache"))
    from kclassify import fit
    from kclassify.inference import load_predictor
    from kclassify.inference.explain import gradcam, keras_model

    def drawn(seed: int, colour) -> tuple[np.ndarray, str]:
        corner = QUARTERS[np.random.default_rng(seed).integers(4)]
        return patch_image(corner, seed, colour, size), corner

    size, colours = 128, {"yellow": YELLOW, "cyan": CYAN}
    for k, (name, colour) in enumerate(colours.items()):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(40):
            Image.fromarray(drawn(1000 * (k + 1) + i, colour)[0]).save(tmp_path / "data" / name / f"{i}.png")
    result = fit(data=str(tmp_path / "data"), output=tmp_path / "run", backbone="mobilenet_v3_small", weights="none",
                 image_size=size, input_scale=1, epochs=15, batch_size=16, lr=1e-3, augment=0.0, phone_resize=0.0,
                 seed=1, bn_momentum=0.8, verbose=0)
    predictor = load_predictor(result.run_dir)
    model = keras_model(predictor)
    right, hottest, patch_heat, elsewhere = 0, 0, [], []
    for k, (name, colour) in enumerate(colours.items()):
        images, corners = zip(*(drawn(5000 + 100 * k + i, colour) for i in range(20)))
        truth = predictor.labels.index(name)
        heats, _ = gradcam(model, np.stack(images), [truth] * 20)  # the true class's heat, whatever it predicts
        right += int((np.argmax(model.predict(np.stack(images), verbose=0), axis=1) == truth).sum())
        for heat, corner in zip(heats, corners):
            means = _quarter_means(heat)
            others = [v for q, v in means.items() if q != corner]
            hottest += means[corner] > max(others)
            patch_heat.append(means[corner])
            elsewhere.append(np.mean(others))
    assert right >= 36, right  # it learnt the colours (all 40 here)
    assert hottest >= 18, hottest
    assert np.mean(patch_heat) > np.mean(elsewhere), (np.mean(patch_heat), np.mean(elsewhere))


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


def test_the_heat_is_the_log_probabilitys_and_survives_a_saturated_softmax():
    """The log-odds' gradient is the log-probability's divided by 1 - p: the same map, scaled to its peak, except
    where p nears 1 in float32 and the log-probability's gradient loses its digits, then vanishes (a confident
    mistake would show no heat)."""
    import keras
    import tensorflow as tf

    from kclassify.inference.explain import gradcam
    from kclassify.models.build import OUTPUT_LAYER, POOL_LAYER, build_classifier

    keras.utils.set_random_seed(3)
    model = build_classifier("small_cnn", 3, SIZE)
    output = model.get_layer(OUTPUT_LAYER)
    output.kernel.assign(output.kernel * 1e-3)  # probabilities far from 0 and 1, where float32 is exact enough
    images = np.stack([corner_image("top_left", i) for i in range(4)])
    heats, picked = gradcam(model, images)

    probe = keras.Model(model.inputs, [model.get_layer(POOL_LAYER).input, model.output])
    with tf.GradientTape() as tape:
        fmap, probs = probe(tf.constant(images, tf.float32))
        score = tf.math.log(tf.gather(probs, picked, axis=1, batch_dims=1))
    weights = tf.reduce_mean(tape.gradient(score, fmap), axis=(1, 2), keepdims=True)
    by_hand = tf.nn.relu(tf.reduce_sum(fmap * weights, axis=-1)).numpy()
    by_hand /= by_hand.max(axis=(1, 2), keepdims=True)
    assert np.array_equal(picked, np.argmax(probs.numpy(), axis=1)) and probs.numpy().max() < 0.99
    np.testing.assert_allclose(heats, by_hand, atol=1e-4)

    output.kernel.assign(output.kernel * 1e7)  # logits thousands apart: the softmax is exactly one-hot
    assert (model.predict(images, verbose=0).max(axis=1) == 1.0).all()
    saturated, picked = gradcam(model, images)
    # by hand in float64: small_cnn's head is the mean of the map, then the Dense, so the log-odds' gradient
    # weighs channel k by W[k, c] - sum over j != c of q_j W[k, j], q the softmax of the other classes' logits
    fmap = probe(tf.constant(images, tf.float32))[0].numpy().astype(np.float64)
    kernel, bias = (np.asarray(w, np.float64) for w in output.get_weights())
    logits = fmap.mean(axis=(1, 2)) @ kernel + bias
    expected = []
    for f, z, c in zip(fmap, logits, picked):
        others = np.delete(np.arange(len(z)), c)
        q = np.exp(z[others] - z[others].max())
        weights = kernel[:, c] - kernel[:, others] @ (q / q.sum())
        heat = np.maximum(f @ weights, 0)
        expected.append(heat / heat.max())
    np.testing.assert_allclose(saturated, np.stack(expected), atol=1e-4)


def test_a_keras_model_kclassify_did_not_build_is_refused():
    import keras

    from kclassify.errors import ModelLoadError
    from kclassify.inference.explain import keras_model

    inputs = keras.Input((SIZE, SIZE, 3))
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(keras.layers.Conv2D(4, 3)(inputs))

    class Loaded:
        kind, path = "keras", "other.keras"

    for head in (keras.layers.Dense(2, activation="sigmoid", name="predictions"), keras.layers.Dense(2)):
        Loaded.model = keras.Model(inputs, head(pooled))
        with pytest.raises(ModelLoadError, match="other.keras was not built by kclassify fit: Grad-CAM reads"):
            keras_model(Loaded())


def test_a_class_index_out_of_range_is_refused():
    import keras

    from kclassify.inference.explain import gradcam
    from kclassify.models.build import build_classifier

    keras.utils.set_random_seed(0)
    model = build_classifier("small_cnn", 2, SIZE)
    with pytest.raises(ValueError, match="one class index in 0-1 per image"):
        gradcam(model, np.stack([corner_image("top_left", 0)]), [2])


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
