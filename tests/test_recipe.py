"""fit and tune train one way; every searched setting changes what it says; searches start from fit's defaults."""

import csv
import json

import keras_tuner
import numpy as np
import pytest

from conftest import TINY
from kclassify.config import build_config, load_yaml
from kclassify.errors import ConfigError
from kclassify.models.build import backbone_of
from kclassify.training.recipe import compile_phase
from kclassify.tuning import load_space
from kclassify.tuning.space import SHIPPED

SPACES = sorted(p.stem for p in SHIPPED.glob("*.yaml"))


SAME_WAY = """
import json, sys
from kclassify import fit
from kclassify.config import build_config, load_yaml
from kclassify.tuning import load_space
from kclassify.tuning.hypermodel import ClassifierHyperModel
from kclassify.tuning.tune import tune

settings, out = json.loads(sys.argv[1]), sys.argv[2]
histories, real_fit = [], ClassifierHyperModel.fit
def recording_fit(self, *args, **kwargs):
    histories.append(real_fit(self, *args, **kwargs).history)
    return histories[-1]
ClassifierHyperModel.fit = recording_fit
base = build_config(settings)
tune(base, load_space("transfer"), algorithm="random", max_trials=1, output=out + "/search")
best = load_yaml(out + "/search/best_hparams.yaml")
files = {"config": out + "/search/config.yaml", "hparams": out + "/search/best_hparams.yaml"}
run = fit(files["config"], hparams=files["hparams"], output=out + "/refit", verbose=0)  # as fit --config --hparams
other = fit(files["config"], hparams=files["hparams"], finetune_lr_factor=0.2, output=out + "/other", verbose=0)
print(json.dumps({"best": best, "trial": histories[0], "fit": run.history, "other": other.history}))
"""


@pytest.mark.slow
def test_a_trial_trains_exactly_as_fit_does(tiny_run, tmp_path):
    """Two phases from a pretrained run: the search's first trial (fit's settings) and fit train identically.

    Run with op determinism (in a subprocess: it is process-wide), under which two fits of the same
    settings agree to the last bit; without it oneDNN's threaded sums differ by ~0.1 % anyway.
    """
    import os
    import subprocess
    import sys

    settings = {**TINY, "data": str(tiny_run.parent / "data"), "weights": str(tiny_run), "epochs": 3,
                "head_epochs": 1, "unfreeze": "0.5", "augment": 0.5, "label_smoothing": 0.0, "deterministic": True}
    done = subprocess.run([sys.executable, "-c", SAME_WAY, json.dumps(settings), str(tmp_path)], capture_output=True,
                          text=True, timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads(done.stdout.strip().splitlines()[-1])
    base = build_config(settings).flat()
    assert doc["best"] == {k: base[k] for k in doc["best"]}  # the first trial is the base settings
    trial, refit, other = doc["trial"], doc["fit"], doc["other"]
    assert len(trial["val_loss"]) == len(refit["val_loss"]) == 3
    for metric in ("loss", "val_loss", "val_accuracy", "auc"):
        np.testing.assert_allclose(refit[metric], trial[metric], rtol=1e-6, err_msg=metric)
    assert other["val_loss"][0] == pytest.approx(trial["val_loss"][0], rel=1e-6)  # phase one: the same
    assert abs(other["val_loss"][-1] / trial["val_loss"][-1] - 1) > 1e-2  # a changed phase two shows


@pytest.mark.slow
def test_resuming_a_search_with_other_base_settings_is_refused(tiny_run, tmp_path):
    from kclassify.tuning.tune import tune

    space = tmp_path / "lr.yaml"
    space.write_text("lr: {type: choice, values: [0.003, 0.01]}\n")
    base = build_config({**TINY, "data": str(tiny_run.parent / "data"), "epochs": 1})
    tune(base, load_space(space), max_trials=1, output=tmp_path / "s")
    saved = load_yaml(tmp_path / "s" / "config.yaml")
    assert saved["epochs"] == 1 and saved["split_file"] == str((tmp_path / "s" / "split.csv").resolve())
    with pytest.raises(ConfigError, match=r"other base settings \(batch_size: 8 -> 4, epochs: 1 -> 2\)"):
        tune(base.replace(epochs=2, batch_size=4), load_space(space), max_trials=2, output=tmp_path / "s")
    result = tune(base, load_space(space), max_trials=2, output=tmp_path / "s")  # same settings: resumes
    assert len(result.trials) == 2


@pytest.mark.slow
def test_hyperband_rungs_start_at_min_epochs_and_defaults_come_first(tiny_run, tmp_path):
    from kclassify.tuning.tune import tune

    base = build_config({**TINY, "data": str(tiny_run.parent / "data"), "epochs": 9, "lr": 0.003})
    out = tmp_path / "hb"
    tune(base, load_space("default"), algorithm="hyperband", max_trials=3, output=out, min_epochs=3)
    with open(out / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert {int(r["epochs"]) for r in rows} <= {3, 9} and min(int(r["epochs"]) for r in rows) == 3
    # fit's defaults where the default space admits them (batch 8 is not among 16/32/64: the space's default)
    first = rows[0]
    assert (first["optimizer"], float(first["lr"]), first["schedule"], float(first["dropout"])) == (
        "adam", 0.003, "cosine", 0.2)


# What each searched setting must change, read off the trial's built model, its recipe (data, phases,
# steps) or the model compiled for fine-tuning. Every entry of every shipped space must be here.
def _optimizer(model, recipe):
    opt = model.optimizer
    return type(opt).__name__, float(getattr(opt, "momentum", 0.0)), bool(getattr(opt, "nesterov", False))


def _lr_at_start(model, recipe):
    lr = model.optimizer._learning_rate
    return round(float(lr(0) if callable(lr) else lr), 8)


def _finetune(model, recipe):
    compile_phase(model, recipe, recipe.phases[-1])
    return model


def _first_batch(recipe, part=0):
    import tensorflow as tf

    tf.random.set_seed(0)
    return next(iter(recipe.datasets["train"]))[part].numpy()


OBSERVE = {
    "optimizer": _optimizer,
    "lr": _lr_at_start,
    "schedule": lambda m, r: type(m.optimizer._learning_rate).__name__,
    "momentum": lambda m, r: round(float(m.optimizer.momentum), 6),
    "batch_size": lambda m, r: r.steps,
    "dropout": lambda m, r: m.get_layer("dropout").rate if "dropout" in [l.name for l in m.layers] else 0.0,
    "backbone": lambda m, r: backbone_of(m).name,
    "image_size": lambda m, r: m.input_shape[1],
    "activation": lambda m, r: backbone_of(m).get_layer("stem_act").get_config()["activation"],
    "bn_momentum": lambda m, r: backbone_of(m).get_layer("stem_bn").momentum,
    "width": lambda m, r: backbone_of(m).get_layer("block3_conv").filters,
    "depth": lambda m, r: len([layer for layer in backbone_of(m).layers if "_conv" in layer.name]),
    "augment": lambda m, r: _first_batch(r).tobytes(),
    "mix": lambda m, r: _first_batch(r, part=1).round(3).tobytes(),  # mixed labels are no longer one-hot
    "mix_alpha": lambda m, r: _first_batch(r, part=1).round(3).tobytes(),
    "weight_decay": lambda m, r: float(m.optimizer.weight_decay or 0.0),
    "label_smoothing": lambda m, r: float(m.loss.label_smoothing),
    "head_epochs": lambda m, r: r.phases[0].end,  # when the fine-tuning phase starts
    "unfreeze": lambda m, r: len(_finetune(m, r).trainable_weights),  # what phase two trains
    "finetune_lr_factor": lambda m, r: _lr_at_start(_finetune(m, r), r),
}


class _Lazy:
    """The trial's recipe, made only when an observer reads it (each one builds the data pipelines anew)."""

    def __init__(self, make):
        self._make, self._made = make, None

    def __getattr__(self, name):
        if self._made is None:
            self._made = self._make()
        return getattr(self._made, name)


def _two_values(entry):
    if entry.type == "choice":
        return entry.values[:2]
    if entry.type == "boolean":
        return (False, True)
    return (entry.min, entry.max)


@pytest.mark.slow
@pytest.mark.parametrize("space_name", SPACES)
def test_no_searched_setting_is_dead(space_name, tiny_run):
    """For every entry of a shipped space, two of its values give trials that differ in what the entry names."""
    import keras

    from kclassify.data import prepare_data
    from kclassify.tuning.hypermodel import ClassifierHyperModel

    space = load_space(space_name)
    assert set(space.names) <= set(OBSERVE), f"add an observable for {set(space.names) - set(OBSERVE)}"
    data_dir = tiny_run.parent / "data"
    pretrained = space_name == "transfer"  # fine-tuning settings act only with pretrained weights
    base = build_config({**TINY, "data": str(data_dir), "epochs": 6, "image_size": 32,
                         "weights": str(tiny_run) if pretrained else "none", "optimizer": "momentum"})
    if pretrained:
        base = base.replace(image_size=16)
    data = prepare_data(str(data_dir))
    hypermodel = ClassifierHyperModel(base, space, data, data_dir.parent / "cache-dead")
    for entry in space.entries:
        seen = []
        for value in _two_values(entry):
            hp = keras_tuner.HyperParameters()
            hypermodel.declare(hp)
            hp.values[entry.name] = value
            for parent, values in entry.when.items():
                hp.values[parent] = values[0]
            model = hypermodel.build(hp)
            seen.append(OBSERVE[entry.name](model, _Lazy(lambda: hypermodel.recipe(hp))))
            keras.backend.clear_session()
        assert seen[0] != seen[1], f"{space_name}: {entry.name}={_two_values(entry)} changed nothing ({seen[0]!r})"


def test_random_draws_are_well_mixed_and_resume_the_same_way():
    """KerasTuner's per-value seeds n, n+8, n+16... gave one of two image sizes 9 times in 10; ours mix."""
    from kclassify.tuning.tuner import defaults_first

    space = keras_tuner.HyperParameters()
    for i in range(7):
        space.Float(f"x{i}", 0.0, 1.0)
    space.Choice("image_size", [64, 96], default=64)
    oracle = keras_tuner.oracles.RandomSearchOracle(max_trials=100, seed=42, hyperparameters=space)
    defaults_first(oracle)
    draws = []
    for i in range(60):
        values = oracle._random_values()
        draws.append(values["image_size"])
        oracle.trials[str(i)] = keras_tuner.engine.trial.Trial(space.copy(), trial_id=str(i))
        oracle._tried_so_far.add(oracle._compute_values_hash(values))
    assert draws[0] == 64  # the defaults first
    assert 20 <= draws[1:].count(96) <= 39  # a fair coin over 59 draws (KerasTuner's own: 1 of the first 10)
