"""Accuracy against wall time: does a recipe get better with every minute it is given? (issue 28)

    python benchmarks/budget_curve.py DATA --out bench/budget [--minutes 3 6 12 24] [--seeds 1 2 3]
        [--arm default=] [--arm new="--ema 0.999 --augment-policy randaugment"] [--checkpoints]
        [any fit flag, for every arm]

For each split seed, each budget and each arm (a name and the fit flags that make it, after the flags
every arm shares), one ``kclassify fit --time-budget`` from scratch; then its held-out test accuracy,
the epochs it trained, the epoch it kept (run.json's ``kept``, by the run's ``--keep`` rule) and,
for every arm after the first, ``kclassify compare`` against the first arm's run of the same seed and
budget (paired, same test images). Pooled over seeds: the mean accuracy per arm and budget, the pooled
McNemar test of each arm against the first at each budget, and whether each arm's accuracy ever falls
as the budget grows. ``--checkpoints`` also scores each run's
``checkpoints/best.keras`` and ``checkpoints/last.keras`` on its test split with ``kclassify evaluate``
and compares them (the two ``--keep`` rules on the same run, paired: issue 28's "which model the run
keeps"), with the pooled McNemar p of last against best. Writes ``budget.csv`` and ``budget.png`` (accuracy
against minutes, one line per arm). Runs already in --out are reused, so an interrupted benchmark
resumes; run it from a copy of the source tree that does not change while it runs.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import subprocess
import sys
from pathlib import Path

KCLASSIFY = [sys.executable, "-m", "kclassify"]


def fit(data: str, run: Path, seed: int, minutes: float, flags: list[str]) -> Path:
    if not (run / "metrics.json").is_file():
        command = ["fit", "--data", data, "--seed", str(seed), "--output", str(run), "--weights", "none",
                   "--time-budget", f"{minutes * 60:.0f}s", *flags]
        print("$ kclassify " + " ".join(command), flush=True)
        subprocess.run([*KCLASSIFY, *command], check=True)
    return run


def figures(run: Path) -> dict:
    import yaml

    metrics = json.loads((run / "metrics.json").read_text())["test"]
    monitor = yaml.safe_load((run / "config.yaml").read_text())["train"]["monitor"]
    with open(run / "history.csv") as f:
        rows = list(csv.DictReader(f))
    kept = json.loads((run / "run.json").read_text()).get("kept", {}).get("epoch")  # fit --keep records it
    if kept is None and rows and monitor in rows[0]:  # a run from before --keep: best.keras's epoch
        values = [float(r[monitor]) for r in rows]
        pick = min if monitor.endswith("loss") else max
        kept = values.index(pick(values)) + 1
    return {"accuracy": metrics["accuracy"], "epochs": len(rows), "kept_epoch": kept}


def checkpoint_accuracy(run: Path) -> dict:
    """Test accuracy of the run's best.keras and last.keras (``kclassify evaluate`` of each on the run's own
    test split, into ``RUN/checkpoint-evaluations/``), and ``kclassify compare`` of last against best."""
    folders = {}
    for name in ("best", "last"):
        folder = folders[name] = run / "checkpoint-evaluations" / name
        if not (folder / "predictions.csv").is_file():
            checkpoint = run / "checkpoints" / f"{name}.keras"
            subprocess.run([*KCLASSIFY, "evaluate", str(checkpoint), "--output", str(folder)], check=True,
                           capture_output=True)
    diff = compare(folders["best"], folders["last"])
    return {"best_accuracy": round(diff["accuracy_a"], 4), "last_accuracy": round(diff["accuracy_b"], 4),
            "only_best": diff["only_a_right"], "only_last": diff["only_b_right"]}


def compare(a: Path, b: Path) -> dict:
    out = subprocess.run([*KCLASSIFY, "compare", str(a), str(b), "--json"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def plot(rows: list[dict], arms: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, arm in enumerate(arms):
        minutes = sorted({r["minutes"] for r in rows if r["arm"] == arm})
        means = [sum(r["accuracy"] for r in rows if (r["arm"], r["minutes"]) == (arm, m))
                 / max(1, len([r for r in rows if (r["arm"], r["minutes"]) == (arm, m)])) for m in minutes]
        ax.plot(minutes, means, marker="o", color=f"C{i}", label=arm)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("fit --time-budget, minutes (this machine)")
    ax.set_ylabel("test accuracy (mean over splits)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data")
    parser.add_argument("--out", type=Path, default=Path("bench/budget"))
    parser.add_argument("--minutes", type=float, nargs="+", default=[3, 6, 12, 24])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--checkpoints", action="store_true", help="also score best.keras and last.keras of each run")
    parser.add_argument("--arm", action="append", metavar="NAME=FLAGS",
                        help="an arm and its fit flags (repeatable; the first is the baseline); default: "
                        "default= (today's defaults)")
    args, shared = parser.parse_known_args()
    arms = dict(a.split("=", 1) for a in (args.arm or ["default="]))
    names = list(arms)
    rows = []
    for seed in args.seeds:
        for minutes in args.minutes:
            runs = {name: fit(args.data, args.out / f"seed{seed}-{minutes:g}min-{name}", seed, minutes,
                              [*shared, *shlex.split(flags)]) for name, flags in arms.items()}
            for name, run in runs.items():
                row = {"seed": seed, "minutes": minutes, "arm": name, **figures(run), "vs_first_points": "",
                       "only_first": "", "only_this": "", "run": str(run)}
                if args.checkpoints:
                    row.update(checkpoint_accuracy(run))
                if name != names[0]:
                    diff = compare(runs[names[0]], run)
                    row.update(vs_first_points=round(100 * diff["accuracy_difference"]["value"], 1),
                               only_first=diff["only_a_right"], only_this=diff["only_b_right"])
                rows.append(row)
                print(json.dumps(row), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "budget.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, names, args.out / "budget.png")
    from kclassify.evaluation.compare import mcnemar_p

    print(f"\n{'arm':16} " + " ".join(f"{m:>8g}m" for m in args.minutes) + "   (mean test accuracy over seeds "
          f"{args.seeds}; pooled McNemar p against {names[0]} below)")
    for name in names:
        means = []
        for m in args.minutes:
            sel = [r for r in rows if (r["arm"], r["minutes"]) == (name, m)]
            means.append(sum(r["accuracy"] for r in sel) / len(sel))
        falls = any(b < a for a, b in zip(means, means[1:]))
        print(f"{name:16} " + " ".join(f"{v:9.4f}" for v in means) + ("   falls with more time" if falls else ""))
        for rule in ("best", "last") if args.checkpoints else ():
            kept = [sum(r[f"{rule}_accuracy"] for r in rows if (r["arm"], r["minutes"]) == (name, m))
                    / len(args.seeds) for m in args.minutes]
            print(f"{'  ' + rule + '.keras':16} " + " ".join(f"{v:9.4f}" for v in kept))
        if args.checkpoints:
            ps = [mcnemar_p(*(sum(r[key] for r in rows if (r["arm"], r["minutes"]) == (name, m))
                              for key in ("only_best", "only_last"))) for m in args.minutes]
            print(f"{'  p last/best':16} " + " ".join(f"{p:9.3g}" for p in ps))
        if name != names[0]:
            ps = []
            for m in args.minutes:
                sel = [r for r in rows if (r["arm"], r["minutes"]) == (name, m)]
                ps.append(mcnemar_p(sum(r["only_first"] for r in sel), sum(r["only_this"] for r in sel)))
            print(f"{'  p vs ' + names[0]:16} " + " ".join(f"{p:9.3g}" for p in ps))
    print(f"\n{args.out / 'budget.csv'}, {args.out / 'budget.png'}")


if __name__ == "__main__":
    main()
