"""Does a search earn its time? `tune` + retrain the best vs the default `fit`, same wall budget, same split.

    python benchmarks/search_vs_default.py ../shared/datasets/intel_scenes --budget 15m

Search arm: `tune` over a space (default `scratch`, Hyperband with rungs of 3 and 9 epochs) for
`--search-share` of the budget, then the best settings retrained (`fit --config config.yaml --hparams
best_hparams.yaml`) with their epochs raised to fill the rest of the budget. Default arm: `kclassify
fit` with its defaults, epochs raised to fill the whole budget (its seconds per epoch come from the
search's first trial, which is exactly the default settings). Both read the same split.csv, so both
test accuracies are on the same images. Goal (issue 9): the search arm >= default arm + 2 points.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)


def _seconds_per_epoch(folder: Path, row: dict) -> float:
    """A trial's seconds per epoch it ran (a Hyperband continuation runs epochs - initial_epoch).

    A trial's time also holds building the model and adapting its normalization, which a long fit
    pays once: 0.8x its per-epoch time is what intel_scenes runs of 100+ epochs measured (3.5 s per
    epoch against 4.7 s in a 3-epoch trial).
    """
    import json

    values = json.loads((folder / "tuner" / f"trial_{row['trial']}" / "trial.json").read_text())
    ran = int(row["epochs"]) - int(values["hyperparameters"]["values"].get("tuner/initial_epoch", 0))
    return 0.8 * row["seconds"] / max(ran, 1)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data_dir")
    p.add_argument("--budget", type=_duration, default=900.0, help="wall budget per arm: 15m, 900s")
    p.add_argument("--space", default="scratch")
    p.add_argument("--algorithm", default="hyperband")
    p.add_argument("--epochs", type=int, default=9, help="a trial's full epochs (Hyperband's top rung)")
    p.add_argument("--min-epochs", type=int, default=3)
    p.add_argument("--search-share", type=float, default=0.5, help="share of the budget the search may start trials in")
    p.add_argument("--refit", choices=("fill", "then-fit"), default="fill",
                   help="fill: retrain the best with epochs raised to fill the rest of the budget; then-fit: "
                   "retrain it exactly as `tune --then-fit` does, with the search's --epochs")
    p.add_argument("--output", default="/tmp/kclassify-search-vs-default")
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("kclassify").setLevel(logging.INFO)

    from kclassify import fit
    from kclassify.config import build_config, load_yaml
    from kclassify.data import prepare_data, write_split
    from kclassify.tuning import load_space
    from kclassify.tuning.tune import tune

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    split = out / "split.csv"
    if not split.is_file():
        write_split(split, prepare_data(args.data_dir, seed=args.seed).items())
    common = {"data": args.data_dir, "split_file": str(split.resolve()), "seed": args.seed}

    # Search arm: search, then retrain the best with the rest of the budget.
    start = time.perf_counter()
    result = tune(build_config({**common, "epochs": args.epochs}), load_space(args.space), algorithm=args.algorithm,
                  max_trials=500, output=out / "search", time_budget=args.search_share * args.budget,
                  min_epochs=args.min_epochs)
    searched = time.perf_counter() - start
    trials = [r for r in result.trials if r["status"] == "COMPLETED"]
    best = next(r for r in trials if r["score"] == result.best_score)
    refit_epochs = max(args.epochs, int((args.budget - searched) / _seconds_per_epoch(out / "search", best)))
    if args.refit == "then-fit":
        refit_epochs = args.epochs
    settings = build_config(load_yaml(out / "search" / "config.yaml"), load_yaml(out / "search" / "best_hparams.yaml"),
                            {"epochs": refit_epochs})
    refit = fit(settings, output=out / f"search-refit-{int(time.time())}", verbose=2)
    search_wall = time.perf_counter() - start

    # Default arm: fit's defaults, epochs raised to fill the same wall time as the search arm took.
    first = min(trials, key=lambda r: int(r["trial"]))  # the defaults
    default_epochs = max(1, int(max(args.budget, search_wall) / _seconds_per_epoch(out / "search", first)))
    start = time.perf_counter()
    default = fit(build_config({**common, "epochs": default_epochs}), output=out / f"default-{int(time.time())}",
                  verbose=2)
    default_wall = time.perf_counter() - start

    s_acc, d_acc = refit.metrics["test"]["accuracy"], default.metrics["test"]["accuracy"]
    print(f"\n{args.data_dir}: budget {args.budget:.0f} s per arm, space {args.space}, {args.algorithm}, seed {args.seed}")
    print(f"  search arm : {len(result.trials)} trials in {searched:.0f} s, best val_accuracy {result.best_score:.4f} "
          f"with {result.best_hparams}; retrained {refit_epochs} epochs; total {search_wall:.0f} s; "
          f"test accuracy {s_acc:.4f}")
    print(f"  default arm: fit defaults, {default_epochs} epochs, {default_wall:.0f} s; test accuracy {d_acc:.4f}")
    print(f"  search - default: {100 * (s_acc - d_acc):+.1f} points (goal: >= +2.0)")


if __name__ == "__main__":
    main()
