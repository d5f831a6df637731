"""Does a search earn its time? `kclassify tune --then-fit` vs the default `kclassify fit`, same wall budget, same split.

    python benchmarks/search_vs_default.py ../shared/datasets/intel_scenes --budget 15m [--seeds 42,1,2]
        [--final-share 0.5] [--final-data train+val] [--default-from /tmp/kclassify-search-vs-default]
    python benchmarks/search_vs_default.py --summarize /tmp/kclassify-search-vs-default   # no training

Both arms are the CLI commands a user types, timed from start to exit (TensorFlow's start-up and the
evaluation report included), on one split.csv written first, so both test accuracies are on the same
images. Search arm: `kclassify tune --space scratch --algorithm hyperband --epochs 27 --min-epochs 9
--time-budget BUDGET --then-fit [reuse]` (the budget covers the retraining: the search stops starting
trials once the time left would not retrain the best so far; with `--then-fit reuse`, a best trial that
trained all epochs is kept, not retrained; with `--final-share F`, F of the budget is kept for the final fit,
which is a `fit --time-budget` of the time left). Default arm: `kclassify fit --time-budget W` with its defaults,
W the search arm's measured wall time: as many epochs as W holds at the pace the fit measures as it trains,
its cosine decaying over them, so both arms get the same wall time however the machine's pace drifts (the
default arm's epochs used to be sized from the search's first trial, and got markedly more time than the
search arm on a day long fits ran slower per epoch than trials; measured: docs/benchmarks.md, "Slow days
(seeds 3-11)"). Goal (issue 9): search arm >= default arm + 2 points.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

KCLASSIFY = [sys.executable, "-m", "kclassify.cli"]


def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)


def _run(args: list[str], log: Path) -> float:
    """Run a kclassify command with its output in ``log``; its wall seconds."""
    start = time.perf_counter()
    with open(log, "w") as out:
        done = subprocess.run(KCLASSIFY + args, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"{' '.join(args[:1])} failed ({done.returncode}): see {log}")
    return seconds


def _test_accuracy(run: Path) -> float:
    return json.loads((run / "metrics.json").read_text())["test"]["accuracy"]


def one_seed(args, seed: int) -> tuple[float, float, tuple[list, list, list]]:
    """Both arms on one split (drawn with ``seed``); their test accuracies and the test images' labels and
    predicted classes (default arm, search arm) for the paired comparison."""
    out = Path(args.output) / f"seed{seed}-{int(time.time())}"
    out.mkdir(parents=True)
    split = out / "split.csv"
    earlier = _earlier_default(args.default_from, seed) if args.default_from else None
    if earlier:  # its split, so both arms score the same test images
        shutil.copyfile(earlier.parent / "split.csv", split)
    else:
        from kclassify.data import prepare_data, write_split

        write_split(split, prepare_data(args.data_dir, seed=seed).items())
    common = ["--data", args.data_dir, "--split-file", str(split), "--seed", str(seed)]

    search = out / "search"
    final = ["--final-share", str(args.final_share)] if args.final_share else []
    final += ["--final-data", args.final_data]
    search_wall = _run(["tune", *common, "--space", args.space, "--algorithm", args.algorithm, "--epochs",
                        str(args.epochs), "--min-epochs", str(args.min_epochs), "--time-budget", args.budget,
                        "--max-trials", "500", "--then-fit", args.then_fit, *final, "--output", str(search)],
                       out / "search.log")
    if earlier:
        default = earlier
        history = (default / "history.csv").read_text().splitlines()
        default_epochs, default_wall = len(history) - 1, json.loads((default / "run.json").read_text()).get("seconds")
        print(f"  (default arm measured earlier on the same split: {default})")
    else:
        default = out / "default"
        default_wall = _run(["fit", *common, "--time-budget", f"{max(_duration(args.budget), search_wall):.0f}s",
                             "--quiet", "--output", str(default)], out / "default.log")
        default_epochs = len((default / "history.csv").read_text().splitlines()) - 1

    s_acc, d_acc = _test_accuracy(search / "best_run"), _test_accuracy(default)
    trials = (search / "trials.csv").read_text().splitlines()[1:]
    import yaml

    best = yaml.safe_load((search / "best_hparams.yaml").read_text())
    best = f"{best.get('hparams')} (val {best.get('score', float('nan')):.4f})"
    print(f"{args.data_dir}: budget {args.budget}, space {args.space}, {args.algorithm} {args.min_epochs}-{args.epochs} "
          f"epochs, seed {seed}, test images on the same split; logs in {out}")
    kept = json.loads((search / "best_run" / "run.json").read_text()).get("from_trial")
    epochs = yaml.safe_load((search / "best_run" / "config.yaml").read_text())["train"]["epochs"]
    final = f"trial {kept['trial']} kept" if kept else f"retrained {epochs} epochs"
    print(f"  search arm : tune --then-fit {args.then_fit} --final-data {args.final_data} ({final}), {len(trials)} trials, best {best}; {search_wall:.0f} s in all; "
          f"test accuracy {s_acc:.4f}")
    wall = f"{default_wall:.0f} s" if default_wall else "? s"
    print(f"  default arm: fit defaults, {default_epochs} epochs, {wall}; test accuracy {d_acc:.4f}")
    print(f"  search - default: {100 * (s_acc - d_acc):+.1f} points (goal: >= +2.0)")
    from kclassify.evaluation.compare import aligned, paired

    images = aligned(default, search / "best_run")  # kclassify compare DEFAULT SEARCH, image by image
    print("  paired: " + paired(*images).summary("default", "search").replace("\n", "\n  paired: "), flush=True)
    return s_acc, d_acc, images


def summarized(root: Path, default_from: str | None) -> list:
    """The newest finished pair of arms of each seed under ``root`` (an earlier --output), compared again."""
    from kclassify.evaluation.compare import aligned, paired

    newest = {}
    for search in sorted(root.glob("seed*-*/search/best_run/metrics.json")):
        out = search.parents[2]
        newest[int(out.name.split("-")[0][4:])] = out  # names end in the start time: sorted, the newest wins
    if not newest:
        sys.exit(f"{root} holds no finished search arm (seed*-*/search/best_run/metrics.json)")
    results = []
    for seed, out in sorted(newest.items()):
        name = f"seed {seed}"
        default = out / "default"
        if not (default / "metrics.json").is_file() and default_from:
            default = _earlier_default(default_from, seed)
        if default is None or not (default / "metrics.json").is_file():
            print(f"{out}: no finished default arm (pass --default-from where it was measured); left out")
            continue
        images = aligned(default, out / "search" / "best_run")
        s_acc, d_acc = _test_accuracy(out / "search" / "best_run"), _test_accuracy(default)
        print(f"{name} ({out}): search {s_acc:.4f}, default {d_acc:.4f}, {100 * (s_acc - d_acc):+.1f} points")
        print("  paired: " + paired(*images).summary("default", "search").replace("\n", "\n  paired: "))
        results.append((s_acc, d_acc, images))
    return results


def _earlier_default(root: str, seed: int) -> Path | None:
    """The newest default arm an earlier run of this benchmark measured for ``seed`` under ``root``."""
    found = sorted(Path(root).glob(f"seed{seed}-*/default/metrics.json"), key=lambda p: p.parent.parent.name)
    return found[-1].parent if found else None


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data_dir", nargs="?")
    p.add_argument("--summarize", metavar="DIR", help="print the comparison of every seed an earlier --output holds "
                   "(its newest pair per seed), pooled too; trains nothing")
    p.add_argument("--budget", default="15m", help="wall budget of the search arm: 15m, 900s")
    p.add_argument("--space", default="scratch")
    p.add_argument("--algorithm", default="hyperband")
    p.add_argument("--epochs", type=int, default=27, help="a trial's full epochs (Hyperband's top rung) and the retrain's")
    p.add_argument("--min-epochs", type=int, default=9)
    p.add_argument("--then-fit", default="retrain", choices=("retrain", "reuse"),
                   help="the search arm's final model: retrain the best settings, or reuse the best trial's")
    p.add_argument("--final-share", type=float, help="tune --final-share: the part of the budget kept for the final fit")
    from kclassify.tuning.budget import FINAL_DATA  # TensorFlow-free

    p.add_argument("--final-data", default="train", choices=tuple(FINAL_DATA),
                   help="tune --final-data: the final fit trains on the training split, or on the validation one too")
    p.add_argument("--default-from", metavar="DIR",
                   help="an earlier --output: reuse its newest default arm (and split) for each seed it holds "
                   "instead of training it again (the default arm does not depend on the search's settings)")
    p.add_argument("--output", default="/tmp/kclassify-search-vs-default")
    p.add_argument("--seeds", default="42", help="comma-separated: one split and one pair of arms per seed")
    args = p.parse_args()
    if not args.summarize and not args.data_dir:
        p.error("give the data folder to measure, or --summarize an earlier --output")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    results = (summarized(Path(args.summarize), args.default_from) if args.summarize
               else [one_seed(args, int(seed)) for seed in args.seeds.split(",")])
    diffs = [100 * (s - d) for s, d, _ in results]
    if len(diffs) > 1:  # each split's test images differ: the spread across seeds is the honest error bar
        mean, sd = statistics.mean(diffs), statistics.stdev(diffs)
        print(f"over {len(diffs)} seeds: search - default {mean:+.1f} points, standard error "
              f"{sd / len(diffs) ** 0.5:.1f} ({', '.join(f'{d:+.1f}' for d in diffs)})")
        from kclassify.evaluation.compare import paired

        # Every seed's test images in one pool: an interval of the test images' noise only. The seeds' spread
        # above also holds the retraining noise, and is the error bar of the recipes.
        pooled = [sum((r[2][i] for r in results), []) for i in range(3)]
        print("pooled images (test-image noise only): "
              + paired(*pooled).summary("default", "search").replace("\n", "\n  "))


if __name__ == "__main__":
    main()
