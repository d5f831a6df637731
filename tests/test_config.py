import pytest

from kclassify.config import Config, build_config, flatten_yaml, load_yaml, to_yaml
from kclassify.errors import ConfigError


def test_defaults_and_layers_later_wins():
    cfg = build_config({"lr": 0.1, "epochs": 3}, {"lr": "1e-3"})
    assert cfg.train.lr == 0.001 and cfg.train.epochs == 3
    assert isinstance(build_config({"batch_size": 8.0}).train.batch_size, int)


def test_unknown_key_names_it_and_suggests():
    with pytest.raises(ConfigError, match="Unknown setting 'learning_rat'"):
        build_config({"learning_rat": 0.1})
    with pytest.raises(ConfigError, match="Valid settings: .*batch_size"):
        build_config({"batchsize": 3})


@pytest.mark.parametrize("key,value,match", [
    ("optimizer", "adamm", "Did you mean 'adam'.*Valid values: sgd, momentum"),
    ("loss", "hinge", "Valid values: crossentropy, focal, mse"),
    ("epochs", 0, r"must lie in \[1, inf\]"),
    ("epochs", 2.5, "expects int"),
    ("dropout", 1.5, "must lie in"),
    ("deterministic", "maybe", "expects bool"),
])
def test_bad_values(key, value, match):
    with pytest.raises(ConfigError, match=match):
        build_config({key: value})


def test_fractions_must_leave_training_images():
    with pytest.raises(ConfigError, match="val_fraction \\+ test_fraction"):
        build_config({"val_fraction": 0.5, "test_fraction": 0.5})


def test_grouped_and_flat_yaml(tmp_path):
    grouped = tmp_path / "g.yaml"
    grouped.write_text("train:\n  lr: 0.01\nmodel:\n  dropout: 0.5\n")
    assert load_yaml(grouped) == {"lr": 0.01, "dropout": 0.5}
    with pytest.raises(ConfigError, match="unknown key train.lrr"):
        flatten_yaml({"train": {"lrr": 1}})
    tuned = tmp_path / "best_hparams.yaml"
    tuned.write_text("hparams:\n  optimizer: sgd\n  batch_size: 16\n")
    assert load_yaml(tuned) == {"optimizer": "sgd", "batch_size": 16}


def test_round_trip_through_yaml(tmp_path):
    cfg = build_config({"lr": 0.02, "clipnorm": 1.0, "data": "x"})
    path = tmp_path / "config.yaml"
    path.write_text(to_yaml(cfg))
    assert build_config(load_yaml(path)) == cfg
    assert Config().replace(epochs=2).train.epochs == 2


def test_layered_settings_follow_the_documented_precedence(tmp_path):
    from kclassify.config import layered

    (tmp_path / "run.yaml").write_text("train: {epochs: 5, lr: 0.01}\ndata: {image_size: 48}\n")
    (tmp_path / "best.yaml").write_text("hparams: {lr: 0.003, dropout: 0.4}\n")
    recommended = lambda spec: {"image_size": 32, "flip": "none"} if spec == "builtin:digits" else {}
    cfg = layered(tmp_path / "run.yaml", tmp_path / "best.yaml", {"dropout": 0.1}, recommended=recommended)
    assert (cfg.train.epochs, cfg.train.lr, cfg.model.dropout) == (5, 0.003, 0.1)  # flags > hparams > config
    assert cfg.data.image_size == 48 and cfg.data.flip == "none"  # config > recommendation > default
    other = layered(settings={"data": "some/folder"}, recommended=recommended)
    assert other.data.image_size is None and other.data.flip == "horizontal"  # no digits recommendation
