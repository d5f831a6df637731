"""fit --time-budget: the epochs the time holds at the measured pace, a cosine planned over them, then stop."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import yaml

from conftest import write_class_folder


def test_the_budgets_cosine_is_keras_cosine_decay_with_and_without_warm_up():
    import keras

    from kclassify.training.time_budget import cosine

    plain = keras.optimizers.schedules.CosineDecay(0.01, decay_steps=100)
    warm = keras.optimizers.schedules.CosineDecay(0.0, decay_steps=90, warmup_target=0.01, warmup_steps=10)
    for step in (0, 5, 10, 37, 99, 100, 130):
        assert cosine(step, 100, 0.01) == pytest.approx(float(plain(step)), abs=1e-7)
        assert cosine(step, 100, 0.01, warmup=10) == pytest.approx(float(warm(step)), abs=1e-7)
    assert cosine(50, 100, 0.01) == pytest.approx(0.005)  # half way: half the rate


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _model():
    return SimpleNamespace(stop_training=False, optimizer=SimpleNamespace(learning_rate=None))


def _epoch(budget, clock, e, batch_seconds, val_seconds=None, batches=10):
    """One epoch of ``batches`` batches as Keras calls the callback; a validation pass unless ``val_seconds`` is None."""
    budget.on_epoch_begin(e)
    for b in range(batches):
        budget.on_train_batch_begin(b)
        clock.now += batch_seconds
        budget.on_train_batch_end(b)
    if val_seconds is not None:
        budget.on_test_begin()
        clock.now += val_seconds
        budget.on_test_end()
    budget.on_epoch_end(e)


def test_the_plan_follows_the_measured_pace_and_the_fit_stops_when_no_epoch_fits():
    from kclassify.training.time_budget import FINISH_FIXED, FINISH_PER_IMAGE, TimeBudget

    clock = _Clock()
    budget = TimeBudget(ends_at=100.0, eval_ratio=2.0, clock=clock)
    model = _model()
    budget.set_model(model)
    cbs = budget.phase(start=0, end=3, steps=10, open_end=True, lr=0.1)
    assert cbs == [budget, budget.progbar] and budget.planned == 3  # the plan until timed: --epochs

    budget.on_train_begin()
    budget.on_epoch_begin(0)
    for b in range(8):  # 3 warm-up batches, then 5 timed: 1 s each
        budget.on_train_batch_begin(b)
        clock.now += 1.0 if b >= 3 else 4.0
        budget.on_train_batch_end(b)
    # at 17 s, 2 batches of 1 s to go; kept: 3 s (no validation timed yet); 100-17-3-2 = 78 s at 10 s per epoch
    assert budget.planned == 1 + 7 and budget.progbar.epochs == 8
    assert model.optimizer.learning_rate == pytest.approx(0.5 * 0.1 * (1 + math.cos(math.pi * 7 / 30)))  # step 7 of 3 epochs
    for b in (8, 9):
        budget.on_train_batch_begin(b)
        clock.now += 1.0
        budget.on_train_batch_end(b)
    assert model.optimizer.learning_rate == pytest.approx(0.5 * 0.1 * (1 + math.cos(math.pi * 9 / 80)))  # of 8 now
    budget.on_test_begin()
    clock.now += 1.0
    budget.on_test_end()
    budget.on_epoch_end(0)  # 20 s; the first epoch judged by its batches: 10 x 1 + 1 s validation
    finish = FINISH_FIXED + FINISH_PER_IMAGE * 2.0 * 1.0
    assert budget.finish_seconds == finish == 11.0
    assert budget.planned == 1 + int((100 - 20 - finish) // 11) == 7 and not model.stop_training
    _epoch(budget, clock, 1, 2.0, 1.0)  # 21 s per epoch from now on: 41 s, 48 s left: 2 more
    assert budget.planned == 4 and not model.stop_training
    _epoch(budget, clock, 2, 2.0, 1.0)  # 62 s, 27 s left: 1 more
    assert budget.planned == 4 and not model.stop_training
    _epoch(budget, clock, 3, 2.0, 1.0)  # 83 s: 6 s left, no epoch of 21 s fits
    assert model.stop_training and budget.stopped_early and budget.epochs_done == 4
    assert model.optimizer.learning_rate == pytest.approx(0.5 * 0.1 * (1 + math.cos(math.pi * 39 / 40)))


def test_without_a_validation_split_the_finish_is_planned_from_the_training_epochs_seconds():
    """No validation pass to time: the images scored after training cost PASS_PER_TRAIN of a training image."""
    from kclassify.training.time_budget import FINISH_FIXED, FINISH_PER_IMAGE, PASS_PER_TRAIN, TimeBudget

    clock = _Clock()
    budget = TimeBudget(ends_at=200.0, eval_ratio=40.0, train_ratio=0.5, clock=clock)  # 2 x 10 test / 40 train
    model = _model()
    budget.set_model(model)
    budget.phase(start=0, end=3, steps=10, open_end=True)
    budget.on_train_begin()
    for e in range(2):
        _epoch(budget, clock, e, 2.0)  # no on_test_*: Keras runs none without validation data
    finish = FINISH_FIXED + FINISH_PER_IMAGE * 0.5 * PASS_PER_TRAIN * 20.0  # not eval_ratio x 0 s
    assert budget.train_seconds == 20.0 and budget.finish_seconds == pytest.approx(finish)
    assert finish > FINISH_FIXED + 1.0  # the test split's scoring is planned for
    assert budget.planned == 2 + int((200 - 40 - finish) // 20)


def test_a_closed_phase_keeps_its_schedule_but_is_stopped_by_the_budget_too():
    from kclassify.training.time_budget import TimeBudget

    clock = _Clock()
    budget = TimeBudget(ends_at=40.0, clock=clock)
    model = _model()
    budget.set_model(model)
    budget.phase(start=0, end=5, steps=10, open_end=False)  # a head phase: Keras' own schedule
    budget.on_train_begin()
    for e in range(2):
        _epoch(budget, clock, e, 1.5)
    assert model.optimizer.learning_rate is None and budget.planned is None  # never set here
    # 30 s: 40 - 30 - 3 kept = 7 s left, an epoch takes 15 s
    assert model.stop_training and budget.epochs_done == 2


@pytest.mark.slow
def test_a_budgeted_fit_trains_the_epochs_its_time_holds_and_records_them(tmp_path, monkeypatch):
    """A fake clock that ticks one second per training batch: 8 batches per epoch, 45 s, 3 s kept for the end."""
    import keras

    from kclassify import fit
    from kclassify.training import time_budget

    batches = {"n": 0}

    class Tick(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            batches["n"] += 1

    monkeypatch.setattr(time_budget, "time", SimpleNamespace(perf_counter=lambda: float(batches["n"])))
    data = write_class_folder(tmp_path / "data", per_class=30)  # 72 training images: 9 batches of 8
    result = fit(data=str(data), output=tmp_path / "run", verbose=0, image_size=16, batch_size=8, epochs=3,
                 augment=0.0, seed=1, lr=3e-3, time_budget=45.0, started=0.0, callbacks=[Tick()])
    # Epoch 1 is timed over its batches 4-8 (1 s each): at 8 s, 1 batch to go, 45 - 8 - 3 - 1 = 33 s hold
    # 3 more epochs of 9 s (validation takes no time on this clock): 4 planned, the last batch of epoch 1
    # already on a cosine of 36 steps. After epochs 2, 3, 4 (18, 27, 36 s): 24, 15, 6 s left; then stop.
    history = (result.run_dir / "history.csv").read_text().splitlines()
    epochs = len(history) - 1
    info = json.loads((result.run_dir / "run.json").read_text())
    config = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    kept = info["time_budget"]
    assert epochs == 4 and kept == {"seconds": 45.0, "planned_epochs": 3, "epochs": 4}  # more than --epochs 3
    assert config["train"]["epochs"] == 4  # fit --config retrains it without a budget
    rates = [float(row.split(",")[history[0].split(",").index("learning_rate")]) for row in history[1:]]
    total = 4 * 9
    assert rates == pytest.approx([0.5 * 3e-3 * (1 + math.cos(math.pi * s / total)) for s in (8, 17, 26, 35)],
                                  rel=1e-4)
    assert result.metrics["test"]["accuracy"] > 0.9  # separable colours


def test_a_multi_worker_fit_refuses_a_time_budget_before_it_trains(tmp_path):
    from kclassify import fit
    from kclassify.errors import ConfigError

    with pytest.raises(ConfigError, match="not kept by a multi-worker fit.*--epochs"):
        fit(data=str(tmp_path), strategy="multiworker", time_budget=60.0, output=tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("seconds", [0.0, -5.0])
def test_a_time_budget_must_be_some_time(tmp_path, seconds):
    from kclassify import fit
    from kclassify.errors import ConfigError

    with pytest.raises(ConfigError, match="more than 0"):
        fit(data=str(tmp_path), time_budget=seconds, output=tmp_path / "run")


def test_a_budgeted_runs_config_retrains_the_phases_it_trained(tmp_path):
    """config.yaml after a budget: the epochs trained, and the head phase as it ran (the whole run when it
    was the only phase), so that fit --config plans the same phases without the budget."""
    from kclassify.config import Config, from_yaml_file
    from kclassify.runs import RunFolder
    from kclassify.textfiles import write_json
    from kclassify.training.finetune import Phase, plan_phases
    from kclassify.training.fit import _budgeted_settings

    cases = [  # planned phases, epochs trained -> the phases a retrain plans
        ([Phase("head", 0, 3, 1.0), Phase("finetune", 3, 12, 0.1)], 30, [("head", 0, 3), ("finetune", 3, 30)]),
        ([Phase("head", 0, 5, 1.0)], 12, [("head", 0, 12)]),
        ([Phase("train", 0, 20, 1.0)], 7, [("train", 0, 7)]),
    ]
    for i, (planned, trained, phases) in enumerate(cases):
        run = RunFolder(tmp_path / f"run{i}")
        run.root.mkdir()
        write_json(run.run_json, {"status": "finished"})
        weights = "none" if planned[0].name == "train" else "imagenet"
        cfg = Config().replace(weights=weights, epochs=planned[-1].end,
                               head_epochs=5 if len(planned) == 1 and weights != "none" else None)
        _budgeted_settings(run, cfg, SimpleNamespace(phases=planned), trained, 60.0)
        again = from_yaml_file(run.config)
        assert [(p.name, p.start, p.end) for p in plan_phases(again)] == phases
        assert json.loads(run.run_json.read_text())["time_budget"] == {
            "seconds": 60.0, "planned_epochs": planned[-1].end, "epochs": trained}
