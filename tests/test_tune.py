"""kclassify tune: each algorithm, outputs, resume, best_hparams reused by fit, --then-fit."""

import csv
from pathlib import Path

import pytest
import yaml

from conftest import has_own_batchnorm_statistics, write_class_folder
from kclassify.cli import main
from kclassify.config import build_config, load_yaml
from kclassify.tuning import load_space


@pytest.fixture
def small_data(tmp_path):
    return write_class_folder(tmp_path / "data", per_class=12)


def _base(data, **extra):
    return build_config({"data": str(data), "image_size": 16, "epochs": 2, "batch_size": 8, "augment": 0.0,
                         "phone_resize": 0.0, **extra})  # the search's mechanics, not the phone's resizes


def _rows(folder):
    with open(folder / "trials.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow  # the quick lane's search: test_hyperband_continuation_goes_on_along_the_schedule
@pytest.mark.parametrize("algorithm", ["random", "bayesian", "hyperband"])
def test_each_algorithm_runs_tiny_trials(small_data, tmp_path, algorithm):
    from kclassify.tuning.tune import tune

    out = tmp_path / algorithm
    result = tune(_base(small_data), load_space("default"), algorithm=algorithm, max_trials=2, output=out)
    rows = _rows(out)
    assert len(rows) == 2 and {r["status"] for r in rows} == {"COMPLETED"}
    assert {"optimizer", "lr", "batch_size", "dropout", "epochs", "seconds", "score"} <= set(rows[0])
    assert result.best_score == max(float(r["score"]) for r in rows)
    assert result.best_score >= 0.66  # the first trial is fit's defaults: well above the 1/3 of chance
    assert (out / "summary.md").read_text().startswith("# Tuning summary: val_accuracy")
    assert (out / "split.csv").is_file() and (out / "tuner").is_dir()
    # the default space does not change the model's size: no one-column Pareto plot, the progress instead
    assert (out / "progress.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not (out / "pareto.png").exists()
    assert "![search progress](progress.png)" in (out / "summary.md").read_text()
    best = yaml.safe_load((out / "best_hparams.yaml").read_text())
    assert best["hparams"] == result.best_hparams
    cfg = build_config(load_yaml(out / "best_hparams.yaml"))  # what `fit --hparams` does
    assert cfg.train.optimizer == result.best_hparams["optimizer"]
    assert cfg.train.batch_size == result.best_hparams["batch_size"]


@pytest.mark.slow
def test_rerun_resumes_and_tops_up_to_the_asked_count(small_data, tmp_path):
    from kclassify.tuning.tune import tune

    from tensorflow.python.framework import ops

    registry = ops._gradient_registry._registry  # each trained trial adds to it (see released_custom_gradients)
    registered = len(registry)
    out = tmp_path / "t"
    tune(_base(small_data, epochs=1), load_space("default"), max_trials=2, output=out)
    first = _rows(out)
    tune(_base(small_data, epochs=1), load_space("default"), max_trials=3, output=out)
    again = _rows(out)
    assert len(again) == 3 and again[:2] == first  # finished trials are not rerun
    assert len(registry) == registered  # no trial's training graph is kept alive after it ends


@pytest.mark.slow
def test_cli_tune_then_fit(small_data, tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["tune", "--data", str(small_data), "--space", "default", "--max-trials", "2", "--epochs", "1",
                 "--image-size", "16", "--batch-size", "8", "--output", str(out), "--then-fit", "--export", "tflite",
                 "--distill", "2"])
    assert code == 0
    assert (out / "best_run" / "model.keras").is_file() and (out / "best_run" / "metrics.json").is_file()
    assert (out / "best_run" / "export" / "model.tflite").is_file()  # search, retrain, export: one command
    best = load_yaml(out / "best_hparams.yaml")
    fitted = load_yaml(out / "best_run" / "config.yaml")
    assert all(fitted[k] == v for k, v in best.items())
    assert "best val_accuracy" in capsys.readouterr().out
    # --distill 2: the final fit learned from the two trials' own models, written as run folders
    import json

    teachers = json.loads((out / "best_run" / "run.json").read_text())["teachers"]
    assert sorted(t["path"] for t in teachers) == sorted(str(p) for p in (out / "teachers").iterdir())
    assert len(teachers) == 2 and fitted["teacher"] == ",".join(t["path"] for t in teachers)
    scores = {row["trial"]: float(row["score"]) for row in _rows(out) if row["score"]}
    first = json.loads((out / "teachers" / Path(teachers[0]["path"]).name / "run.json").read_text())["from_trial"]
    assert first["val_accuracy"] == max(scores.values())  # the best trial teaches first


@pytest.mark.slow
def test_distributed_chief_and_two_workers_exit_cleanly(small_data, tmp_path):
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "dist"
    common = ["tune", "--data", str(small_data), "--max-trials", "3", "--epochs", "1", "--image-size", "16",
              "--batch-size", "8", "--output", str(out), "--oracle", f"127.0.0.1:{port}"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    procs = [subprocess.Popen([sys.executable, "-m", "kclassify", *common, "--distributed", "chief"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    procs += [subprocess.Popen([sys.executable, "-m", "kclassify", *common, "--distributed", "worker",
                                "--worker-id", str(i)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True) for i in range(2)]
    try:
        outputs = [p.communicate(timeout=300) for p in procs]  # the chief must exit too (keras-tuner #254)
    finally:
        for p in procs:
            p.kill()
    for p, (stdout, stderr) in zip(procs, outputs):
        assert p.returncode == 0, stderr[-3000:]
    rows = _rows(out)
    assert len(rows) == 3 and {r["status"] for r in rows} == {"COMPLETED"}
    assert all(float(r["seconds"]) > 0 and int(r["params"]) > 0 for r in rows)  # measured by the workers
    assert (out / "best_hparams.yaml").is_file()


@pytest.mark.slow
def test_time_budget_stops_the_search_and_trials_reach_tensorboard_hparams(small_data, tmp_path):
    from kclassify.tuning.tune import tune

    out = tmp_path / "budget"
    result = tune(_base(small_data, epochs=1), load_space("default"), max_trials=10, output=out, time_budget=0.001)
    assert len(_rows(out)) == 1 and result.best_score is not None
    events = list((out / "logs").rglob("events.out.tfevents.*"))
    assert events
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for e in events:
        acc = EventAccumulator(str(e))
        acc.Reload()
        tags |= set(acc.summary_metadata)
    assert any("hparams" in t for t in tags), tags


def _space(tmp_path, text):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return load_space(path)


def test_the_base_best_note_counts_each_other_setting_once():
    """Hyperband's continuations of one setting count once; failed and infeasible trials not at all."""
    from types import SimpleNamespace

    from kclassify.tuning.report import base_best_text, others_tried

    space = SimpleNamespace(names=["lr", "width"])
    base = {"lr": 0.001, "width": 1.0, "epochs": 27}
    rows = [{"status": "COMPLETED", "lr": 0.001, "width": 1.0},  # the base, its rung and its continuation
            {"status": "COMPLETED", "lr": 0.001, "width": 1.0},
            {"status": "COMPLETED", "lr": 0.002, "width": 1.0}, {"status": "COMPLETED", "lr": 0.002, "width": 1.0},
            {"status": "COMPLETED", "lr": 0.001, "width": 1.5},
            {"status": "FAILED", "lr": 0.003, "width": 1.5}, {"status": "INFEASIBLE", "lr": 0.004, "width": 2.0}]
    assert others_tried(rows, space, base) == 2
    assert "none of the 2 other setting(s) tried beat them on val_accuracy" in base_best_text(2, "val_accuracy")


@pytest.mark.slow
@pytest.mark.parametrize("base_lr, other_lr, base_wins", [
    (1e-3, 1e-9, True),  # the other trial cannot learn in 2 epochs: the base settings stay best
    (1e-9, 1e-3, False),  # the base cannot learn: the search found better
])
def test_the_search_says_when_its_best_is_the_base_settings(tmp_path, base_lr, other_lr, base_wins):
    from kclassify.tuning.tune import tune

    data = write_class_folder(tmp_path / "data", per_class=30)  # 18 validation images: every class, no ties
    out = tmp_path / "s"
    space = _space(tmp_path, f"lr:\n  type: choice\n  values: [{base_lr}, {other_lr}]\n")
    result = tune(_base(data, lr=base_lr, val_fraction=0.2), space, max_trials=2, output=out)
    assert [float(r["lr"]) for r in _rows(out)] == [base_lr, other_lr]  # the base first
    assert result.best_hparams == {"lr": base_lr if base_wins else other_lr}
    assert result.best_score >= 0.66  # the learning trial, well above the 1/3 of chance
    assert result.best_is_base is base_wins
    said = "The best trial trained the base settings" in (out / "summary.md").read_text()
    assert said is base_wins and (result.note != "") is base_wins


@pytest.mark.slow
def test_budget_skips_models_over_it_and_shows_the_trade_off(small_data, tmp_path):
    import json

    from kclassify.tuning.tune import Budget, tune

    space = _space(tmp_path, "hidden_units: {type: choice, values: [0, 2048]}\n"
                             "lr: {type: float, min: 1.0e-3, max: 1.0e-2, sampling: log}\n")
    out = tmp_path / "budget"
    result = tune(_base(small_data, epochs=1), space, max_trials=4, output=out,
                  limits=Budget(max_params=600_000, measure_latency=True))
    rows = _rows(out)
    big = [r for r in rows if r["hidden_units"] == "2048"]
    small = [r for r in rows if r["hidden_units"] == "0"]
    assert big and small, "the seed should draw both sizes in 4 trials"
    for r in big:  # never trained, cost recorded
        assert r["status"] == "INFEASIBLE" and r["score"] == "" and r["epochs"] == "0"
        assert int(r["params"]) > 600_000 and "> 600,000" in r["message"]
    for r in small:
        assert r["status"] == "COMPLETED" and int(r["params"]) <= 600_000 and float(r["latency_ms"]) > 0
    assert result.best_hparams["hidden_units"] == 0
    assert len(json.loads((out / "profiles.json").read_text())) == 2  # one measurement per architecture
    summary = (out / "summary.md").read_text()
    assert "Budget: --max-params 600,000" in summary and "## Pareto front" in summary
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not (out / "progress.png").exists()


def test_nothing_within_budget_is_a_clear_error(small_data, tmp_path):
    from kclassify.errors import ConfigError
    from kclassify.tuning.tune import Budget, tune

    with pytest.raises(ConfigError, match="No trial met the budget .--max-params 1,000.*cheapest model tried had"):
        tune(_base(small_data, epochs=1), load_space("default"), max_trials=2, output=tmp_path / "none",
             limits=Budget(max_params=1000))
    assert {r["status"] for r in _rows(tmp_path / "none")} == {"INFEASIBLE"}


def test_pareto_front_keeps_only_trials_nothing_beats():
    from kclassify.tuning.tune import pareto_front

    def row(trial, score, latency):
        return {"trial": trial, "status": "COMPLETED", "score": score, "params": 1, "latency_ms": latency}

    rows = [row("a", 0.70, 1.0), row("b", 0.65, 2.0), row("c", 0.80, 3.0), row("d", 0.80, 4.0),
            row("e", 0.90, 9.0), {**row("f", None, 0.5), "status": "INFEASIBLE"}]
    assert [r["trial"] for r in pareto_front(rows, maximize=True)] == ["a", "c", "e"]
    losses = [row("a", 0.9, 1.0), row("b", 0.5, 2.0), row("c", 0.7, 3.0)]
    assert [r["trial"] for r in pareto_front(losses, maximize=False)] == ["a", "b"]
    no_latency = [{**r, "latency_ms": "", "params": p} for r, p in zip(rows[:3], (10, 5, 20))]
    assert [r["trial"] for r in pareto_front(no_latency)] == ["b", "a", "c"]


@pytest.mark.slow
def test_a_failing_trial_is_recorded_and_the_search_goes_on(small_data, tmp_path, monkeypatch):
    import tensorflow as tf

    from kclassify.tuning.hypermodel import ClassifierHyperModel
    from kclassify.tuning.tune import tune

    real_fit, calls = ClassifierHyperModel.fit, []

    def out_of_memory_once(self, hp, model, *args, **kwargs):
        calls.append(hp.values)
        if len(calls) == 1:
            raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor with shape [64,3,3,32]")
        return real_fit(self, hp, model, *args, **kwargs)

    monkeypatch.setattr(ClassifierHyperModel, "fit", out_of_memory_once)
    result = tune(_base(small_data, epochs=1), load_space("default"), max_trials=3, output=tmp_path / "f")
    rows = _rows(tmp_path / "f")
    assert [r["status"] for r in rows] == ["FAILED", "COMPLETED", "COMPLETED"]
    assert "OOM when allocating" in rows[0]["message"] and rows[0]["score"] == ""
    assert result.best_score is not None and result.best_hparams["lr"] != float(rows[0]["lr"])


@pytest.mark.slow
def test_kill_9_mid_trial_then_the_same_command_resumes(small_data, tmp_path):
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "killed"
    args = ["tune", "--data", str(small_data), "--max-trials", "3", "--epochs", "2", "--image-size", "16",
            "--batch-size", "4", "--output", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "kclassify", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    second = out / "tuner" / "trial_1" / "trial.json"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not second.is_file():
        time.sleep(0.05)
    assert proc.poll() is None, "tune finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    first = json.loads((out / "tuner" / "trial_0" / "trial.json").read_text())
    interrupted = json.loads(second.read_text())
    assert first["status"] == "COMPLETED" and interrupted["status"] == "RUNNING"
    assert not (out / "trials.csv").exists()

    assert main(args) == 0
    rows = _rows(out)
    assert [r["trial"] for r in rows] == ["0", "1", "2"] and {r["status"] for r in rows} == {"COMPLETED"}
    assert float(rows[0]["score"]) == first["score"]  # finished trial not rerun
    assert float(rows[1]["lr"]) == interrupted["hyperparameters"]["values"]["lr"]  # interrupted one restarted


def test_hyperband_continuation_goes_on_along_the_schedule(small_data, tmp_path):
    import keras_tuner

    from kclassify.data import prepare_data
    from kclassify.tuning.hypermodel import ClassifierHyperModel

    base = _base(small_data, epochs=4, batch_size=8)
    data = prepare_data(str(small_data), seed=42)
    hypermodel = ClassifierHyperModel(base, _space(tmp_path, "lr: {type: choice, values: [0.01]}\n"), data,
                                      tmp_path / "cache")
    hp = keras_tuner.HyperParameters()
    hypermodel.declare(hp)
    model = hypermodel.build(hp)
    steps = hypermodel.recipe(hp).steps
    hypermodel.fit(hp, model, epochs=3, initial_epoch=2)  # as Hyperband resumes a trial after its 2-epoch rung
    assert int(model.optimizer.iterations.numpy()) == 3 * steps
    schedule = model.optimizer.learning_rate
    assert float(schedule) < 0.01 * 0.5  # cosine over 4 epochs, 3 done: well below the peak


@pytest.mark.slow
@pytest.mark.parametrize("then_fit", [True, False])
def test_then_fit_stops_the_search_when_the_retrain_would_not_fit(small_data, tmp_path, monkeypatch, then_fit):
    """A retrain estimated at 1000 s does not fit a 900 s budget: one trial, then the search stops."""
    from kclassify.tuning.tune import tune
    from kclassify.tuning.tuner import KClassifyTuner

    monkeypatch.setattr(KClassifyTuner, "refit_reserve", lambda self, trial: 1000.0)
    out = tmp_path / str(then_fit)
    tune(_base(small_data, epochs=1), load_space("default"), max_trials=3, output=out, time_budget=900,
         then_fit=then_fit)
    assert len(_rows(out)) == (1 if then_fit else 3)  # without --then-fit the budget is the search's alone


@pytest.mark.parametrize("values,seconds", [({"tuner/epochs": 9, "tuner/initial_epoch": 0}, 45.0),
                                            ({"tuner/epochs": 27, "tuner/initial_epoch": 9}, 90.0), ({}, 135.0)])
def test_then_fit_keeps_the_time_retraining_the_best_takes(values, seconds):
    """27 epochs at 5 s per trial epoch: 5 x 27 = 135 s, whether the trial ran a rung, a continuation or all."""
    from types import SimpleNamespace

    import keras_tuner

    from kclassify.tuning.tuner import KClassifyTuner

    hp = keras_tuner.HyperParameters()
    hp.values.update(values)
    trial = SimpleNamespace(trial_id="003", hyperparameters=hp)
    tuner = SimpleNamespace(trial_stats={"003": {"seconds": seconds}},
                            hypermodel=SimpleNamespace(config_for=lambda hp: build_config({"epochs": 27})))
    assert KClassifyTuner.refit_reserve(tuner, trial) == pytest.approx(135.0)
    tuner.trial_stats = {}  # not measured yet: nothing to keep
    assert KClassifyTuner.refit_reserve(tuner, trial) == 0.0


@pytest.mark.slow
def test_a_trials_model_trained_with_ema_is_saved_with_its_own_batchnorm_statistics(small_data, tmp_path):
    """then_fit reuse saves the best trial's averaged weights with BatchNorm statistics recomputed for them, as
    fit saves its own (the trial's checkpoint holds their moving average); tune --distill's teachers too."""
    from kclassify.tuning.final import best_run
    from kclassify.tuning.tune import base_settings, tune

    base, out = _base(small_data, epochs=2, ema=0.5, batch_size=64), tmp_path / "t"  # one batch: all training images
    tune(base, load_space("default"), max_trials=1, output=out, objective="val_loss", then_fit="reuse")
    run = best_run(out, base_settings(out, base), load_space("default"), "reuse", verbose=0)
    assert has_own_batchnorm_statistics(run.run_dir / "model.keras", small_data, out / "split.csv", 16)


@pytest.mark.slow
def test_then_fit_reuse_keeps_the_best_trials_own_model(small_data, tmp_path):
    """reuse writes best_run from the best trial's checkpoint: it scores the trial's own val_loss; nothing retrained."""
    import json

    import numpy as np

    from kclassify.inference import load_predictor
    from kclassify.tuning.final import best_run
    from kclassify.tuning.tune import base_settings, tune

    base, out = _base(small_data, epochs=3), tmp_path / "t"
    tune(base, load_space("default"), max_trials=2, output=out, objective="val_loss", then_fit="reuse")
    best = yaml.safe_load((out / "best_hparams.yaml").read_text())
    run = best_run(out, base_settings(out, base), load_space("default"), "reuse", verbose=0)
    assert json.loads((run.run_dir / "run.json").read_text())["from_trial"]["trial"] == best["trial"]
    assert not (run.run_dir / "history.csv").exists()  # not trained again
    assert load_yaml(run.run_dir / "config.yaml")["lr"] == best["hparams"]["lr"]  # fit --config retrains it
    # The saved model is the trial's checkpoint: on the validation images it has the trial's best val_loss.
    with open(out / "split.csv") as f:
        val = [r for r in csv.DictReader(f) if r["split"] == "val"]
    predictor = load_predictor(run.run_dir)
    probs = np.stack([r.probabilities for r in predictor.predict_files([str(small_data / r["path"]) for r in val])])
    labels = [predictor.labels.index(r["label"]) for r in val]
    loss = -np.mean(np.log(probs[np.arange(len(val)), labels]))
    assert loss == pytest.approx(best["score"], abs=2e-3)


def test_reuse_keeps_no_time_for_a_best_trial_that_trained_all_epochs():
    """With then_fit reuse, a best trial that ran all 27 epochs needs no retrain; one stopped at rung 9 does."""
    from types import SimpleNamespace

    import keras_tuner

    from kclassify.tuning.tuner import KClassifyTuner, SearchSettings, ran_all_epochs

    assert ran_all_epochs({"tuner/epochs": 27}, 27) and ran_all_epochs({}, 27)
    assert not ran_all_epochs({"tuner/epochs": 9}, 27)
    stats = {"001": {"seconds": 40.0}, "002": {"seconds": 90.0}}
    for epochs, mode, reserve in [(27, "reuse", 90.0), (9, "reuse", 90.0 + 27 * 40.0 / 9),
                                  (27, "retrain", 90.0 + 27 * 90.0 / 18), (27, None, 0.0)]:
        hp = keras_tuner.HyperParameters()
        hp.values.update({"tuner/epochs": epochs, "tuner/initial_epoch": 0 if epochs == 9 else 9})
        trial = SimpleNamespace(trial_id="001" if epochs == 9 else "002", hyperparameters=hp)
        tuner = SimpleNamespace(trial_stats=stats, settings=SearchSettings(3, then_fit=mode),
                                hypermodel=SimpleNamespace(config_for=lambda hp: build_config({"epochs": 27})))
        tuner.refit_reserve = lambda t, tuner=tuner: KClassifyTuner.refit_reserve(tuner, t)
        tuner.final_reserve = lambda t, tuner=tuner: KClassifyTuner.final_reserve(tuner, t)
        assert KClassifyTuner.reserve(tuner, trial) == pytest.approx(reserve), (epochs, mode)


def test_final_share_keeps_its_part_of_the_budget_or_the_retrain_if_longer():
    """share x budget is kept for the final fit, unless retraining the best for --epochs takes longer."""
    from types import SimpleNamespace

    import keras_tuner

    from kclassify.tuning.tuner import KClassifyTuner, SearchSettings

    hp = keras_tuner.HyperParameters()
    hp.values.update({"tuner/epochs": 9, "tuner/initial_epoch": 0})
    trial = SimpleNamespace(trial_id="001", hyperparameters=hp)
    stats = {"001": {"seconds": 45.0}, "002": {"seconds": 90.0}}  # retraining 001 for 27 epochs: 135 s
    for share, budget, reserve in [(0.5, 900, 90.0 + 450.0), (0.1, 900, 90.0 + 135.0), (None, 900, 90.0 + 135.0)]:
        tuner = SimpleNamespace(trial_stats=stats,
                                settings=SearchSettings(3, then_fit="retrain", final_share=share, time_budget=budget),
                                hypermodel=SimpleNamespace(config_for=lambda hp: build_config({"epochs": 27})))
        tuner.refit_reserve = lambda t, tuner=tuner: KClassifyTuner.refit_reserve(tuner, t)
        tuner.final_reserve = lambda t, tuner=tuner: KClassifyTuner.final_reserve(tuner, t)
        assert KClassifyTuner.reserve(tuner, trial) == pytest.approx(reserve), share


def test_a_trials_clock_keeps_the_final_models_share_once_a_trial_can_be_retrained():
    """Budget 900 s from t=1000, half kept for the final fit: the clock ends at 1900 and keeps 450 s; none before a best."""
    from types import SimpleNamespace

    import keras_tuner

    from kclassify.tuning.tuner import KClassifyTuner, SearchSettings

    hp = keras_tuner.HyperParameters()
    hp.values.update({"tuner/epochs": 9, "tuner/initial_epoch": 0})
    best = SimpleNamespace(trial_id="001", hyperparameters=hp, score=0.7, status="COMPLETED")
    running = SimpleNamespace(trial_id="002", hyperparameters=hp, score=None, status="RUNNING")
    stats = {"001": {"seconds": 45.0}}  # retraining it for 27 epochs: 135 s, less than the share

    def tuner(worker=False, trial_stats=stats, **changes):
        oracle = SimpleNamespace(trials={"001": best, "002": running},
                                 get_best_trials=lambda n: [best, running][:n])  # KerasTuner pads with the rest
        settings = dict(then_fit="retrain", final_share=0.5, time_budget=900, started=1000.0) | changes
        t = SimpleNamespace(trial_stats=trial_stats, oracle=oracle, settings=SearchSettings(3, **settings),
                            worker=worker, executions_per_trial=2,
                            hypermodel=SimpleNamespace(config_for=lambda hp: build_config({"epochs": 27})))
        t.refit_reserve = lambda trial: KClassifyTuner.refit_reserve(t, trial)
        t.final_reserve = lambda trial: KClassifyTuner.final_reserve(t, trial)
        return t

    limit = KClassifyTuner.time_limit(tuner())
    assert (limit.ends_at, limit.kept, limit.runs_after, limit.refit_own) == (1900.0, 450.0, 2, True)
    without_share = KClassifyTuner.time_limit(tuner(final_share=None))
    assert without_share.kept == pytest.approx(135.0) and not without_share.refit_own  # a fixed-epoch retrain
    assert KClassifyTuner.time_limit(tuner(then_fit="reuse", final_share=None)).kept == \
        pytest.approx(135.0)  # the best stopped at rung 9 of 27: reuse retrains it
    best.status = "FAILED"  # only the running trial is left to rank: no clock
    try:
        assert KClassifyTuner.time_limit(tuner()) is None
    finally:
        best.status = "COMPLETED"
    for changes in [{"then_fit": None}, {"time_budget": None}, {"worker": True},
                    {"trial_stats": {"001": {"seconds": 45.0, "infeasible": "over --max-params"}}}]:
        assert KClassifyTuner.time_limit(tuner(**changes)) is None, changes  # no limit; nothing to fall back on


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _limit(ends_at, kept=0.0, runs=1, start=0, end=9, steps=10, refit_epochs=0, refit_own=False):
    from types import SimpleNamespace

    from kclassify.tuning.time_limit import TimeLimit

    clock = _Clock()
    limit = TimeLimit(ends_at, kept=kept, runs=runs, clock=clock, refit_own=refit_own)
    limit.set_model(SimpleNamespace(stop_training=False, stop_evaluating=False))
    limit.begin(start, end, steps, refit_epochs)
    limit.on_train_begin()
    return limit, clock


def _drive(limit, clock, epoch, steps=10, batch_seconds=2.0, validation=0.0):
    """One epoch of ``steps`` batches of ``batch_seconds`` and a validation of ``validation`` seconds;
    the batches the callback saw before it stopped training."""
    limit.on_epoch_begin(epoch)
    for batch in range(steps):
        clock.now += batch_seconds
        limit.on_train_batch_end(batch)
        if limit.model.stop_training:
            return batch + 1
    clock.now += validation
    limit.on_epoch_end(epoch)
    return steps


def test_time_limit_stops_a_trial_from_its_measured_pace():
    """10 steps of 2 s, 9 epochs: after 8 batches (t=16) 164 s are still needed; 84 s left stops it, 200 s do not."""
    limit, clock = _limit(100.0)
    assert _drive(limit, clock, 0) == 8  # 3 warm-up + 5 timed batches, then stopped
    assert limit.needed == pytest.approx(2 * 2.0 + 8 * 10 * 2.0) and limit.left == pytest.approx(84.0)
    assert limit.epoch == 0 and "stopped in epoch 1: needed ~164s more" in limit.reason()
    limit.on_test_batch_end(0)
    assert limit.model.stop_evaluating  # the epoch's validation is cut short too

    # The first epoch is judged by its batches (its validation includes tracing and filling caches);
    # from the second, each epoch's seconds count, validation included: 7 x 26 = 182 s > 180 s left at t=52.
    limit, clock = _limit(232.0)
    assert _drive(limit, clock, 0, validation=6.0) == 10 and limit.needed is None
    assert _drive(limit, clock, 1, validation=6.0) == 10
    assert limit.model.stop_training and limit.needed == pytest.approx(182.0) and limit.left == pytest.approx(180.0)

    # Enough time: never stopped, and a late last epoch stops nothing (nothing left to save).
    limit, clock = _limit(240.0)
    for epoch in range(9):
        assert _drive(limit, clock, epoch, validation=6.0) == 10
    assert clock.now == pytest.approx(234.0) and not limit.model.stop_training and limit.needed is None
    limit.on_epoch_begin(8)
    clock.now = 500.0
    limit.on_epoch_end(8)
    assert limit.needed is None


def test_time_limit_counts_phases_executions_and_retraining_the_trial():
    # A Hyperband continuation (epochs 3-9) in two phases: the second phase's fit measures its own pace.
    limit, clock = _limit(150.0, start=3)
    assert _drive(limit, clock, 3, batch_seconds=1.0) == 10 and limit.needed is None  # 5 x 10 s of 140 s left
    limit.on_train_begin()  # phase two: 3 s per step, 4 more epochs after this one
    assert _drive(limit, clock, 4, batch_seconds=3.0) == 8 and limit.epoch == 4
    assert limit.needed == pytest.approx(2 * 3.0 + 4 * 10 * 3.0) and limit.left == pytest.approx(150.0 - 34.0)

    # Two executions of 9 epochs: at t=16 the first still needs 164 s and the second 180 s; 300 s hold one, not both.
    limit, clock = _limit(316.0, runs=2)
    assert _drive(limit, clock, 0) == 8 and limit.needed == pytest.approx(164.0 + 180.0)

    # 50 s kept for the final fit; were this trial the best, retraining it for 27 epochs at 20 s would
    # take 540 s: 490 s more than kept, so 164 + 490 s are needed and 300 - 50 - 16 = 234 s are left.
    limit, clock = _limit(300.0, kept=50.0, refit_epochs=27)
    assert _drive(limit, clock, 0) == 8
    assert limit.needed == pytest.approx(164.0 + 490.0) and limit.left == pytest.approx(234.0)
    limit, clock = _limit(300.0 + 490.0, kept=50.0, refit_epochs=27)  # the same with the time: runs on
    assert _drive(limit, clock, 0) == 10 and limit.needed is None
    # With a final share the final fit is a budgeted fit: it must hold the trial's own 9 epochs (180 s),
    # 130 s more than kept: 164 + 130 s needed, 234 s left; stopped, where 164 + 130 + 16 + 50 s run on.
    limit, clock = _limit(300.0, kept=50.0, refit_epochs=27, refit_own=True)
    assert _drive(limit, clock, 0) == 8 and limit.needed == pytest.approx(164.0 + 130.0)
    limit, clock = _limit(360.0, kept=50.0, refit_epochs=27, refit_own=True)
    assert _drive(limit, clock, 0) == 10 and limit.needed is None


def test_a_continuation_that_cannot_fit_at_its_earlier_rungs_pace_is_not_started():
    """Rung 1 ran 9 epochs in 90 s: its 18-epoch continuation needs 180 s, and retraining it for 27 epochs
    270 s, 220 s more than the 50 s kept: 400 s. 399 s left rules it out; 401 s do not."""
    from types import SimpleNamespace

    import keras_tuner

    from kclassify.tuning.time_limit import TimeLimit
    from kclassify.tuning.tuner import KClassifyTuner

    parent, child = keras_tuner.HyperParameters(), keras_tuner.HyperParameters()
    parent.values.update({"tuner/epochs": 9, "tuner/initial_epoch": 0})
    child.values.update({"tuner/epochs": 27, "tuner/initial_epoch": 9, "tuner/trial_id": "001"})
    tuner = SimpleNamespace(trial_stats={"001": {"seconds": 90.0}},
                            oracle=SimpleNamespace(get_trial=lambda tid: SimpleNamespace(hyperparameters=parent)),
                            hypermodel=SimpleNamespace(config_for=lambda hp: build_config({"epochs": 27})))
    trial = SimpleNamespace(trial_id="004", hyperparameters=child)
    for ends_at, ruled_out in [(449.0, True), (451.0, False)]:
        limit = TimeLimit(ends_at, kept=50.0, clock=lambda: 0.0)
        assert KClassifyTuner._rules_out(tuner, limit, trial, "001") is ruled_out
        if ruled_out:
            assert limit.reason() == "not started: needed ~400s more (with retraining it, were it the best), 399s left"
    # With a final share, retraining it counts its own 27 epochs too (here all of them): the same.
    limit = TimeLimit(449.0, kept=50.0, clock=lambda: 0.0, refit_own=True)
    assert KClassifyTuner._rules_out(tuner, limit, trial, "001") is True and limit.needed == pytest.approx(400.0)
    child.values["tuner/epochs"] = 18  # an 18-epoch top rung: 90 s of continuation, 180 - 50 s of retrain
    limit = TimeLimit(449.0, kept=50.0, clock=lambda: 0.0, refit_own=True)
    assert KClassifyTuner._rules_out(tuner, limit, trial, "001") is False
    limit = TimeLimit(219.0, kept=50.0, clock=lambda: 0.0, refit_own=True)
    assert KClassifyTuner._rules_out(tuner, limit, trial, "001") is True and limit.needed == pytest.approx(220.0)
    child.values["tuner/epochs"] = 27
    tuner.trial_stats = {}  # the earlier rung was not measured: the clock decides once it runs
    assert KClassifyTuner._rules_out(tuner, TimeLimit(0.0, clock=lambda: 0.0), trial, "001") is False


@pytest.mark.slow
def test_a_trial_that_would_overrun_the_final_models_time_is_stopped_and_recorded(tmp_path, monkeypatch):
    """The budget ends as the second trial starts: Keras stops it after the 8 batches that time it."""
    import json
    import time

    from kclassify.tuning.time_limit import TimeLimit
    from kclassify.tuning.tune import tune
    from kclassify.tuning.tuner import KClassifyTuner

    real_limit, seen = KClassifyTuner.time_limit, []

    def ending_now(self):
        limit = real_limit(self)
        if limit:
            limit.ends_at, limit.kept = time.perf_counter(), 0.0
        return limit

    monkeypatch.setattr(KClassifyTuner, "time_limit", ending_now)
    real_batch_end = TimeLimit.on_train_batch_end

    def spy(self, batch, logs=None):
        seen.append((self.epoch, batch))
        real_batch_end(self, batch, logs)

    monkeypatch.setattr(TimeLimit, "on_train_batch_end", spy)
    data = write_class_folder(tmp_path / "data", per_class=20)
    out = tmp_path / "s"
    space = _space(tmp_path, "lr:\n  type: choice\n  values: [0.001, 0.002]\n")
    result = tune(_base(data, epochs=3, batch_size=2), space, max_trials=2, output=out, time_budget=3600,
                  then_fit=True)
    assert seen == [(0, b) for b in range(8)]  # the first trial ran free; the second stopped mid-epoch 1
    rows = _rows(out)
    assert [r["status"] for r in rows] == ["COMPLETED", "STOPPED"] and rows[1]["epochs"] == "1"
    assert rows[1]["score"] == "" and "needed ~" in rows[1]["message"]
    assert result.best_hparams == {"lr": 0.001}
    oracle_record = json.loads((out / "tuner" / "trial_1" / "trial.json").read_text())
    assert oracle_record["score"] == 0.0  # the oracle holds the penalty, not the half-trained model's score


def test_final_epochs_fill_the_time_left_at_the_best_trials_pace(tmp_path):
    """A continuation that ran epochs 9-27 in 45 s: 2.5 s per epoch, so 300 s hold 120 epochs, one kept for scoring."""
    import json

    from kclassify.tuning.final import _epochs_for, final_epochs

    assert final_epochs(2.5, 300.0, 27) == 119
    assert final_epochs(2.5, 30.0, 27) == 27  # never fewer than --epochs
    assert final_epochs(None, 300.0, 27) == 27  # the trial was not measured
    trial = tmp_path / "tuner" / "trial_003"
    trial.mkdir(parents=True)
    (trial / "trial.json").write_text(json.dumps(
        {"hyperparameters": {"values": {"tuner/epochs": 27, "tuner/initial_epoch": 9}}}))
    (tmp_path / "trial_stats.json").write_text(json.dumps({"001": {"seconds": 5.0}}))
    (tmp_path / "trial_stats-tuner1.json").write_text(json.dumps({"003": {"seconds": 45.0}}))  # a worker's
    assert _epochs_for(tmp_path, "003", 27, 300.0) == 119
    assert _epochs_for(tmp_path, "003", 27, 300.0, growth=1.25) == 95  # 3.125 s per epoch of 1.25x the images


def test_distill_warns_when_the_teachers_trained_under_half_the_final_fits_epochs():
    """The 15-minute search measured in docs/benchmarks.md: first-rung teachers of 9 epochs, a final fit of 55."""
    from kclassify.tuning.final import short_teachers

    message = short_teachers([9, 9, 9], 55)
    assert "at most 9 epochs" in message and "plans 55" in message and "--algorithm random" in message
    assert short_teachers([9, 27, 9], 54) is None  # one teacher trained half the final fit's epochs
    assert short_teachers([9, 27, 9], 55) is not None
    assert short_teachers([], 55) is None  # no teachers, no warning


def test_final_data_train_and_val_reads_the_searchs_val_images_as_train(tmp_path):
    """final_split.csv: the 2 val images become train, test stays test; the search's split.csv is unchanged,
    and a final epoch holds 10/8 of a trial's training images."""
    from kclassify.data.sources import Item
    from kclassify.data.split import read_split, write_split
    from kclassify.tuning.final import _with_val_as_train

    items = [Item(f"{c}/{i}.png", c, "train" if i < 4 else "val" if i == 4 else "test") for c in "ab" for i in range(6)]
    write_split(tmp_path / "split.csv", items)
    before = (tmp_path / "split.csv").read_text()
    path, growth = _with_val_as_train(tmp_path)
    rows = read_split(path)
    assert growth == 1.25 and path == tmp_path / "final_split.csv"
    assert sorted(p for p, (_, s) in rows.items() if s == "train") == sorted(
        [f"{c}/{i}.png" for c in "ab" for i in range(5)])
    assert sorted(p for p, (_, s) in rows.items() if s == "test") == ["a/5.png", "b/5.png"]
    assert all(rows[i.path][0] == i.label for i in items)
    assert (tmp_path / "split.csv").read_text() == before


@pytest.mark.slow
def test_final_data_train_and_val_trains_the_final_model_on_both(small_data, tmp_path):
    """best_run(final_data="train+val"): the final run trains on the search's train and val images, is tested on
    its test images, and its config.yaml names the split it trained on."""
    import json
    from collections import Counter

    from kclassify.data.split import read_split
    from kclassify.tuning.final import best_run
    from kclassify.tuning.tune import base_settings, tune

    base, space = _base(small_data, epochs=1), load_space("default")
    tune(base, space, max_trials=1, output=tmp_path / "t")
    out = tmp_path / "t"
    run = best_run(out, base_settings(out, base), space, "retrain", verbose=0, final_data="train+val")
    searched = Counter(s for _, s in read_split(out / "split.csv").values())
    counts = {s: sum(c.values()) for s, c in json.loads((run.run_dir / "run.json").read_text())["data"]["counts"].items()}
    assert searched["val"] > 0
    assert counts == {"train": searched["train"] + searched["val"], "val": 0, "test": searched["test"]}
    assert load_yaml(run.run_dir / "config.yaml")["split_file"] == str((out / "final_split.csv").resolve())
    assert run.metrics["test"]["accuracy"] >= 0.66  # separable images: well above the 1/3 of chance


@pytest.mark.slow
def test_final_share_retrains_the_best_within_the_time_left(small_data, tmp_path, monkeypatch):
    """best_run(seconds=S) is a fit with time budget S, planned at 6.5 x the best trial's seconds per epoch:
    5 epochs; a final fit cut off before it finished resumes with the plan it started with."""
    import json
    import shutil

    from kclassify.config import to_yaml
    from kclassify.tuning import final
    from kclassify.tuning.final import best_run
    from kclassify.tuning.tune import base_settings, tune

    base, space = _base(small_data, epochs=2), load_space("default")
    tune(base, space, max_trials=2, output=tmp_path / "t", time_budget=600, then_fit="retrain", final_share=0.5)
    out = tmp_path / "t"
    best = yaml.safe_load((out / "best_hparams.yaml").read_text())
    per_epoch = json.loads((out / "trial_stats.json").read_text())[best["trial"]]["seconds"] / 2
    calls = []

    def recorded(settings, **kwargs):  # the first call trains; the resumed one's plan is all it checks
        calls.append((settings.train.epochs, kwargs.get("time_budget")))
        return fit(settings, **kwargs) if len(calls) == 1 else None

    fit = final.fit
    monkeypatch.setattr(final, "fit", recorded)
    run = best_run(out, base_settings(out, base), space, "retrain", verbose=0, seconds=6.5 * per_epoch)
    assert calls == [(5, pytest.approx(6.5 * per_epoch))]
    trained = len((run.run_dir / "history.csv").read_text().splitlines()) - 1
    assert trained >= 1 and load_yaml(run.run_dir / "config.yaml")["epochs"] == trained  # what it trained
    assert json.loads((run.run_dir / "run.json").read_text())["time_budget"]["planned_epochs"] == 5

    again = tmp_path / "again"
    shutil.copytree(out, again, ignore=shutil.ignore_patterns("best_run"))
    started = base_settings(again, base).replace(**best["hparams"])
    (again / "best_run").mkdir()
    (again / "best_run" / "config.yaml").write_text(to_yaml(started.replace(epochs=3)))
    best_run(again, base_settings(again, base), space, "retrain", verbose=0, seconds=6.5 * per_epoch)
    assert calls[-1] == (3, pytest.approx(6.5 * per_epoch))
