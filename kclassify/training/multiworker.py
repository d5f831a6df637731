"""Training under MultiWorkerMirroredStrategy with our own loop, because Keras 3's ``model.fit``
does not run there (keras-team/keras#20585: "Attempt to convert a value (PerReplica...)").

Same model, optimizer, schedule, loss, class weights and tf.data pipeline as ``fit``; only the
epoch loop differs. Checkpoints use ``tf.train.CheckpointManager``: the chief writes into the run
folder, the other workers into a temporary folder, and every worker restores from the chief's
(a shared filesystem across machines). When upstream fixes ``model.fit``, delete this module and
the two lines of ``fit`` that call it.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

log = logging.getLogger(__name__)


def cluster() -> dict | None:
    """The cluster ``TF_CONFIG`` describes (None when it describes none)."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    doc = json.loads(raw)
    return doc if doc.get("cluster") else None


def is_chief() -> bool:
    doc = cluster()
    if not doc:
        return True
    task = doc.get("task", {})
    kind, index = task.get("type", "worker"), int(task.get("index", 0))
    return kind == "chief" or (kind == "worker" and index == 0 and "chief" not in doc["cluster"])


def is_multiworker(strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def _shardable(ds: tf.data.Dataset) -> tf.data.Dataset:
    options = tf.data.Options()
    # Our datasets start from file names in memory, not files: shard by element.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


class _Steps:
    """The distributed train and evaluation steps for one model/optimizer/loss."""

    def __init__(self, strategy, model, loss, global_batch: int, class_weights):
        self.strategy, self.model, self.loss = strategy, model, loss
        self.global_batch = global_batch
        n = model.output_shape[-1]
        weights = np.ones(n, "float32")
        for k, v in (class_weights or {}).items():
            weights[k] = v
        self.class_weights = tf.constant(weights)

    def _per_example(self, y, p, w):
        per = self.loss.call(y, p)  # unreduced, one value per image
        return per * w * tf.gather(self.class_weights, tf.argmax(y, axis=-1))

    def train(self, batch):
        def step(x, y):
            w = tf.ones(tf.shape(y)[:1])
            with tf.GradientTape() as tape:
                p = self.model(x, training=True)
                loss = tf.nn.compute_average_loss(self._per_example(y, p, w), global_batch_size=self.global_batch)
                if self.model.losses:
                    loss += tf.nn.scale_regularization_loss(tf.add_n(self.model.losses))
            variables = self.model.trainable_variables
            grads = tape.gradient(loss, variables)
            self.model.optimizer.apply_gradients(zip(grads, variables))
            return _sums(y, p, self.loss.call(y, p), w)

        return self._reduce(self.strategy.run(step, args=batch))

    def evaluate(self, batch):
        def step(x, y, w=None):
            w = tf.ones(tf.shape(y)[:1]) if w is None else w
            p = self.model(x, training=False)
            return _sums(y, p, self.loss.call(y, p), w)

        return self._reduce(self.strategy.run(step, args=batch))

    def _reduce(self, sums):
        return [self.strategy.reduce(tf.distribute.ReduceOp.SUM, s, axis=None) for s in sums]


def _sums(y, p, per_example_loss, w):
    correct = tf.cast(tf.equal(tf.argmax(y, -1), tf.argmax(p, -1)), tf.float32)
    return tf.reduce_sum(per_example_loss * w), tf.reduce_sum(correct * w), tf.reduce_sum(w)


def _epoch(step_fn, dataset) -> dict[str, float]:
    loss = correct = count = 0.0
    for batch in dataset:
        l, c, n = (float(v) for v in step_fn(batch))
        loss, correct, count = loss + l, correct + c, count + n
    return {"loss": loss / max(count, 1), "accuracy": correct / max(count, 1), "images": count}


def train_loop(strategy, model, loss, datasets, run, *, start: int, end: int, backup: Path,
               global_batch: int, class_weights=None, monitor: str = "val_loss") -> dict[str, list]:
    """Epochs ``start..end-1`` of one phase; returns the history of the epochs it ran."""
    chief = is_chief()
    steps = _Steps(strategy, model, loss, global_batch, class_weights)
    train_fn, eval_fn = tf.function(steps.train), tf.function(steps.evaluate)
    train = strategy.experimental_distribute_dataset(_shardable(datasets["train"]))
    val = datasets.get("val")
    val = strategy.experimental_distribute_dataset(_shardable(val)) if val is not None else None

    epoch_var = tf.Variable(start, dtype=tf.int64, trainable=False)
    ckpt = tf.train.Checkpoint(model=model, optimizer=model.optimizer, epoch=epoch_var)
    latest = tf.train.latest_checkpoint(str(backup))  # every worker reads the chief's
    if latest:
        ckpt.restore(latest)
    write_dir = str(backup) if chief else tempfile.mkdtemp(prefix="kclassify-worker-")
    manager = tf.train.CheckpointManager(ckpt, write_dir, max_to_keep=1)
    writers = {s: tf.summary.create_file_writer(str(run.logs / s)) for s in ("train", "validation")} if chief else {}
    run.checkpoints.mkdir(parents=True, exist_ok=True)
    history: dict[str, list] = {}
    best = None
    for epoch in range(int(epoch_var.numpy()), end):
        t0 = time.perf_counter()
        logs = _epoch(train_fn, train)
        logs["train_images_per_sec"] = logs.pop("images") / (time.perf_counter() - t0)
        if val is not None:
            v = _epoch(eval_fn, val)
            logs.update(val_loss=v["loss"], val_accuracy=v["accuracy"])
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
        log.info("epoch %d/%d: %s", epoch + 1, end, " - ".join(f"{k}: {v:.4f}" for k, v in logs.items()))
        for key, value in logs.items():
            history.setdefault(key, []).append(value)
        epoch_var.assign(epoch + 1)
        if chief:
            _log_epoch(run, writers, epoch, logs)
        # Saving runs collectives, so every worker saves (the same decisions: logs are
        # all-reduced); only the chief's files are kept.
        save_dir = run.checkpoints if chief else Path(write_dir)
        value = logs.get(monitor, logs["loss"])
        if best is None or (value < best if monitor.endswith("loss") else value > best):
            best = value
            model.save(save_dir / "best.keras")
        model.save(save_dir / "last.keras")
        manager.save()
        if chief:  # the same marker Keras' BackupAndRestore writes, so resume reads one format
            (backup / "training_metadata.json").write_text(json.dumps({"epoch": epoch + 1}))
    if not chief:
        shutil.rmtree(write_dir, ignore_errors=True)
    return history


def _log_epoch(run, writers, epoch: int, logs: dict) -> None:
    new = not run.history.is_file() or run.history.stat().st_size == 0
    keys = sorted(logs)
    with open(run.history, "a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(["epoch", *keys])
        w.writerow([epoch, *(logs[k] for k in keys)])
    for split, writer in writers.items():
        with writer.as_default():
            for key, value in logs.items():
                is_val = key.startswith("val_")
                if (split == "validation") == is_val:
                    tf.summary.scalar(f"epoch_{key[4:] if is_val else key}", value, step=epoch)
        writer.flush()
