"""``tune``: a KerasTuner search over ``fit``'s settings, resumable, with readable outputs.

The tuning folder holds KerasTuner's own state (``tuner/``, so running the same command
again resumes), ``split.csv`` (the split every trial used), ``trials.csv`` (with each
trial's parameters and, when measured, LiteRT latency), ``best_hparams.yaml`` (loadable by
``kclassify fit --hparams``), ``summary.md`` (ranking and accuracy/cost Pareto front) and
``pareto.png``.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
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


@dataclass(frozen=True)
class Budget:
    """Deployment limits: a trial over them is scored infeasible and not trained.

    Args:
        max_params: most parameters a model may have.
        max_latency_ms: slowest single-image latency allowed, measured on this machine
            through LiteRT (see :func:`kclassify.models.profile.measure_latency`).
        measure_latency: record latency even without a latency limit (costs one LiteRT
            conversion per architecture: ~2 s for small_cnn, ~15 s for mobilenet_v3_small).
        threads: LiteRT threads for the latency measurement.
    """

    max_params: int | None = None
    max_latency_ms: float | None = None
    measure_latency: bool = False
    threads: int = 1

    @property
    def latency(self) -> bool:
        return self.measure_latency or self.max_latency_ms is not None

    def violations(self, profile: dict) -> list[str]:
        found = []
        if self.max_params is not None and profile["params"] > self.max_params:
            found.append(f"{profile['params']:,} parameters > {self.max_params:,}")
        if self.max_latency_ms is not None and profile["latency_ms"] > self.max_latency_ms:
            found.append(f"latency {profile['latency_ms']:.3g} ms > {self.max_latency_ms:g} ms")
        return found


@dataclass
class TuneResult:
    folder: Path
    best_hparams: dict
    best_score: float | None
    trials: list[dict]


@contextlib.contextmanager
def released_custom_gradients():
    """Forget, once a trial is over, the custom gradients TensorFlow registered while it trained.

    Keras' TensorFlow optimizer sums gradients through ``ReplicaContext.all_reduce``, a
    ``tf.custom_gradient``; traced in graph mode, each registers ``CustomGradient-N`` in
    TensorFlow's process-wide gradient registry, which is never emptied and keeps the whole
    traced training step alive. ``keras.backend.clear_session()`` and ``gc.collect()`` (which
    KerasTuner runs before each build) do not reach it (tensorflow#61791, tf-keras#286).
    Measured here: +20 MiB resident per small_cnn trial without this, flat with it.
    """
    try:
        from tensorflow.python.framework import ops

        registry = ops._gradient_registry._registry
    except (ImportError, AttributeError):  # TensorFlow changed its internals: nothing to release
        yield
        return
    before = set(registry)
    try:
        yield
    finally:
        for name in set(registry) - before:
            if name.startswith("CustomGradient-"):
                registry.pop(name, None)


class _Progress:
    """Mixed into a KerasTuner tuner: the deployment budget, per-trial costs, one log line per trial."""

    def run_trial(self, trial, *args, **kwargs):
        budget: Budget = self.kclassify_limits
        profile = self.hypermodel.profile(trial.hyperparameters, latency=budget.latency, threads=budget.threads)
        self.profiles_file.write_text(json.dumps(self.hypermodel.profiles))
        reasons = budget.violations(profile)
        self.trial_stats[trial.trial_id] = {**profile, "infeasible": "; ".join(reasons)}
        if reasons:  # scored below every real trial, so the oracle steers away; never trained
            return {self.oracle.objective.name: self._infeasible_score()}
        with released_custom_gradients():
            return super().run_trial(trial, *args, **kwargs)

    def _infeasible_score(self) -> float:
        try:
            scores = [t.score for t in self.oracle.trials.values() if t.status == "COMPLETED" and t.score is not None]
        except AttributeError:  # a distributed worker's OracleClient has no trial list
            scores = []
        if self.oracle.objective.direction == "max":
            return float(min(scores + [0.0]))
        chance = math.log(max(len(self.hypermodel.data.classes), 2))  # cross-entropy of a uniform guess
        return float(max(scores + [chance]))

    def on_trial_begin(self, trial):
        self._trial_started = time.perf_counter()
        super().on_trial_begin(trial)

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        seconds = time.perf_counter() - getattr(self, "_trial_started", time.perf_counter())
        stats = self.trial_stats.setdefault(trial.trial_id, {})
        stats["seconds"] = seconds
        stats["rss_mb"] = _resident_mb()  # trial after trial, this should stay flat
        self.stats_file.write_text(json.dumps(self.trial_stats))  # kept across resumes
        self.kclassify_done += 1
        done = self.kclassify_done
        total = None if getattr(self, "kclassify_worker", False) else self.kclassify_max_trials
        best = _best_feasible(self.oracle, self.trial_stats, 1)
        score = trial.score
        if score is None and self.kclassify_worker:  # the chief scored it
            score = self.oracle.get_trial(trial.trial_id).score
        elapsed = time.perf_counter() - self.kclassify_started
        eta = elapsed / max(done, 1) * max(total - done, 0) if total else 0
        budget = getattr(self, "kclassify_time_budget", None)
        if budget and elapsed > budget and not self.kclassify_worker:
            log.info("time budget of %.0fs spent after %d trial(s): stopping the search", budget, done)
            self.oracle.max_trials = len(self.oracle.trials)  # the oracle then answers STOPPED
        values = {k: v for k, v in trial.hyperparameters.values.items() if not k.startswith("tuner/")}
        status = "infeasible (" + stats["infeasible"] + ")" if stats.get("infeasible") else trial.status.lower()
        if stats.get("infeasible"):
            score = None
        log.info("trial %d/%s %s: %s score %s | best %s | %.0fs, elapsed %.0fs, ETA %.0fs",
                 done, total or "?", status, values,
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
    suffix = "-" + worker if worker.startswith("tuner") else ""
    tuner.stats_file = folder / f"trial_stats{suffix}.json"
    tuner.trial_stats = json.loads(tuner.stats_file.read_text()) if tuner.stats_file.is_file() else {}
    tuner.profiles_file = folder / f"profiles{suffix}.json"
    for path in sorted(folder.glob("profiles*.json")):  # architectures measured before (resume, other workers)
        hypermodel.profiles.update(json.loads(path.read_text()))
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
         verbose: int = 0, distributed: str | None = None, time_budget: float | None = None,
         limits: Budget | None = None) -> TuneResult | None:
    """Search ``space`` and write a tuning folder.

    With ``distributed='worker'`` (see :func:`configure_distributed`) this process only
    runs trials for the chief and returns None; the chief writes the outputs.
    ``time_budget`` (seconds) starts no new trial once spent. ``limits`` (max parameters,
    max LiteRT latency) are checked before a trial trains: a trial over them is recorded
    INFEASIBLE with its cost and scored below every real trial. Each trial logs to
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
    tuner.kclassify_time_budget = time_budget
    tuner.kclassify_limits = limits or Budget()
    import keras

    # KerasTuner gives each trial its own folder under logs/ and writes its hyperparameters
    # for TensorBoard's HParams plugin when it finds a TensorBoard callback.
    tuner.search(verbose=verbose, callbacks=[keras.callbacks.TensorBoard(str(folder / "logs"), write_graph=False)])
    if distributed == "worker":
        return None
    if distributed == "chief":  # the workers ran and measured the trials
        for path in sorted(folder.glob("trial_stats-*.json")):
            tuner.trial_stats.update(json.loads(path.read_text()))
    return _write_outputs(folder, tuner, space, objective, tuner.kclassify_limits)


def _resident_mb() -> float | None:
    """Resident memory of this process in MiB (Linux), None elsewhere."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


def _best_feasible(oracle, stats: dict, count: int) -> list:
    """The oracle's best trials that met the budget (an infeasible trial holds a penalty score)."""
    try:
        ranked = oracle.get_best_trials(len(oracle.trials))
    except AttributeError:  # a distributed worker's OracleClient
        ranked = oracle.get_best_trials(count + 20)
    return [t for t in ranked if not stats.get(t.trial_id, {}).get("infeasible")][:count]


def _trial_rows(tuner, space: SearchSpace) -> list[dict]:
    rows = []
    for trial in sorted(tuner.oracle.trials.values(), key=lambda t: int(t.trial_id)):
        hp = trial.hyperparameters
        stats = tuner.trial_stats.get(trial.trial_id, {})
        values = {n: hp.get(n) if n in hp.values and hp.is_active(n) else "" for n in space.names}
        epochs = hp.values.get("tuner/epochs") or tuner.hypermodel.base.train.epochs
        status, score, message = trial.status, trial.score, ""
        if trial.status == "FAILED":
            message = ((trial.message or "").strip().splitlines() or [""])[-1]
        elif stats.get("infeasible"):
            status, score, message, epochs = "INFEASIBLE", None, stats["infeasible"], 0
        rows.append({"trial": trial.trial_id, "status": status, "score": score, **values, "epochs": epochs,
                     "seconds": round(stats.get("seconds", 0.0), 1), "params": stats.get("params", ""),
                     "latency_ms": stats.get("latency_ms", ""), "rss_mb": stats.get("rss_mb", ""),
                     "message": message})
    return rows


def _write_outputs(folder: Path, tuner, space: SearchSpace, objective: str, limits: Budget) -> TuneResult:
    rows = _trial_rows(tuner, space)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(folder / "trials.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    maximize = not objective.endswith("loss")
    front = pareto_front(rows, maximize)
    _write_summary(folder, rows, keys, objective, limits, front)
    _plot_pareto(folder / "pareto.png", rows, front, objective, limits)
    best = _best_feasible(tuner.oracle, tuner.trial_stats, 1)
    if not best:
        infeasible = [r for r in rows if r["status"] == "INFEASIBLE"]
        if infeasible:
            by = "params" if limits.max_params is not None else "latency_ms"
            cheapest = min(infeasible, key=lambda r: r[by])
            raise ConfigError(
                f"No trial met the budget ({_limits_text(limits)}); the cheapest model tried had "
                f"{cheapest['params']:,} parameters{_latency_text(cheapest)}. Raise the limit or search "
                f"smaller models (e.g. --space mobile, smaller image_size). Details: {folder / 'trials.csv'}")
        raise ConfigError(f"No trial of {folder} finished; see the message column of {folder / 'trials.csv'}.")
    hp = best[0].hyperparameters
    values = {n: hp.get(n) for n in space.names if n in hp.values and hp.is_active(n)}
    (folder / "best_hparams.yaml").write_text(yaml.safe_dump(
        {"objective": objective, "score": float(best[0].score), "trial": best[0].trial_id, "hparams": values},
        sort_keys=False))
    return TuneResult(folder, values, float(best[0].score), rows)


def _limits_text(limits: Budget) -> str:
    parts = ([f"--max-params {limits.max_params:,}"] if limits.max_params is not None else []) + \
        ([f"--max-latency-ms {limits.max_latency_ms:g}"] if limits.max_latency_ms is not None else [])
    return ", ".join(parts) or "none"


def _latency_text(row: dict) -> str:
    return f" and {row['latency_ms']:.3g} ms latency" if row.get("latency_ms") not in ("", None) else ""


def pareto_front(rows: list[dict], maximize: bool = True) -> list[dict]:
    """Completed trials no other trial beats on both score and cost (latency if measured, else parameters).

    Sorted from cheapest to most expensive; each is better-scoring than every cheaper one.
    """
    cost = _cost_key(rows)
    done = [r for r in rows if r["status"] == "COMPLETED" and r["score"] is not None and r.get(cost) != ""]
    sign = 1 if maximize else -1
    front, best = [], -math.inf
    for r in sorted(done, key=lambda r: (r[cost], -sign * r["score"])):
        if sign * r["score"] > best:
            front.append(r)
            best = sign * r["score"]
    return front


def _cost_key(rows: list[dict]) -> str:
    return "latency_ms" if any(r.get("latency_ms") not in ("", None) for r in rows) else "params"


def _write_summary(folder: Path, rows: list[dict], keys: list[str], objective: str, limits: Budget,
                   front: list[dict]) -> None:
    ranked = sorted((r for r in rows if r["score"] is not None), key=lambda r: r["score"],
                    reverse=not objective.endswith("loss"))
    lines = [f"# Tuning summary: {objective}", ""]
    if limits.max_params is not None or limits.max_latency_ms is not None:
        lines += [f"Budget: {_limits_text(limits)}. Trials over it are INFEASIBLE and were not trained.", ""]
    keys = [k for k in keys if k == "score" or any(r.get(k) not in ("", None) for r in rows)]  # no empty columns
    lines += _table(keys, ranked + [r for r in rows if r["score"] is None], rank=True)
    cost = _cost_key(rows)
    if front:
        what = ("single-image latency through LiteRT on this machine" if cost == "latency_ms"
                else "parameters (pass --measure-latency for LiteRT latency)")
        lines += ["", f"## Pareto front: {objective} vs {what}", "",
                  "No other trial is both cheaper and better. Cheapest first; each row scores better than "
                  "every row above it.", ""]
        lines += _table(keys, front, rank=False)
        lines += ["", "![Pareto front](pareto.png)"]
    (folder / "summary.md").write_text("\n".join(lines) + "\n")


def _table(keys: list[str], rows: list[dict], *, rank: bool) -> list[str]:
    head = (["rank"] if rank else []) + keys
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, r in enumerate(rows, 1):
        cells = [f"{r[k]:.4g}" if isinstance(r.get(k), float) else "" if r.get(k) is None else str(r[k])
                 for k in keys]
        position = str(i) if r["score"] is not None else "-"
        lines.append("| " + " | ".join(([position] if rank else []) + cells) + " |")
    return lines


def _plot_pareto(path: Path, rows: list[dict], front: list[dict], objective: str, limits: Budget) -> None:
    """Score against cost for every trial that has both; the front as a line; the budget as a dashed line."""
    cost = _cost_key(rows)
    done = [r for r in rows if r["status"] == "COMPLETED" and r["score"] is not None and r.get(cost) != ""]
    if not done:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    ax.scatter([r[cost] for r in done], [r["score"] for r in done], s=22, color="0.6", label="trial")
    ax.plot([r[cost] for r in front], [r["score"] for r in front], "o-", color="C0", drawstyle="steps-post",
            label="Pareto front")  # steps: between two front points no trial does better
    for r in front:
        ax.annotate(r["trial"], (r[cost], r["score"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    limit = limits.max_latency_ms if cost == "latency_ms" else limits.max_params
    if limit is not None:
        ax.axvline(limit, linestyle="--", color="C3", label="budget")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("latency (ms, LiteRT, batch 1)" if cost == "latency_ms" else "parameters")
    ax.set_ylabel(objective)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
