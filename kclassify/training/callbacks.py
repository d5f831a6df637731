"""The callbacks every fit gets: resume backup, checkpoints, logs, early stopping, plateau."""

from __future__ import annotations

import csv
import time

import keras

from ..config import TrainConfig
from ..runs import RunFolder


class LearningRate(keras.callbacks.Callback):
    """Puts the current learning rate into the epoch logs (TensorBoard, history.csv)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


class Throughput(keras.callbacks.Callback):
    """Measures training images per second of each epoch, validation excluded."""

    def __init__(self, num_images: int):
        super().__init__()
        self.num_images = int(num_images)
        self.per_epoch: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = self._last = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self._last = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = max(self._last - self._start, 1e-9)
        self.per_epoch.append(self.num_images / seconds)
        if logs is not None:
            logs["train_images_per_sec"] = self.per_epoch[-1]


def monitor_mode(monitor: str) -> str:
    return "min" if monitor.endswith("loss") else "max"


def truncate_history(path, completed_epochs: int) -> None:
    """Drop history rows of epochs the resume backup does not hold (killed mid-epoch)."""
    if not path.is_file():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    keep = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) < completed_epochs]
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(keep if completed_epochs else [])


def control_callbacks(cfg: TrainConfig, monitor: str) -> list:
    """The callbacks that change training itself: reduce-on-plateau and early stopping."""
    mode = monitor_mode(monitor)
    cbs = []
    if cfg.schedule == "plateau":
        cbs.append(keras.callbacks.ReduceLROnPlateau(
            monitor=monitor, mode=mode, factor=cfg.decay_rate, patience=cfg.plateau_patience, verbose=1
        ))
    if cfg.early_stopping:
        cbs.append(keras.callbacks.EarlyStopping(
            monitor=monitor, mode=mode, patience=cfg.early_stopping, verbose=1
        ))
    return cbs


def standard_callbacks(run: RunFolder, cfg: TrainConfig, monitor: str, num_train: int, backup) -> list:
    """Callbacks in the order they must run.

    The learning rate and throughput go first so the loggers see them; the resume
    backup goes last, so that an epoch it holds is always in history.csv too (a kill
    between the two leaves an extra row, which :func:`truncate_history` removes).
    """
    mode = monitor_mode(monitor)
    run.checkpoints.mkdir(parents=True, exist_ok=True)
    control = control_callbacks(cfg, monitor)
    plateau = [c for c in control if isinstance(c, keras.callbacks.ReduceLROnPlateau)]
    cbs = plateau + [
        LearningRate(),
        Throughput(num_train),
        keras.callbacks.ModelCheckpoint(
            str(run.checkpoints / "best.keras"), monitor=monitor, mode=mode, save_best_only=True
        ),
        keras.callbacks.ModelCheckpoint(str(run.checkpoints / "last.keras")),
        keras.callbacks.CSVLogger(str(run.history), append=True),
        keras.callbacks.TensorBoard(str(run.logs), write_graph=False),
    ]
    cbs += [c for c in control if c not in plateau]  # early stopping
    # Kept after the phase ends (fit removes the whole backup folder at the very end), so a
    # run killed between two phases resumes at the boundary instead of starting over.
    cbs.append(keras.callbacks.BackupAndRestore(str(backup), delete_checkpoint=False))
    return cbs
