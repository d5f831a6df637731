"""Tuning overhead: total `kclassify tune` wall time vs the sum of the trials' own times.

    python benchmarks/tuning_overhead.py ../shared/datasets/intel_scenes --trials 4 --epochs 2

Everything outside the trials counts as overhead: checking and splitting the data, the first
decode into the shared cache (paid once, inside the first trial), KerasTuner's bookkeeping,
writing the outputs. Goal: total <= 1.15x the sum of the trials' times.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data_dir")
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--space", default="default")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    start = time.perf_counter()
    from kclassify.config import build_config
    from kclassify.tuning import load_space
    from kclassify.tuning.tune import tune

    cfg = build_config({"data": args.data_dir, "epochs": args.epochs, "image_size": args.image_size})
    out = tempfile.mkdtemp(prefix="kclassify-tune-bench-")
    tune(cfg, load_space(args.space), algorithm="random", max_trials=args.trials, output=out)
    total = time.perf_counter() - start
    with open(os.path.join(out, "trials.csv")) as f:
        rows = list(csv.DictReader(f))
    trial_seconds = sum(float(r["seconds"]) for r in rows)
    print(f"{args.data_dir}: {args.trials} trials x {args.epochs} epochs at {args.image_size}px, space {args.space}")
    print(f"  total wall (imports, data checks, search, outputs) {total:7.1f} s")
    print(f"  sum of the trials' own times                      {trial_seconds:7.1f} s")
    print(f"  overhead ratio                                      {total / trial_seconds:5.2f}x (goal <= 1.15x)")
    rss = [r["rss_mb"] for r in rows]
    print(f"  resident memory after each trial (MiB)            {' '.join(rss)}")


if __name__ == "__main__":
    main()
