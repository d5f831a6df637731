"""``tune``: a KerasTuner search over ``fit``'s settings, resumable, with readable outputs.

The tuning folder holds KerasTuner's own state (``tuner/``, so running the same command
again resumes), ``split.csv`` (the split every trial used), ``trials.csv``,
``best_hparams.yaml`` (loadable by ``kclassify fit --hparams``) and ``summary.md``.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import keras_tuner
import yaml

from ..config import Config
from ..data import prepare_data, write_split
from ..errors import ConfigError
from ..runs import DEFAULT_ROOT, default_run_name
from .hypermodel import ClassifierHyperModel
from .space import SearchSpace

log = logging.getLogger(__name__)

ALGORITHMS = {
    "random": keras_tuner.RandomSearch,
    "bayesian": keras_tuner.BayesianOptimization,
    "hyperband": keras_tuner.Hyperband,
}


@dataclass
class TuneResult:
    folder: Path
    best_hparams: dict
    best_score: float | None
    trials: list[dict]


class _Progress:
    """Mixed into a KerasTuner tuner: one log line per trial with score, best so far and ETA."""

    def on_trial_begin(self, trial):
        self._trial_started = time.perf_counter()
        super().on_trial_begin(trial)

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        seconds = time.perf_counter() - getattr(self, "_trial_started", time.perf_counter())
        self.trial_seconds[trial.trial_id] = seconds
        self.seconds_file.write_text(json.dumps(self.trial_seconds))  # kept across resumes
        self.kclassify_done += 1
        done = self.kclassify_done
        total = None if getattr(self, "kclassify_worker", False) else self.kclassify_max_trials
        best = self.oracle.get_best_trials(1)
        score = trial.score
        if score is None and self.kclassify_worker:  # the chief scored it
            score = self.oracle.get_trial(trial.trial_id).score
        elapsed = time.perf_counter() - self.kclassify_started
        eta = elapsed / max(done, 1) * max(total - done, 0) if total else 0
        budget = getattr(self, "kclassify_budget", None)
        if budget and elapsed > budget and not self.kclassify_worker:
            log.info("time budget of %.0fs spent after %d trial(s): stopping the search", budget, done)
            self.oracle.max_trials = len(self.oracle.trials)  # the oracle then answers STOPPED
        values = {k: v for k, v in trial.hyperparameters.values.items() if not k.startswith("tuner/")}
        log.info("trial %d/%s %s: %s score %s | best %s | %.0fs, elapsed %.0fs, ETA %.0fs",
                 done, total or "?", trial.status.lower(), values,
                 f"{score:.4f}" if score is not None else "-",
                 f"{best[0].score:.4f}" if best and best[0].score is not None else "-", seconds, elapsed, eta)


def _tuner(algorithm: str, hypermodel, objective, folder: Path, max_trials: int, seed: int,
           executions: int, max_epochs: int):
    if algorithm not in ALGORITHMS:
        raise ConfigError(f"Unknown algorithm {algorithm!r}. Valid: {', '.join(ALGORITHMS)}.")
    base = ALGORITHMS[algorithm]
    cls = type(f"KClassify{base.__name__}", (_Progress, base), {})
    common = dict(hypermodel=hypermodel, objective=objective, directory=str(folder), project_name="tuner",
                  overwrite=False, seed=seed, max_retries_per_trial=0, max_consecutive_failed_trials=3)
    if algorithm == "hyperband":
        tuner = cls(max_epochs=max_epochs, factor=3, **common)
        tuner.oracle.max_trials = max_trials
    else:
        tuner = cls(max_trials=max_trials, executions_per_trial=executions, **common)
    worker = os.environ.get("KERASTUNER_TUNER_ID", "")  # one file per distributed worker
    tuner.seconds_file = folder / f"trial_seconds{'-' + worker if worker.startswith('tuner') else ''}.json"
    tuner.trial_seconds = json.loads(tuner.seconds_file.read_text()) if tuner.seconds_file.is_file() else {}
    tuner.kclassify_max_trials = max_trials
    tuner.kclassify_worker = worker.startswith("tuner")  # a distributed worker sees its own trials only
    try:
        tuner.kclassify_done = len([t for t in tuner.oracle.trials.values() if t.status != "RUNNING"])
    except AttributeError:  # a distributed worker's OracleClient has no trial list
        tuner.kclassify_done = 0
    return tuner


def configure_distributed(role: str | None, oracle: str | None, worker_id: str | None = None) -> str | None:
    """Set KerasTuner's chief/worker environment; return the role (None: not distributed).

    KerasTuner's own distributed mode: the chief serves the oracle over gRPC at
    ``oracle`` (HOST:PORT) and runs no trial; each worker asks it for trials. Values
    already in the KERASTUNER_* environment variables are used when flags are absent.
    """
    import socket

    role = role or ({"chief": "chief"}.get(os.environ.get("KERASTUNER_TUNER_ID", ""), None)
                    or ("worker" if os.environ.get("KERASTUNER_TUNER_ID") else None))
    if role is None:
        return None
    if oracle:
        host, _, port = oracle.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"--oracle expects HOST:PORT (e.g. 10.0.0.1:8000); received {oracle!r}.")
        os.environ["KERASTUNER_ORACLE_IP"], os.environ["KERASTUNER_ORACLE_PORT"] = host, port
    if not (os.environ.get("KERASTUNER_ORACLE_IP") and os.environ.get("KERASTUNER_ORACLE_PORT")):
        raise ConfigError("Distributed tuning needs the chief's address: pass --oracle HOST:PORT "
                          "(or set KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT).")
    if role == "chief":
        os.environ["KERASTUNER_TUNER_ID"] = "chief"
    elif not os.environ.get("KERASTUNER_TUNER_ID") or os.environ["KERASTUNER_TUNER_ID"] == "chief":
        os.environ["KERASTUNER_TUNER_ID"] = f"tuner-{worker_id or f'{socket.gethostname()}-{os.getpid()}'}"
    return role


def tune(base: Config, space: SearchSpace, *, algorithm: str = "random", max_trials: int = 10,
         output: str | Path | None = None, objective: str = "val_accuracy", executions_per_trial: int = 1,
         verbose: int = 0, distributed: str | None = None, time_budget: float | None = None) -> TuneResult | None:
    """Search ``space`` and write a tuning folder.

    With ``distributed='worker'`` (see :func:`configure_distributed`) this process only
    runs trials for the chief and returns None; the chief writes the outputs.
    ``time_budget`` (seconds) starts no new trial once spent. Each trial logs to
    ``logs/`` with KerasTuner's TensorBoard HParams integration, so trials can be
    compared in TensorBoard's HParams tab.

    Example:
        >>> from kclassify.tuning import load_space
        >>> result = tune(Config(), load_space("default"), algorithm="random", max_trials=3)
        >>> sorted(result.best_hparams) [:2]
        ['batch_size', 'dropout']
    """
    folder = Path(output) if output else DEFAULT_ROOT / ("tune-" + default_run_name(base.data.data))
    folder.mkdir(parents=True, exist_ok=True)
    d = base.data
    split_file = folder / "split.csv"
    data = prepare_data(d.data, val_fraction=d.val_fraction, test_fraction=d.test_fraction, seed=base.train.seed,
                        split_file=split_file if split_file.is_file() else d.split_file, min_images=d.min_images)
    if distributed != "worker":
        write_split(split_file, data.items())
    hypermodel = ClassifierHyperModel(base, space, data, folder / "cache")
    direction = "min" if objective.endswith("loss") else "max"
    tuner = _tuner(algorithm, hypermodel, keras_tuner.Objective(objective, direction), folder, max_trials,
                   base.train.seed, executions_per_trial, base.train.epochs)
    if distributed != "worker":  # the oracle (the chief's, when distributed) knows the space up front
        hypermodel.declare(tuner.oracle.hyperparameters)
    tuner.kclassify_started = time.perf_counter()
    tuner.kclassify_budget = time_budget
    import keras

    # KerasTuner gives each trial its own folder under logs/ and writes its hyperparameters
    # for TensorBoard's HParams plugin when it finds a TensorBoard callback.
    tuner.search(verbose=verbose, callbacks=[keras.callbacks.TensorBoard(str(folder / "logs"), write_graph=False)])
    if distributed == "worker":
        return None
    if distributed == "chief":  # the workers timed the trials
        for path in folder.glob("trial_seconds*.json"):
            tuner.trial_seconds.update(json.loads(path.read_text()))
    return _write_outputs(folder, tuner, space, objective)


def _trial_rows(tuner, space: SearchSpace) -> list[dict]:
    rows = []
    for trial in sorted(tuner.oracle.trials.values(), key=lambda t: int(t.trial_id)):
        hp = trial.hyperparameters
        values = {n: hp.get(n) if hp.is_active(n) else "" for n in space.names if n in hp.values}
        epochs = hp.values.get("tuner/epochs") or tuner.hypermodel.base.train.epochs
        error = (trial.message or "").strip().splitlines()[-1:] if trial.status == "FAILED" else []
        rows.append({"trial": trial.trial_id, "status": trial.status, "score": trial.score, **values,
                     "epochs": epochs, "seconds": round(tuner.trial_seconds.get(trial.trial_id, 0.0), 1),
                     "error": error[0] if error else ""})
    return rows


def _write_outputs(folder: Path, tuner, space: SearchSpace, objective: str) -> TuneResult:
    rows = _trial_rows(tuner, space)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(folder / "trials.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    best = tuner.oracle.get_best_trials(1)
    if not best:
        raise ConfigError(f"No trial of {folder} finished; see trials.csv for the errors.")
    hp = best[0].hyperparameters
    values = {n: hp.get(n) for n in space.names if n in hp.values and hp.is_active(n)}
    (folder / "best_hparams.yaml").write_text(yaml.safe_dump(
        {"objective": objective, "score": float(best[0].score), "trial": best[0].trial_id, "hparams": values},
        sort_keys=False))
    _write_summary(folder, rows, keys, objective)
    return TuneResult(folder, values, float(best[0].score), rows)


def _write_summary(folder: Path, rows: list[dict], keys: list[str], objective: str) -> None:
    ranked = sorted((r for r in rows if r["score"] is not None), key=lambda r: r["score"],
                    reverse=not objective.endswith("loss"))
    lines = [f"# Tuning summary: {objective}", "", "| rank | " + " | ".join(keys) + " |",
             "|" + "---|" * (len(keys) + 1)]
    for i, r in enumerate(ranked + [r for r in rows if r["score"] is None], 1):
        cells = [f"{r.get(k):.4g}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in keys]
        lines.append(f"| {i} | " + " | ".join(cells) + " |")
    (folder / "summary.md").write_text("\n".join(lines) + "\n")
