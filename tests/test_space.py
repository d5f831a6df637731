"""Search-space files: every shipped one loads; bad entries say which entry and why."""

from pathlib import Path

import pytest

from kclassify.errors import ConfigError
from kclassify.tuning.space import SHIPPED, load_space, to_hyperparameters

SPACES = sorted(SHIPPED.glob("*.yaml"))


def test_the_three_spaces_ship():
    assert {p.stem for p in SPACES} >= {"default", "mobile", "transfer"}


@pytest.mark.parametrize("path", SPACES, ids=[p.stem for p in SPACES])
def test_every_shipped_space_loads_into_keras_tuner(path):
    space = load_space(path)
    hp = to_hyperparameters(space)
    assert {p.name for p in hp.space} == set(space.names)
    assert load_space(path.stem).entries == space.entries  # by name too


def test_default_space_types_and_condition():
    space = {e.name: e for e in load_space("default").entries}
    assert space["lr"].sampling == "log" and space["batch_size"].values == (16, 32, 64)
    assert space["momentum"].when == {"optimizer": ("momentum", "nesterov")}
    hp = to_hyperparameters(load_space("default"))
    assert hp.is_active("optimizer") and isinstance(hp.get("batch_size"), int)


@pytest.mark.parametrize("text,match", [
    ("learning_rate: {type: float, min: 0.001, max: 0.1}", "entry 'learning_rate': not a setting of kclassify fit"),
    ("lr: {type: gaussian, min: 0.1, max: 1}", "entry 'lr': unknown type 'gaussian'"),
    ("lr: {type: float, min: 0.1, max: 0.01}", "entry 'lr': min must be below max"),
    ("lr: {type: float, min: 0, max: 0.1, sampling: log}", "entry 'lr': log sampling needs min > 0"),
    ("dropout: {type: float, min: 0.0, max: 1.5}", "entry 'dropout': value 1.5 is not valid for fit"),
    ("optimizer: {type: choice, values: [adam, adamm]}", "entry 'optimizer': value 'adamm' is not valid.*Did you mean 'adam'"),
    ("batch_size: {type: choice, values: []}", "entry 'batch_size': a choice needs a non-empty list"),
    ("lr: {type: float, min: 0.001, max: 0.1, steps: 2}", r"entry 'lr': unknown key\(s\) \['steps'\]"),
    ("momentum: {type: float, min: 0.8, max: 0.9, when: {optimizer: [sgd]}}", "'when' refers to 'optimizer'"),
    ("epochs: 5", "entry 'epochs': expected a mapping with a 'type'"),
])
def test_bad_entries_name_the_entry_and_the_reason(tmp_path, text, match):
    path = tmp_path / "space.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError, match=match):
        load_space(path)


def test_missing_space_lists_the_shipped_ones(tmp_path):
    with pytest.raises(ConfigError, match="one of: default, mobile, scratch, transfer"):
        load_space(tmp_path / "nope.yaml")
    assert isinstance(SHIPPED, Path)
