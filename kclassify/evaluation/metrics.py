"""Every classification metric the field reports, from true labels and predicted probabilities.

scikit-learn computes each figure; this module only decides the conventions and names the keys
of ``report.json`` (documented in docs/evaluation.md):

- macro and weighted averages follow scikit-learn's defaults (over the classes that occur in the
  labels or the predictions), so a figure here matches ``f1_score(..., average="macro")``;
- ROC AUC and average precision are one-vs-rest per class, and their macro average is taken over
  the classes that have both positive and negative examples (others have no curve, reported as null);
- the confusion matrix is over every class the model knows, rows = true class.
"""

from __future__ import annotations

import warnings

import numpy as np

TOP_K = 5  # top-k accuracy is reported when there are more classes than this
CONFUSED_PAIRS = 10


def classification_metrics(y_true, probabilities, labels: list[str]) -> dict:
    """All metrics of one evaluated split.

    Args:
        y_true: integer class indices ``(N,)`` into ``labels``.
        probabilities: ``(N, len(labels))`` predicted class probabilities.
        labels: class names in output order.

    Example:
        >>> m = classification_metrics([0, 1, 1], [[.9, .1], [.2, .8], [.6, .4]], ["cat", "dog"])
        >>> round(m["accuracy"], 3), m["confusion_matrix"]["counts"]
        (0.667, [[1, 0], [1, 1]])
    """
    y, p = _checked(y_true, probabilities, labels)
    with warnings.catch_warnings():
        # A split missing some classes makes scikit-learn warn (kappa undefined, one label only); the
        # report says so with nulls and supports of 0 instead of a wall of warnings.
        warnings.simplefilter("ignore", UserWarning)
        return _all_metrics(y, p, labels)


def _all_metrics(y: np.ndarray, p: np.ndarray, labels: list[str]) -> dict:
    from sklearn import metrics as skm

    pred = p.argmax(axis=1)
    every = list(range(len(labels)))
    precision, recall, f1, support = skm.precision_recall_fscore_support(y, pred, labels=every, zero_division=0)
    auc, ap = _one_vs_rest(y, p)
    counts = skm.confusion_matrix(y, pred, labels=every)
    return {
        "images": int(len(y)),
        "accuracy": float(skm.accuracy_score(y, pred)),
        "top_k_accuracy": ({"k": TOP_K, "value": float(skm.top_k_accuracy_score(y, p, k=TOP_K, labels=every))}
                           if len(labels) > TOP_K else None),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y, pred)),
        "cohen_kappa": _finite(skm.cohen_kappa_score(y, pred, labels=every)),
        "log_loss": float(skm.log_loss(y, _normalized(p), labels=every)),
        "macro": _averaged(skm, y, pred, "macro"),
        "weighted": _averaged(skm, y, pred, "weighted"),
        "roc_auc": {"macro": _mean(auc), "per_class": dict(zip(labels, auc))},
        "average_precision": {"macro": _mean(ap), "per_class": dict(zip(labels, ap))},
        "per_class": [
            {"label": name, "precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
             "support": int(support[i]), "roc_auc": auc[i], "average_precision": ap[i]}
            for i, name in enumerate(labels)
        ],
        "confusion_matrix": {"labels": list(labels), "counts": counts.tolist(), "normalized": _row_normalized(counts)},
        "most_confused": most_confused(counts, labels),
    }


def headline(metrics: dict) -> dict:
    """The few figures a summary shows (and metrics.json gains)."""
    top_k = metrics["top_k_accuracy"]
    return {
        "accuracy": metrics["accuracy"],
        "balanced_accuracy": metrics["balanced_accuracy"],
        "macro_f1": metrics["macro"]["f1"],
        "weighted_f1": metrics["weighted"]["f1"],
        "roc_auc_macro": metrics["roc_auc"]["macro"],
        "log_loss": metrics["log_loss"],
        "cohen_kappa": metrics["cohen_kappa"],
        **({f"top{top_k['k']}_accuracy": top_k["value"]} if top_k else {}),
    }


def most_confused(counts: np.ndarray, labels: list[str], limit: int = CONFUSED_PAIRS) -> list[dict]:
    """Off-diagonal cells of the confusion matrix, most images first (ties: larger share of the true class)."""
    counts = np.asarray(counts)
    totals = counts.sum(axis=1)
    pairs = [
        {"true": labels[i], "predicted": labels[j], "count": int(counts[i, j]),
         "share_of_true": float(counts[i, j] / totals[i])}
        for i in range(len(labels)) for j in range(len(labels)) if i != j and counts[i, j] > 0
    ]
    pairs.sort(key=lambda r: (-r["count"], -r["share_of_true"], r["true"], r["predicted"]))
    return pairs[:limit]


def best_f1_threshold(y_true, probabilities, positive: int = 1) -> dict:
    """Binary tasks: precision and recall over thresholds of the positive class's score, and the F1-best one.

    Returns ``threshold`` (predict positive when its probability is >= it; midway between the
    F1-best score and the next lower one), the precision, recall and F1 there, and the curve (``thresholds``, ``precision``, ``recall``; at most ~200 points).
    """
    from sklearn.metrics import precision_recall_curve

    y = np.asarray(y_true) == positive
    score = np.asarray(probabilities, np.float64)[:, positive]
    precision, recall, thresholds = precision_recall_curve(y, score)
    precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    best = int(np.argmax(f1))
    # Any threshold between the best score and the next lower one classifies the fitting images alike;
    # the midpoint leaves new images a margin (the score itself sits on the last positive, e.g. 0.90
    # on a small perfectly separated validation split, and then misses most positives of the test).
    threshold = (thresholds[best] + thresholds[best - 1]) / 2 if best > 0 else thresholds[best]
    step = max(1, len(thresholds) // 200)
    return {
        "threshold": float(threshold), "f1": float(f1[best]),
        "precision": float(precision[best]), "recall": float(recall[best]),
        "curve": {"thresholds": thresholds[::step].tolist(), "precision": precision[::step].tolist(),
                  "recall": recall[::step].tolist()},
    }


def at_threshold(y_true, probabilities, threshold: float, positive: int = 1) -> dict:
    """Precision, recall and F1 of the positive class when it is predicted at ``score >= threshold``."""
    from sklearn.metrics import precision_recall_fscore_support

    y = np.asarray(y_true) == positive
    pred = np.asarray(probabilities)[:, positive] >= threshold
    p, r, f, _ = precision_recall_fscore_support(y, pred, average="binary", zero_division=0)
    return {"threshold": float(threshold), "precision": float(p), "recall": float(r), "f1": float(f)}


def _checked(y_true, probabilities, labels):
    y = np.asarray(y_true, dtype=np.int64).reshape(-1)
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape != (len(y), len(labels)):
        raise ValueError(f"expected probabilities shaped ({len(y)}, {len(labels)}); received {p.shape}")
    if len(y) == 0:
        raise ValueError("no images to evaluate")
    return y, p


def _averaged(skm, y, pred, average: str) -> dict:
    p, r, f, _ = skm.precision_recall_fscore_support(y, pred, average=average, zero_division=0)
    return {"precision": float(p), "recall": float(r), "f1": float(f)}


def _one_vs_rest(y, p) -> tuple[list, list]:
    """ROC AUC and average precision of each class against the rest (None where a class has no curve)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    auc, ap = [], []
    for c in range(p.shape[1]):
        positive = y == c
        if positive.all() or not positive.any():
            auc.append(None)
            ap.append(None)
            continue
        auc.append(float(roc_auc_score(positive, p[:, c])))
        ap.append(float(average_precision_score(positive, p[:, c])))
    return auc, ap


def _mean(values: list) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def _finite(value) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None  # kappa is NaN when one class is all there is


def _normalized(p: np.ndarray) -> np.ndarray:
    """Rows that sum to one exactly (float16/int8 outputs are off by ~1e-3), clipped away from zero."""
    p = np.clip(p, 1e-7, 1.0)
    return p / p.sum(axis=1, keepdims=True)


def _row_normalized(counts: np.ndarray) -> list[list[float]]:
    totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rows = np.where(totals > 0, counts / np.maximum(totals, 1), 0.0)
    return np.round(rows, 6).tolist()
