"""Likely-mislabelled images: confident learning (cleanlab) over out-of-sample probabilities.

Confident learning (Northcutt et al., 2021) estimates, per class, how confident the model has to
be before a prediction counts (the class's mean self-confidence), counts the images whose given
label disagrees with such a confident prediction, and prunes that many per class pair, lowest
given-label probability first. cleanlab is the reference implementation; we call its
``find_label_issues`` and rank what it finds by self-confidence (the probability of the given
label), lowest first: the top of the list is what a person should look at first.

On small or nearly separable data the per-class thresholds sit high and confident learning finds
too few: on generated colour images with a few flipped labels, each flipped image given a very low
probability for its label and a high one for its true colour, it flagged only one of them
(measured: docs/benchmarks.md, "Suspect labels: why a second rule, and when none are listed").
So an image is also flagged when its given label gets less than :data:`GIVEN_BELOW` while another
class gets at least :data:`OTHER_ABOVE`, the plain reading of "the label is very unlikely and
another class is confident"; the ``reason`` column says which rule flagged it.

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

METHOD = ("cleanlab.filter.find_label_issues (prune_by_noise_rate), plus given-label probability < 0.1 with "
          "another class >= 0.5; ranked by self-confidence")
FIELDS = ("rank", "path", "split", "given_label", "given_probability", "suggested_label", "suggested_probability",
          "reason")
GIVEN_BELOW = 0.1
OTHER_ABOVE = 0.5


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
    if not informative(y, p):
        log.warning("suspect labels: the model is too close to chance on these images for its disagreements to "
                    "say anything about their labels; none listed")
        return []
    from cleanlab.filter import find_label_issues

    with warnings.catch_warnings():  # cleanlab warns about classes absent from small splits: expected here
        warnings.simplefilter("ignore")
        learned = set(find_label_issues(y, p, filter_by="prune_by_noise_rate", n_jobs=1).nonzero()[0].tolist())
    given = p[np.arange(len(y)), y]
    other = p.copy()
    other[np.arange(len(y)), y] = -1.0
    best_other = other.argmax(axis=1)
    plain = set(np.flatnonzero((given < GIVEN_BELOW) & (other.max(axis=1) >= OTHER_ABOVE)).tolist())
    ranked = sorted(learned | plain, key=lambda i: (given[i], paths[i]))  # self-confidence, lowest first
    return [{
        "rank": rank, "path": paths[i], "split": splits[i],
        "given_label": labels[y[i]], "given_probability": round(float(given[i]), 6),
        "suggested_label": labels[best_other[i]], "suggested_probability": round(float(p[i, best_other[i]]), 6),
        "reason": "+".join(name for name, found in (("confident learning", i in learned), ("low probability", i in plain))
                           if found),
    } for rank, i in enumerate(ranked, 1)]


def informative(y: np.ndarray, p: np.ndarray) -> bool:
    """Whether the model's balanced accuracy is at least a quarter of the way from chance to perfect.

    A model at chance disagrees with most labels: with such a model confident learning flagged most
    of intel_scenes' images (measured: docs/benchmarks.md, "Suspect labels: why a second rule, and
    when none are listed"). Such a list is noise, not label errors.
    """
    chance = 1.0 / p.shape[1]
    recalls = [np.mean(p[y == c].argmax(axis=1) == c) for c in np.unique(y)]
    return float(np.mean(recalls)) >= chance + 0.25 * (1.0 - chance)


def write_suspects(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
