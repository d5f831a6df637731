"""Input-pipeline throughput: kclassify's tf.data pipeline vs in-memory tensors vs Keras' stock loader.

Trains the same model (same seed, no augmentation) for N epochs from
  (a) decoded float32 tensors already in memory (the upper bound),
  (b) ``keras.utils.image_dataset_from_directory`` (Keras' stock pipeline),
  (c) kclassify's pipeline (parallel decode, cache, shuffle, batch, prefetch),
  (d) kclassify's pipeline with its default augmentation (for information),
and prints training images/second of the first epoch and the median of the later ones (the
steady state once kclassify's cache is filled), with the ratios to (a).

    python benchmarks/input_pipeline.py ../shared/datasets/intel_scenes --image-size 96

Goal: (c) >= 0.95x (a) after the first epoch, and faster than (b).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from kclassify.data import prepare_data  # noqa: E402
from kclassify.data.augment import build_augmentation  # noqa: E402
from kclassify.data.pipeline import decode_image, make_dataset  # noqa: E402
from kclassify.models.build import build_classifier  # noqa: E402
from kclassify.training.callbacks import Throughput  # noqa: E402


def in_memory(paths, labels, n_classes, size, batch, seed):
    ds = tf.data.Dataset.from_tensor_slices(paths).map(lambda p: decode_image(p, size), tf.data.AUTOTUNE)
    x = np.stack(list(ds.as_numpy_iterator())).astype("float32")
    y = keras.utils.to_categorical(labels, n_classes)
    mem = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed).batch(batch)
    return mem.prefetch(tf.data.AUTOTUNE)


def stock(data_dir, size, batch, seed):
    return keras.utils.image_dataset_from_directory(
        data_dir, image_size=(size, size), batch_size=batch, label_mode="categorical", seed=seed,
        shuffle=True, verbose=False,
    ).prefetch(tf.data.AUTOTUNE)


def train(name, ds, n_images, n_classes, args):
    keras.utils.set_random_seed(args.seed)
    model = build_classifier(args.backbone, n_classes, args.image_size)
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    meter = Throughput(n_images)
    start = time.perf_counter()
    model.fit(ds, epochs=args.epochs, callbacks=[meter], verbose=0, shuffle=False)
    wall = time.perf_counter() - start
    steady = float(np.median(meter.per_epoch[1:] or meter.per_epoch))
    print(f"  {name:<40} epoch 1 {meter.per_epoch[0]:6.1f} img/s   later epochs (median) {steady:6.1f} "
          f"img/s   wall {wall:6.1f} s", flush=True)
    return steady


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data_dir")
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--backbone", default="small_cnn")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    # Every image of the folder, as the stock loader reads it (no split), in both pipelines.
    data = prepare_data(args.data_dir, val_fraction=0.0, test_fraction=0.0)
    paths, labels = data.subset("train")
    n, k, size, batch = len(paths), len(data.classes), args.image_size, args.batch_size
    print(f"{args.data_dir}: {n} images, {k} classes, {size}px, batch {batch}, {args.backbone}, "
          f"{args.epochs} epochs, {os.cpu_count()} CPUs, TF {tf.__version__}")
    results = {
        "a": train("(a) in-memory tensors", in_memory(paths, labels, k, size, batch, args.seed), n, k, args),
        "b": train("(b) keras image_dataset_from_directory", stock(args.data_dir, size, batch, args.seed), n, k, args),
        "c": train("(c) kclassify pipeline", make_dataset(paths, labels, k, size, batch, training=True,
                                                           seed=args.seed), n, k, args),
        "d": train("(d) kclassify pipeline + augmentation", make_dataset(
            paths, labels, k, size, batch, training=True, seed=args.seed,
            augment=build_augmentation(1.0, "horizontal", args.seed)), n, k, args),
    }
    base = results["a"]
    print("throughput after the first epoch, relative to (a) in-memory:")
    for key, label in (("b", "stock"), ("c", "kclassify"), ("d", "kclassify + augmentation")):
        print(f"  {label:<26} {results[key] / base:5.2f}x")
    print(f"  kclassify / stock          {results['c'] / results['b']:5.2f}x")


if __name__ == "__main__":
    main()
