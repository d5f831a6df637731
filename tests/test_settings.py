"""One settings object per command: the CLI's defaults are the library's, and the library refuses what the CLI does."""

import dataclasses
import io

import pytest

from kclassify.cli.parser import build_parser
from kclassify.errors import ConfigError
from kclassify.settings import (BACKENDS, PHONES, AuditSettings, CompareSettings, ExportSettings, PredictSettings,
                                ServeSettings)

FLAG_OF = {"output_format": "format"}


@pytest.mark.parametrize("command,settings,extra", [
    ("audit", AuditSettings, ["data"]),
    ("compare", CompareSettings, ["a", "b"]),
    ("export", ExportSettings, ["run"]),
    ("predict", PredictSettings, ["model", "image.png"]),
    ("serve", ServeSettings, ["model"]),
])
def test_the_cli_defaults_are_the_settings_defaults(command, settings, extra):
    args = vars(build_parser().parse_args([command, *extra]))
    shared = {f.name: f.default for f in dataclasses.fields(settings) if f.name in args}
    assert len(shared) >= 3, shared  # the flags do read these settings
    assert {k: args[k] for k in shared} == shared


@pytest.mark.parametrize("settings,bad,message", [
    (AuditSettings, {"near_dup_threshold": 65}, "--near-dup-threshold is a number of bits"),
    (ExportSettings, {"calibration_images": 0}, "calibration_images must be at least 1"),
    (ExportSettings, {"phone": "iphone"}, "phone must be one of mediapipe, none"),
    (CompareSettings, {"resamples": 99}, "--resamples must be at least 100"),
    (CompareSettings, {"split": "dev"}, "--split must be one of"),
    (PredictSettings, {"top_k": 0}, "--top-k and --batch-size must be at least 1"),
    (ServeSettings, {"port": 70000, "workers": 0}, "--workers must be at least 1; received 0; --port must be 0-65535"),
])
def test_each_check_refuses_what_it_should(settings, bad, message):
    settings().check()  # the defaults pass
    with pytest.raises(ConfigError, match=message):
        settings(**bad).check()


def test_the_phone_choices_are_the_data_layers():
    from kclassify.data.phone import PHONE_RESIZES
    from kclassify.export.export import NO_PHONE

    assert PHONES == (*PHONE_RESIZES, NO_PHONE)


def test_the_library_refuses_before_loading_anything(tmp_path):
    """The checks the CLI makes before TensorFlow loads are the library's own (no run folder needed to see them)."""
    from kclassify.evaluation import compare, evaluate
    from kclassify.export import export
    from kclassify.inference.outputs import write_predictions

    with pytest.raises(ConfigError, match="--batch-size must be at least 1"):
        evaluate(tmp_path / "nowhere", batch_size=0)
    with pytest.raises(ConfigError, match="threads must be at least 1"):
        export(tmp_path / "nowhere", "tflite", threads=0)
    with pytest.raises(ConfigError, match="--resamples must be at least 100"):
        compare(tmp_path / "a", tmp_path / "b", resamples=10)
    with pytest.raises(ConfigError, match="--top-k"):
        write_predictions(io.StringIO(), [], None, 0)


def test_the_backend_choices_are_the_serving_layers():
    from kclassify.serving.model import BACKENDS as SERVED

    assert BACKENDS == tuple(SERVED)
