"""The training pipeline alone, epoch by epoch: images per second with and without tf.data's autotuning.

    python benchmarks/pipeline_epochs.py DATA [NAME=VALUE ...] [--epochs 16] [--seed 1] [--arms steady autotune]

NAME=VALUE are fit settings (e.g. phone_resize=0 augment=0 val_fraction=0), in any order with the options.

Builds fit's training dataset for DATA exactly as ``fit`` does (``make_recipe``: decode cache, the
phone-resize mix, shuffle, augmentation) and iterates it with no model, timing each epoch: the images
per second and the share of the CPU the process used (200 % is both cores of a 2-core machine). The
``steady`` arm is the pipeline as kclassify builds it (autotuning off, see
:func:`kclassify.data.pipeline.steady_options`); ``autotune`` turns tf.data's autotuning back on.
The first epoch decodes and fills the cache. An epoch below 0.75 times the arm's median is counted slow.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # kclassify from this checkout


def epochs_of(ds, epochs: int) -> list[tuple[float, float]]:
    """``(images per second, CPU %)`` of each pass over ``ds``."""
    out = []
    for _ in range(epochs):
        wall, cpu, n = time.perf_counter(), time.process_time(), 0
        for x, *_ in ds:
            n += int(x.shape[0])
        wall = time.perf_counter() - wall
        out.append((n / wall, 100 * (time.process_time() - cpu) / wall))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data")
    parser.add_argument("--epochs", type=int, default=16, help="passes per arm (at least 2: the first decodes)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--arms", nargs="+", default=["steady", "autotune"], choices=["steady", "autotune"])
    parser.add_argument("settings", nargs="*", metavar="NAME=VALUE")
    args = parser.parse_intermixed_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first pass decodes and fills the cache")

    import tempfile

    import tensorflow as tf

    from kclassify.config import build_config
    from kclassify.data import prepare_for
    from kclassify.training.fit import _cached_images
    from kclassify.training.recipe import make_recipe

    settings = {"data": args.data, "seed": args.seed}
    for item in args.settings:
        name, value = item.split("=", 1)
        settings[name] = value
    cfg = build_config(settings)
    data = prepare_for(cfg)
    for arm in args.arms:
        with tempfile.TemporaryDirectory() as cache:
            run = type("Run", (), {"cache": Path(cache)})()  # _cached_images reads only run.cache
            ds = make_recipe(cfg, data, _cached_images(cfg, data, run)).datasets["train"]
            if arm == "autotune":
                options = tf.data.Options()
                options.autotune.enabled = True
                ds = ds.with_options(options)
            rows = epochs_of(ds, args.epochs)
        later = [r[0] for r in rows[1:]]
        median = statistics.median(later)
        slow = sum(r < 0.75 * median for r in later)
        print(f"{arm}: median {median:.0f} images/s, {slow} of {len(later)} epochs after the first slow; "
              + " ".join(f"{r:.0f}/{c:.0f}%" for r, c in rows), flush=True)


if __name__ == "__main__":
    main()
