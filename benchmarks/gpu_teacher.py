"""Teachers for distillation, trained on a GPU machine that has no TensorFlow (issue 27).

    KERAS_BACKEND=jax python benchmarks/gpu_teacher.py DATA --labels labels.txt \
        --split 1=seed1/split.csv --split 2=seed2/split.csv --out teachers --seconds 450 \
        [--backbone small_cnn] [--model d2-128:128:1:depth=2 --model w2-64:64:2:width=2] [--batch 128 --lr 2e-3]

Distillation needs a teacher better than its student. Offline, ImageNet-initialised teachers cannot be
had, and on two CPU cores a larger model trained from scratch gets too few epochs to be better; a GPU
trains one for hundreds of epochs in a minute or two. The lent GPU machines hold JAX but not TensorFlow
(nor room to carry it), so this script trains with Keras' JAX backend instead of ``kclassify fit``, from
kclassify's own pieces: the model is :func:`kclassify.models.build_classifier`'s (preprocessing inside,
saved computing in float32), the augmentation :func:`kclassify.data.augment.build_augmentation`'s; the
split is each seed's ``split.csv`` from a kclassify run, so a teacher never sees its students' test
images. What differs from ``fit``: images are decoded and resized here with Pillow (antialiased, as
kclassify resizes), the training loop is Keras' ``fit`` on arrays, and the schedule is a cosine over
wall-clock time (warm-up first), stopped when each teacher's share of ``--seconds`` is spent.

Writes ``teacher-{LABEL}-seed{S}.keras`` per architecture and split and ``labels.txt`` beside them (a
teacher ``load_predictor`` reads: ``fit --teacher OUT/teacher-d2-128-seed1.keras``), and ``teachers.json``:
for each the epochs, training images per second, validation and test accuracy. ``--probe`` only times each
architecture's training step without and with augmentation, and the feeding of batches, then stops: a
first lent minute that says where the time goes (docs/benchmarks.md, "Teachers trained on a GPU").
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # kclassify from this checkout, not installed

import keras  # noqa: E402  (after KERAS_BACKEND)
import numpy as np  # noqa: E402


def _decode(job: tuple[str, int]) -> np.ndarray:
    from PIL import Image

    path, side = job
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB").resize((side, side), Image.BILINEAR), dtype=np.uint8)


def load_images(root: Path, paths: list[str], side: int) -> np.ndarray:
    """Every image as ``(N, side, side, 3)`` uint8, decoded in parallel."""
    with ProcessPoolExecutor() as pool:
        return np.stack(list(pool.map(_decode, [(str(root / p), side) for p in paths], chunksize=32)))


def read_split(path: Path) -> dict[str, list[tuple[str, str]]]:
    """``{split: [(path, label), ...]}`` of a kclassify ``split.csv``."""
    out: dict[str, list[tuple[str, str]]] = {"train": [], "val": [], "test": []}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            out[row["split"]].append((row["path"], row["label"]))
    return out


class WallClockCosine(keras.callbacks.Callback):
    """Linear warm-up over the first epochs, then the learning rate follows a cosine of the time spent
    (measured from the end of the first epoch, which compiles); stops training when the time is up."""

    def __init__(self, lr: float, seconds: float, warmup_epochs: int):
        super().__init__()
        self.lr, self.seconds, self.warmup_epochs = lr, seconds, warmup_epochs
        self.start: float | None = None
        self.epochs = 0

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            self.start = time.perf_counter()
        if epoch < self.warmup_epochs:
            value = self.lr * (epoch + 1) / self.warmup_epochs
        else:
            fraction = min((time.perf_counter() - self.start) / self.seconds, 1.0) if self.start else 0.0
            value = 0.5 * self.lr * (1.0 + math.cos(math.pi * fraction))
        self.model.optimizer.learning_rate = value  # as keras.callbacks.LearningRateScheduler sets it

    def on_epoch_end(self, epoch, logs=None):
        self.epochs = epoch + 1
        if self.start and time.perf_counter() - self.start >= self.seconds:
            self.model.stop_training = True


class Batches(keras.utils.PyDataset):
    """Full batches of a fresh permutation each epoch (the last wraps around), so every step has one shape and
    one compiled step serves every epoch."""

    def __init__(self, x: np.ndarray, targets: np.ndarray, batch: int, seed: int):
        super().__init__(workers=4, use_multiprocessing=False)
        self.x, self.targets, self.batch = x, targets, batch
        self.rng = np.random.default_rng(seed)
        self.on_epoch_end()

    def __len__(self):
        return -(-len(self.x) // self.batch)

    def __getitem__(self, i):
        rows = self.order[i * self.batch:(i + 1) * self.batch]
        return self.x[rows], self.targets[rows]

    def on_epoch_end(self):
        order = self.rng.permutation(len(self.x))
        self.order = np.concatenate([order, order[: len(self) * self.batch - len(self.x)]])


def _built(args, m: dict, num_classes: int):
    """The architecture's model, its trainer (augmentation then the model) compiled, and the model's float32
    copy. Built afresh for every split: an adapted Normalization layer's mean and variance are constants
    of the compiled step, so a step compiled for one split would normalise the next with its statistics."""
    from kclassify.data.augment import build_augmentation
    from kclassify.models.build import build_classifier, float32_model

    model = build_classifier(args.backbone, num_classes, m["image_size"], input_scale=m["input_scale"],
                             dropout=args.dropout, **m["options"])
    keras.mixed_precision.set_global_policy("float32")  # augmented pixels in float32, as tf.data augments
    augment = build_augmentation(args.augment, "horizontal", seed=0, policy=args.augment_policy)
    keras.mixed_precision.set_global_policy(args.precision)
    trainer = keras.Sequential([keras.Input(model.input_shape[1:]), *([augment] if augment else []), model])
    trainer.compile(optimizer=keras.optimizers.AdamW(learning_rate=args.lr, weight_decay=args.weight_decay),
                    loss=keras.losses.CategoricalCrossentropy(label_smoothing=args.label_smoothing),
                    metrics=["accuracy"])
    return model, trainer, float32_model(model)


def train_teacher(args, m: dict, classes: list[str], data: dict, seconds: float, seed: int) -> dict:
    from kclassify.models.build import _with_weights_of, adapt_preprocessing

    began = time.perf_counter()
    x, y = data["train"]
    keras.utils.set_random_seed(seed)
    model, trainer, copy = _built(args, m, len(classes))
    adapt_preprocessing(model, x[:: max(len(x) // 1000, 1)].astype("float32"))
    clock = WallClockCosine(args.lr, seconds, args.warmup_epochs)
    batches = Batches(x, np.eye(len(classes), dtype="float32")[y], args.batch, seed)
    trainer.fit(batches, epochs=100_000, verbose=0, callbacks=[clock])
    trained = time.perf_counter() - (clock.start or began)
    saved = copy if copy is model else _with_weights_of(copy, model)  # computing in float32, as fit saves
    scores = {}
    for split in ("val", "test"):
        images, labels = data[split]
        probabilities = saved.predict(images, batch_size=256, verbose=0)
        scores[split] = float(np.mean(probabilities.argmax(-1) == labels))
    return {"model": saved, "epochs": clock.epochs, "seconds": round(time.perf_counter() - began, 1),
            # each epoch's training images, as fit counts them (the wrapped-around repeats not counted)
            "train_images_per_sec": round((clock.epochs - 1) * len(x) / max(trained, 1e-9), 1),
            "val_accuracy": scores["val"], "test_accuracy": scores["test"]}


def probe(args, m: dict, num_classes: int, x: np.ndarray, y: np.ndarray, steps: int = 20) -> dict:
    """Training images per second of one architecture's step three ways (``--probe``): the compiled step on
    one batch without augmentation, with it, and a batch of :class:`Batches` drawn and copied to the device
    alone (not through Keras' worker threads)."""
    def rate(step) -> float:
        step()  # compiles
        began = time.perf_counter()
        for _ in range(steps):
            step()
        return round(steps * args.batch / (time.perf_counter() - began), 1)

    onehot = np.eye(num_classes, dtype="float32")[y[: args.batch]]
    batch = x[: args.batch]
    model, trainer, _ = _built(args, m, num_classes)
    plain = keras.models.clone_model(model)
    plain.compile(optimizer=keras.optimizers.AdamW(learning_rate=args.lr), loss="categorical_crossentropy")
    batches = Batches(x, np.eye(num_classes, dtype="float32")[y], args.batch, 0)

    def feed():  # a batch drawn as fit draws it, then copied to the device
        images, targets = batches[np.random.randint(len(batches))]
        for array in (keras.ops.convert_to_tensor(images), keras.ops.convert_to_tensor(targets)):
            getattr(array, "block_until_ready", lambda: None)()

    return {"step_without_augmentation": rate(lambda: plain.train_on_batch(batch, onehot)),
            "step_with_augmentation": rate(lambda: trainer.train_on_batch(batch, onehot)),
            "feeding_alone": rate(feed)}


def parse_model(text: str) -> dict:
    """``LABEL:IMAGE_SIZE:INPUT_SCALE[:NAME=VALUE,...]`` (backbone options: depth=2, width=1.5)."""
    label, size, scale, *rest = text.split(":")
    options = dict(o.split("=", 1) for o in rest[0].split(",")) if rest and rest[0] else {}
    return {"label": label, "image_size": int(size), "input_scale": int(scale),
            "options": {k: (int(v) if k == "depth" else float(v)) for k, v in options.items()}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="the image folder the split.csv files are relative to")
    parser.add_argument("--labels", type=Path, required=True, help="labels.txt of the students' runs (class order)")
    parser.add_argument("--split", action="append", required=True, metavar="SEED=SPLIT_CSV")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=450.0, help="wall time for all teachers together")
    parser.add_argument("--backbone", default="small_cnn")
    parser.add_argument("--model", action="append", type=parse_model, metavar="LABEL:SIZE:SCALE[:OPT=V,...]",
                        help="a teacher architecture, trained for every split, in the order given "
                             "(default d2-128:128:1:depth=2)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument("--dropout", type=float, default=0.3)
    parser.add_argument("--augment", type=float, default=1.5)
    parser.add_argument("--augment-policy", default="basic")
    parser.add_argument("--warmup-epochs", type=int, default=5)
    parser.add_argument("--precision", default="mixed_bfloat16")
    parser.add_argument("--probe", action="store_true",
                        help="only time each architecture's step (without and with augmentation) and the feeding")
    args = parser.parse_args(argv)
    models = args.model or [parse_model("d2-128:128:1:depth=2")]

    began = time.perf_counter()

    keras.mixed_precision.set_global_policy(args.precision)
    classes = [line.strip() for line in args.labels.read_text().splitlines() if line.strip()]
    index = {c: i for i, c in enumerate(classes)}
    splits = {int(s): read_split(Path(p)) for s, p in (a.split("=", 1) for a in args.split)}
    paths = sorted({p for split in splits.values() for rows in split.values() for p, _ in rows})
    row = {p: i for i, p in enumerate(paths)}
    pixels = {}
    for side in sorted({m["image_size"] * m["input_scale"] for m in models}):
        pixels[side] = load_images(args.data, paths, side)
    print(f"decoded {len(paths)} images at {sorted(pixels)} px in {time.perf_counter() - began:.1f} s; "
          f"keras {keras.__version__} on {keras.backend.backend()}", flush=True)

    if args.probe:
        rows = [row[p] for p, _ in next(iter(splits.values()))["train"]]
        labels = np.array([index[lb] for _, lb in next(iter(splits.values()))["train"]])
        for m in models:
            side = m["image_size"] * m["input_scale"]
            print(f"probe {m['label']}: {json.dumps(probe(args, m, len(classes), pixels[side][rows], labels))}",
                  flush=True)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "labels.txt").write_text("".join(c + "\n" for c in classes))
    results = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "teachers": {}}
    jobs = [(m, seed) for m in models for seed in splits]
    for i, (m, seed) in enumerate(jobs):
        share = (args.seconds - (time.perf_counter() - began)) / (len(jobs) - i)
        side = m["image_size"] * m["input_scale"]
        data = {name: (pixels[side][[row[p] for p, _ in rows]], np.array([index[lb] for _, lb in rows]))
                for name, rows in splits[seed].items()}
        # about a quarter of a share goes to compiling, the first epoch and the scoring
        result = train_teacher(args, m, classes, data, seconds=max(0.7 * share, 10.0), seed=seed)
        model = result.pop("model")
        name = f"teacher-{m['label']}-seed{seed}"
        model.save(args.out / f"{name}.keras")
        results["teachers"][name] = {**m, **result}
        (args.out / "teachers.json").write_text(json.dumps(results, indent=2))
        print(f"{name}: {json.dumps(result)}", flush=True)
    print(f"done in {time.perf_counter() - began:.0f} s", flush=True)


if __name__ == "__main__":
    main()
