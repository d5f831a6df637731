"""What a search leaves for people: trials.csv, summary.md, pareto.png (or a progress plot), best_hparams.yaml."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..errors import ConfigError
from ..plotting import figure
from .budget import Budget
from .space import SearchSpace


@dataclass
class TuneResult:
    folder: Path
    best_hparams: dict
    best_score: float | None
    trials: list[dict]
    best_is_base: bool = False  # the best trial trained the base settings: the search found nothing better
    note: str = ""  # what the user should know about the result (summary.md opens with it)


def best_feasible(oracle, stats: dict, count: int) -> list:
    """The oracle's best finished trials that met the budget (an infeasible trial holds a penalty score).

    KerasTuner pads its ranking with running and failed trials when fewer completed than asked for.
    """
    try:
        ranked = oracle.get_best_trials(len(oracle.trials))
    except AttributeError:  # a distributed worker's OracleClient
        ranked = oracle.get_best_trials(count + 20)
    return [t for t in ranked
            if t.status == "COMPLETED" and not stats.get(t.trial_id, {}).get("infeasible")][:count]


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
        elif "stopped_in_epoch" in stats:  # would have eaten into the final model's time (time_limit.TimeLimit)
            status, score, message, epochs = "STOPPED", None, stats["infeasible"], stats["stopped_in_epoch"]
        elif stats.get("infeasible"):
            status, score, message, epochs = "INFEASIBLE", None, stats["infeasible"], 0
        rows.append({"trial": trial.trial_id, "status": status, "score": score, **values, "epochs": epochs,
                     "seconds": round(stats.get("seconds", 0.0), 1), "params": stats.get("params", ""),
                     "latency_ms": stats.get("latency_ms", ""), "rss_mb": stats.get("rss_mb", ""),
                     "message": message})
    return rows


def write_outputs(folder: Path, tuner, space: SearchSpace, objective: str, limits: Budget) -> TuneResult:
    rows = _trial_rows(tuner, space)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(folder / "trials.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    maximize = not objective.endswith("loss")
    front = pareto_front(rows, maximize)
    best = best_feasible(tuner.oracle, tuner.trial_stats, 1)
    values = _searched_values(best[0].hyperparameters, space) if best else {}
    base = tuner.hypermodel.defaults()
    best_is_base = bool(best) and all(base.get(n) == v for n, v in values.items())
    note = base_best_text(others_tried(rows, space, base), objective) if best_is_base else ""
    if _costs_differ(rows):
        _write_summary(folder, rows, keys, objective, limits, front, plot="pareto.png", note=note)
        _plot_pareto(folder / "pareto.png", rows, front, objective, limits)
    else:  # every trial costs the same: a Pareto plot would be one column; show the search's progress
        _write_summary(folder, rows, keys, objective, limits, [], plot="progress.png", note=note)
        _plot_progress(folder / "progress.png", rows, objective)
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
    (folder / "best_hparams.yaml").write_text(yaml.safe_dump(
        {"objective": objective, "score": float(best[0].score), "trial": best[0].trial_id, "hparams": values},
        sort_keys=False))
    return TuneResult(folder, values, float(best[0].score), rows, best_is_base, note)


def base_best_text(others: int, objective: str) -> str:
    """What a search whose best trial trained the base settings tells its user; ``others``: see :func:`others_tried`."""
    return (f"The best trial trained the base settings (the ones fit trains without a search): none of the "
            f"{others} other setting(s) tried beat them on {objective}. More trials (--max-trials, --time-budget) "
            f"or another space search further.")


def others_tried(rows: list[dict], space: SearchSpace, base: dict) -> int:
    """Distinct settings other than the base that a finished trial trained (a Hyperband rung and its
    continuation count once; failed and infeasible trials not at all)."""
    tried = {tuple(str(r[n]) for n in space.names) for r in rows if r["status"] == "COMPLETED"}
    return len(tried - {tuple(str(base.get(n, "")) for n in space.names)})


def _searched_values(hp, space: SearchSpace) -> dict:
    return {n: hp.get(n) for n in space.names if n in hp.values and hp.is_active(n)}


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


def _costs_differ(rows: list[dict]) -> bool:
    cost = _cost_key(rows)
    return len({r[cost] for r in rows if r.get(cost) not in ("", None)}) > 1  # infeasible trials count


def _cost_key(rows: list[dict]) -> str:
    return "latency_ms" if any(r.get("latency_ms") not in ("", None) for r in rows) else "params"


def _write_summary(folder: Path, rows: list[dict], keys: list[str], objective: str, limits: Budget,
                   front: list[dict], plot: str, note: str = "") -> None:
    ranked = sorted((r for r in rows if r["score"] is not None), key=lambda r: r["score"],
                    reverse=not objective.endswith("loss"))
    lines = [f"# Tuning summary: {objective}", ""] + ([note, ""] if note else [])
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
    lines += ["", f"![{'Pareto front' if front else 'search progress'}]({plot})"]
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


def _plot_progress(path: Path, rows: list[dict], objective: str) -> None:
    """Each trial's score by trial number, with the best so far as a step line."""
    done = [r for r in rows if r["status"] == "COMPLETED" and r["score"] is not None]
    if not done:
        return
    maximize = not objective.endswith("loss")
    numbers = [int(r["trial"]) for r in done]
    scores = [r["score"] for r in done]
    best, running = [], None
    for score in scores:
        running = score if running is None else (max if maximize else min)(running, score)
        best.append(running)
    with figure(path, "trial", objective) as ax:
        ax.scatter(numbers, scores, s=22, color="0.6", label="trial")
        ax.plot(numbers, best, drawstyle="steps-post", color="C0", label="best so far")


def _plot_pareto(path: Path, rows: list[dict], front: list[dict], objective: str, limits: Budget) -> None:
    """Score against cost for every trial that has both; the front as a line; the budget as a dashed line."""
    cost = _cost_key(rows)
    done = [r for r in rows if r["status"] == "COMPLETED" and r["score"] is not None and r.get(cost) != ""]
    if not done:
        return
    import matplotlib.ticker

    xlabel = "latency (ms, LiteRT, batch 1)" if cost == "latency_ms" else "parameters"
    with figure(path, xlabel, objective) as ax:
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
