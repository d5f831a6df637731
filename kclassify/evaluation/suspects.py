"""Likely-mislabelled images: confident learning (cleanlab) over out-of-sample probabilities.

Confident learning (Northcutt et al., 2021) estimates, per class, how confident the model has to
be before a prediction counts (the class's mean self-confidence), counts the images whose given
label disagrees with such a confident prediction, and prunes that many per class pair, lowest
given-label probability first. cleanlab is the reference implementation; we call its
``find_label_issues`` and rank what it finds by self-confidence (the probability of the given
label), lowest first: the top of the list is what a person should look at first.

The probabilities must be out-of-sample: a model's own training images are fitted, so their
given labels look right whatever they are. ``evaluate`` uses the validation and test splits, or
cross-validated probabilities for every image when asked.
"""

from __future__ import annotations

import csv
import logging
import warnings
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

METHOD = "cleanlab.filter.find_label_issues (prune_by_noise_rate), ranked by self-confidence"
FIELDS = ("rank", "path", "split", "given_label", "given_probability", "suggested_label", "suggested_probability")


def find_suspects(y_true, probabilities, labels: list[str], paths: list[str], splits: list[str]) -> list[dict]:
    """Rows of :data:`FIELDS`, most suspect first; empty when the images are too few to judge.

    Confident learning needs each class's mean self-confidence, so classes need examples: with
    fewer than two labelled classes, or fewer images than classes, nothing is flagged.
    """
    y = np.asarray(y_true, np.int64)
    p = np.clip(np.asarray(probabilities, np.float64), 1e-7, 1.0)
    p = p / p.sum(axis=1, keepdims=True)
    if len(np.unique(y)) < 2 or len(y) < p.shape[1]:
        log.info("suspect labels: %d image(s) in %d class(es) are too few to judge", len(y), len(np.unique(y)))
        return []
    from cleanlab.filter import find_label_issues

    with warnings.catch_warnings():  # cleanlab warns about classes absent from small splits: expected here
        warnings.simplefilter("ignore")
        ranked = find_label_issues(y, p, filter_by="prune_by_noise_rate",
                                   return_indices_ranked_by="self_confidence", n_jobs=1)
    rows = []
    for rank, i in enumerate(ranked, 1):
        other = p[i].copy()
        other[y[i]] = -1.0
        j = int(other.argmax())
        rows.append({
            "rank": rank, "path": paths[i], "split": splits[i],
            "given_label": labels[y[i]], "given_probability": round(float(p[i, y[i]]), 6),
            "suggested_label": labels[j], "suggested_probability": round(float(p[i, j]), 6),
        })
    return rows


def write_suspects(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
