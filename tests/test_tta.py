"""Test-time augmentation: the views, their mean, and evaluate's side-by-side report."""

import json

import numpy as np
import pytest

from kclassify.errors import ConfigError
from kclassify.inference.predictor import Predictor
from kclassify.inference.tta import TTA_POLICIES, tta_views


class LeftRight(Predictor):
    """A stand-in model: P(class 0) is the share of brightness in the image's left half; it records its calls."""

    kind = "keras"

    def __init__(self):
        super().__init__(None, ["left", "right"], 8, "float32")
        self.calls = []

    def _model_call(self, images):
        self.calls.append(images.copy())
        left = images[:, :, :4].astype(float).sum(axis=(1, 2, 3))
        share = left / np.maximum(images.astype(float).sum(axis=(1, 2, 3)), 1)
        return np.stack([share, 1 - share], axis=1).astype(np.float32)


def _images():
    images = np.zeros((2, 8, 8, 3), np.uint8)
    images[0, :, :2] = 200  # bright on the far left
    images[1, 2:6, 2:6] = 90  # a centred square
    return images


def test_each_policy_makes_its_views():
    images = _images()
    for policy, (_, count) in TTA_POLICIES.items():
        views = tta_views(images, policy)
        assert len(views) == count and all(v.shape == images.shape and v.dtype == np.uint8 for v in views)
    original, mirrored, *crops = tta_views(images, "flip-crops")
    assert (original == images).all() and (mirrored == images[:, :, ::-1]).all()
    assert (crops[1][0, :, :2] == 200).all() and crops[1][0, :, 3:].max() == 0  # top-left crop: the stripe, wider
    assert np.abs(crops[0][1].astype(int) - images[1]).max() > 0  # the centre crop zooms in


def test_the_probabilities_are_the_mean_of_the_views():
    model, images = LeftRight(), _images()
    plain = model.predict_batch(images)
    assert len(model.calls) == 1 and plain[0, 0] == pytest.approx(1.0)
    model.with_tta("flip").calls.clear()
    both = model.predict_batch(images)
    assert len(model.calls) == 2 and (model.calls[1] == images[:, :, ::-1]).all()
    by_hand = (model._model_call(images) + model._model_call(images[:, :, ::-1].copy())) / 2
    assert both == pytest.approx(by_hand) and both[0] == pytest.approx([0.5, 0.5])
    assert model.describe()["tta"] == "flip" and "tta" not in LeftRight().describe()


def test_an_unknown_policy_is_refused_with_a_suggestion():
    with pytest.raises(ConfigError, match="--tta must be one of none, flip, flip-crops.*flip"):
        LeftRight().with_tta("flipp")


@pytest.mark.slow
def test_evaluate_reports_tta_beside_the_plain_score(tiny_run, tmp_path, capsys):
    from kclassify.cli import main
    from kclassify.evaluation import evaluate

    plain = evaluate(tiny_run, output=tmp_path / "plain")
    result = evaluate(tiny_run, output=tmp_path / "tta", tta="flip-crops")
    tta = result.report["tta"]
    assert tta["policy"] == "flip-crops" and tta["views"] == 7
    assert tta["plain"] == pytest.approx(plain.report["headline"], rel=1e-6)  # the same images, scored without it
    assert result.report["metrics"]["images"] == plain.report["metrics"]["images"]
    assert "Test-time augmentation <b>flip-crops</b>" in (result.folder / "report.html").read_text()
    assert not (tiny_run / "evaluation-tta-flip-crops").exists()  # an explicit --output
    image = next((tiny_run.parent / "data" / "cat").iterdir())
    assert main(["predict", str(tiny_run), str(image), "--tta", "flip", "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["tta"] == "flip" and row["predictions"][0]["label"] == "cat"
