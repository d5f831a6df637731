"""The evaluation's PNG plots (matplotlib, headless): one function per picture, each returning its file.

Every function takes what ``report.json`` already holds (or the labels and probabilities it was
computed from), so a plot never disagrees with the numbers beside it.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..plotting import figure

LEGEND_UP_TO = 12  # classes; beyond this a per-class legend hides the curves


def confusion_matrix(path: Path, matrix: dict) -> Path:
    """Row-normalised colours (recall on the diagonal), counts written in the cells when they fit."""
    labels, counts = matrix["labels"], np.asarray(matrix["counts"])
    normalized = np.asarray(matrix["normalized"])
    n = len(labels)
    side = min(max(4.5, 0.5 * n + 2.5), 16)
    with figure(path, "predicted", "true", size=(side + 1, side), grid=False) as ax:
        im = ax.imshow(normalized, cmap="Blues", vmin=0, vmax=1)
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
        ax.set_xticks(range(n), labels, rotation=45 if n > 4 else 0, ha="right" if n > 4 else "center", fontsize=8)
        ax.set_yticks(range(n), labels, fontsize=8)
        if n <= 25:
            for i in range(n):
                for j in range(n):
                    if counts[i, j]:
                        ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7,
                                color="white" if normalized[i, j] > 0.5 else "black")
        ax.set_title("confusion matrix (counts; colour = row share)")
    return path


def roc_curves(path: Path, y_true, probabilities, labels: list[str], metrics: dict) -> Path:
    """One-vs-rest ROC curve per class, its AUC in the legend, the chance diagonal dashed."""
    from sklearn.metrics import roc_curve

    y, p = np.asarray(y_true), np.asarray(probabilities)
    with figure(path, "false positive rate", "true positive rate", size=(6.4, 5.2)) as ax:
        for c, name in enumerate(labels):
            if metrics["roc_auc"]["per_class"][name] is None:
                continue
            fpr, tpr, _ = roc_curve(y == c, p[:, c])
            label = f"{name} ({metrics['roc_auc']['per_class'][name]:.3f})" if len(labels) <= LEGEND_UP_TO else None
            ax.plot(fpr, tpr, lw=1.2, label=label)
        ax.plot([0, 1], [0, 1], "--", color="0.6", lw=1)
        ax.set_title(f"ROC, one vs rest (macro AUC {_fmt(metrics['roc_auc']['macro'])})")
    return path


def pr_curves(path: Path, y_true, probabilities, labels: list[str], metrics: dict) -> Path:
    """One-vs-rest precision-recall curve per class, its average precision in the legend."""
    from sklearn.metrics import precision_recall_curve

    y, p = np.asarray(y_true), np.asarray(probabilities)
    per_class = metrics["average_precision"]["per_class"]
    with figure(path, "recall", "precision", size=(6.4, 5.2)) as ax:
        for c, name in enumerate(labels):
            if per_class[name] is None:
                continue
            precision, recall, _ = precision_recall_curve(y == c, p[:, c])
            label = f"{name} ({per_class[name]:.3f})" if len(labels) <= LEGEND_UP_TO else None
            ax.plot(recall, precision, lw=1.2, drawstyle="steps-post", label=label)
        ax.set_xlim(0, 1.01)
        ax.set_ylim(0, 1.02)
        ax.set_title(f"precision-recall, one vs rest (macro AP {_fmt(metrics['average_precision']['macro'])})")
    return path


def reliability(path: Path, calibration: dict) -> Path:
    """Accuracy against confidence per bin, before and after temperature scaling; the diagonal is perfect."""
    with figure(path, "confidence (top class)", "accuracy", size=(5.6, 5.2)) as ax:
        ax.plot([0, 1], [0, 1], "--", color="0.6", lw=1, label="perfectly calibrated")
        for key, name, colour in (("reliability", "model", "C3"), ("reliability_calibrated", "temperature-scaled", "C0")):
            if key == "reliability_calibrated" and calibration["temperature"] == 1.0:
                continue
            bins = [b for b in calibration[key] if b["count"]]
            ece = calibration["ece" if key == "reliability" else "ece_calibrated"]
            label = f"{name} (ECE {ece:.3f})" + (f", T={calibration['temperature']:.2f}" if colour == "C0" else "")
            ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o-", color=colour, label=label)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_title("reliability diagram")
    return path


def threshold_curve(path: Path, threshold: dict, positive_label: str) -> Path:
    """Binary tasks: precision, recall and F1 of the positive class over thresholds, the chosen one marked."""
    curve = threshold["curve"]
    t, p, r = (np.asarray(curve[k]) for k in ("thresholds", "precision", "recall"))
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
    with figure(path, f"threshold on P({positive_label})", "", size=(6.4, 4.4)) as ax:
        ax.plot(t, p, label="precision")
        ax.plot(t, r, label="recall")
        ax.plot(t, f1, label="F1")
        ax.axvline(threshold["threshold"], linestyle="--", color="0.4",
                   label=f"best F1 at {threshold['threshold']:.3f}")
        ax.set_ylim(0, 1.02)
    return path


# What history.csv holds where an epoch has no value: nothing, or Keras CSVLogger's "NA" (every val_ column of
# a run without validation images, e.g. `fit --val-fraction 0` or `tune --final-data train+val`).
MISSING = (None, "", "NA")


def training_curves(path: Path, history: Path) -> Path | None:
    """Loss and accuracy per epoch, training and validation, from a run's history.csv."""
    if not history.is_file():
        return None
    with open(history, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    epochs = [int(r["epoch"]) + 1 for r in rows]
    with figure(path, "epoch", size=(11, 4.2), columns=2) as (loss_ax, acc_ax):
        for ax, metric in ((loss_ax, "loss"), (acc_ax, "accuracy")):
            for key, name in ((metric, "train"), (f"val_{metric}", "validation")):
                values = [float(r[key]) if r.get(key) not in MISSING else np.nan for r in rows]
                if not np.all(np.isnan(values)):
                    ax.plot(epochs, values, label=name)
            ax.set_title(metric)
    return path


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"
