"""The evaluation in TensorBoard: the confusion matrix (and the other plots) as images, headline scalars.

Written into ``RUN/logs/evaluation`` beside fit's ``train``/``validation`` event files, so the
run's TensorBoard shows how training went and, at its end, where the final model fails.
"""

from __future__ import annotations

from pathlib import Path


def write_summaries(logdir: Path, report: dict, folder: Path) -> None:
    import tensorflow as tf

    split = report["data"]["split"]
    step = _last_epoch(report)
    writer = tf.summary.create_file_writer(str(logdir))
    with writer.as_default():
        for name, rel in report["plots"].items():
            png = tf.io.decode_png(tf.io.read_file(str(folder / rel)), channels=4)
            tf.summary.image(f"{split}/{name}", png[None], step=step)
        for key, value in report["headline"].items():
            if value is not None:
                tf.summary.scalar(f"{split}/{key}", value, step=step)
        tf.summary.scalar(f"{split}/ece", report["calibration"]["ece"], step=step)
    writer.close()


def _last_epoch(report: dict) -> int:
    """The step the figures belong to: the number of epochs trained (0 when unknown)."""
    import csv

    run = report.get("run")
    history = Path(run) / "history.csv" if run else None
    if not history or not history.is_file():
        return 0
    with open(history, newline="") as f:
        return sum(1 for _ in csv.DictReader(f))
