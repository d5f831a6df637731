"""Model cost: parameters and single-image latency through LiteRT (TensorFlow as the fallback)."""

import pytest

from kclassify.models.build import build_classifier
from kclassify.models import profile


@pytest.fixture(scope="module")
def model():
    return build_classifier("small_cnn", 3, 16)


def test_parameter_count_counts_every_weight(model):
    assert profile.parameter_count(model) == sum(int(w.numpy().size) for w in model.weights)


def test_latency_through_litert(model):
    lat = profile.measure_latency(model, runs=5)
    assert lat.backend == "litert" and lat.threads == 1 and lat.runs == 5
    assert 0 < lat.ms < 1000


def test_latency_falls_back_to_tensorflow_and_says_so(model, monkeypatch, caplog):
    def no_litert(*args, **kwargs):
        raise ImportError("No module named 'ai_edge_litert'")

    monkeypatch.setattr(profile, "_litert_runner", no_litert)
    lat = profile.measure_latency(model, runs=5)
    assert lat.backend == "tensorflow" and 0 < lat.ms < 1000
    assert "timing the TensorFlow model instead" in caplog.text
