"""kclassify tune: each algorithm, outputs, resume, best_hparams reused by fit, --then-fit."""

import csv

import pytest
import yaml

from conftest import write_class_folder
from kclassify.cli import main
from kclassify.config import build_config, load_yaml
from kclassify.tuning import load_space


@pytest.fixture
def small_data(tmp_path):
    return write_class_folder(tmp_path / "data", per_class=12)


def _base(data, **extra):
    return build_config({"data": str(data), "image_size": 16, "epochs": 2, "batch_size": 8, "augment": 0.0, **extra})


def _rows(folder):
    with open(folder / "trials.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("algorithm", ["random", "bayesian", "hyperband"])
def test_each_algorithm_runs_tiny_trials(small_data, tmp_path, algorithm):
    from kclassify.tuning.tune import tune

    out = tmp_path / algorithm
    result = tune(_base(small_data), load_space("default"), algorithm=algorithm, max_trials=2, output=out)
    rows = _rows(out)
    assert len(rows) == 2 and {r["status"] for r in rows} == {"COMPLETED"}
    assert {"optimizer", "lr", "batch_size", "dropout", "epochs", "seconds", "score"} <= set(rows[0])
    assert result.best_score == max(float(r["score"]) for r in rows)
    assert (out / "summary.md").read_text().startswith("# Tuning summary: val_accuracy")
    assert (out / "split.csv").is_file() and (out / "tuner").is_dir()
    best = yaml.safe_load((out / "best_hparams.yaml").read_text())
    assert best["hparams"] == result.best_hparams
    cfg = build_config(load_yaml(out / "best_hparams.yaml"))  # what `fit --hparams` does
    assert cfg.train.optimizer == result.best_hparams["optimizer"]
    assert cfg.train.batch_size == result.best_hparams["batch_size"]


def test_rerun_resumes_and_tops_up_to_the_asked_count(small_data, tmp_path):
    from kclassify.tuning.tune import tune

    out = tmp_path / "t"
    tune(_base(small_data, epochs=1), load_space("default"), max_trials=2, output=out)
    first = _rows(out)
    tune(_base(small_data, epochs=1), load_space("default"), max_trials=3, output=out)
    again = _rows(out)
    assert len(again) == 3 and again[:2] == first  # finished trials are not rerun


def test_cli_tune_then_fit(small_data, tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["tune", "--data", str(small_data), "--space", "default", "--max-trials", "2", "--epochs", "1",
                 "--image-size", "16", "--batch-size", "8", "--output", str(out), "--then-fit"])
    assert code == 0
    assert (out / "best_run" / "model.keras").is_file() and (out / "best_run" / "metrics.json").is_file()
    best = load_yaml(out / "best_hparams.yaml")
    fitted = load_yaml(out / "best_run" / "config.yaml")
    assert all(fitted[k] == v for k, v in best.items())
    assert "best val_accuracy" in capsys.readouterr().out


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
    assert all(float(r["seconds"]) > 0 for r in rows)
    assert (out / "best_hparams.yaml").is_file()


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
