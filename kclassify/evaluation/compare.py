"""``compare``: is one model really better than another on the same images? A paired comparison.

Two evaluations of the same split (``predictions.csv`` of ``kclassify evaluate``, which ``fit`` and
``tune --then-fit`` write) are compared image by image:

- the difference of accuracy and of macro F1 (B - A), with a 95% percentile bootstrap interval
  that resamples the images, the same draw for both models (paired: for accuracy, an image both
  get right or both get wrong adds no noise to the difference);
- McNemar's exact test on the discordant images (A right and B wrong, A wrong and B right):
  the p-value of a difference at least this large if both models were equally good
  (``scipy.stats.binomtest``).

Why: on a test split of ~200 images one accuracy figure has a sampling standard deviation of about 3
points (binomial, p = 0.8; a 95% range of about +-5.5), and retraining one setting moved the test
accuracy of intel_scenes by about as much (measured: docs/benchmarks.md, "compare on one split of
the search benchmark"); a difference of two runs needs its own error bar before
anyone acts on it.

The interval and the test answer "are these two trained models different on this kind of image?";
they hold the test images' sampling noise, not the spread of retraining: whether one recipe beats
another needs several trainings of each (``benchmarks/search_vs_default.py --seeds``).
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError, RunFolderError
from ..settings import CompareSettings

PREDICTIONS = "predictions.csv"
RESAMPLES = CompareSettings.resamples
LEVEL = 0.95
BLOCK_ELEMENTS = 2_000_000  # image weights held at a time (16 MB)


@dataclass(frozen=True)
class Interval:
    value: float  # on the images as they are
    low: float
    high: float


@dataclass(frozen=True)
class Comparison:
    """B against A on the same ``images``; differences are B - A."""

    images: int
    split: str
    accuracy_a: float
    accuracy_b: float
    accuracy_difference: Interval
    macro_f1_a: float
    macro_f1_b: float
    macro_f1_difference: Interval
    only_a_right: int  # discordant images: A right, B wrong
    only_b_right: int
    mcnemar_p: float

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self, a: str = "A", b: str = "B") -> str:
        d, f = self.accuracy_difference, self.macro_f1_difference
        pct = round(100 * LEVEL)
        return (f"{self.images} {self.split} images: accuracy {a} {self.accuracy_a:.4f}, {b} {self.accuracy_b:.4f}; "
                f"{b} - {a} {100 * d.value:+.1f} points ({pct}% CI {100 * d.low:+.1f} to {100 * d.high:+.1f})\n"
                f"macro F1 {a} {self.macro_f1_a:.4f}, {b} {self.macro_f1_b:.4f}; {b} - {a} {100 * f.value:+.1f} points "
                f"({pct}% CI {100 * f.low:+.1f} to {100 * f.high:+.1f})\n"
                f"McNemar: {self.only_a_right} images only {a} got right, {self.only_b_right} only {b}; "
                f"p = {self.mcnemar_p:.3g}" + (" (not significant at 0.05)" if self.mcnemar_p >= 0.05 else ""))


def compare(a, b, split: str = CompareSettings.split, resamples: int = RESAMPLES,
            seed: int = CompareSettings.seed) -> Comparison:
    """Compare two evaluations of the same images (see the module's docstring).

    Args:
        a, b: an evaluation folder (holding ``predictions.csv``), a run folder (its ``evaluation/``),
            a tuning folder (its ``best_run/evaluation/``), or a ``predictions.csv``.
        split: which images of the two files (``all``: every row).

    Raises:
        ConfigError: settings out of range (:class:`kclassify.settings.CompareSettings`).
        RunFolderError: a folder holds no predictions (run ``kclassify evaluate`` on it first).
        DataError: the two files scored different images or gave one image different labels.
    """
    CompareSettings(split, resamples, seed).check()
    labels, predicted_a, predicted_b = aligned(a, b, split)
    return paired(labels, predicted_a, predicted_b, split=split, resamples=resamples, seed=seed)


def aligned(a, b, split: str = "test") -> tuple[list[str], list[str], list[str]]:
    """The true labels and the two predicted classes of the images two evaluations share, in one order.

    Raises as :func:`compare` does.
    """
    rows_a, rows_b = _rows(predictions_file(a), split), _rows(predictions_file(b), split)
    for target, rows in ((a, rows_a), (b, rows_b)):
        if not rows:
            raise DataError(f"{target} holds no {split} images: evaluate it on that split first "
                            f"(kclassify evaluate RUN --split {split}), or compare another --split.")
    if rows_a.keys() != rows_b.keys():
        only_a, only_b = len(rows_a.keys() - rows_b.keys()), len(rows_b.keys() - rows_a.keys())
        raise DataError(
            f"the two evaluations scored different {split} images ({len(rows_a)} and {len(rows_b)}; {only_a} only in "
            f"the first, {only_b} only in the second, e.g. {sorted(rows_a.keys() ^ rows_b.keys())[0]!r}): a paired "
            f"comparison needs the same images. Train the second with --split-file <first run>/split.csv, or "
            f"evaluate both with the same --data and --split.")
    paths = sorted(rows_a)
    labels = [rows_a[p][0] for p in paths]
    if labels != [rows_b[p][0] for p in paths]:
        first = next(p for p in paths if rows_a[p][0] != rows_b[p][0])
        raise DataError(f"the two evaluations label {first!r} differently ({rows_a[first][0]!r} and "
                        f"{rows_b[first][0]!r}): they were not scored on the same data.")
    return labels, [rows_a[p][1] for p in paths], [rows_b[p][1] for p in paths]


def paired(labels, predicted_a, predicted_b, split: str = CompareSettings.split, resamples: int = RESAMPLES,
           seed: int = CompareSettings.seed) -> Comparison:
    """The paired comparison of two models' predicted classes for the same true ``labels``.

    Example:
        >>> c = paired(list("aabb"), list("aaba"), list("aabb"), resamples=200)
        >>> c.accuracy_a, c.accuracy_b, c.only_a_right, c.only_b_right, c.mcnemar_p
        (0.75, 1.0, 0, 1, 1.0)
    """
    CompareSettings(resamples=resamples, seed=seed).check()  # split is only a name here
    classes = sorted(set(labels) | set(predicted_a) | set(predicted_b))
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[c] for c in labels])
    pa, pb = np.array([index[c] for c in predicted_a]), np.array([index[c] for c in predicted_b])
    n = len(y)
    if n == 0:
        raise DataError(f"no {split} images to compare: evaluate both models on that split first "
                        f"(kclassify evaluate RUN --split {split}).")
    right_a, right_b = pa == y, pb == y
    only_a, only_b = int(np.sum(right_a & ~right_b)), int(np.sum(right_b & ~right_a))
    p_value = mcnemar_p(only_a, only_b)
    k = len(classes)

    def accuracy(weights):
        return weights @ (right_b.astype(float) - right_a) / n

    def macro_f1(weights):
        return _macro_f1(weights, y, pb, k) - _macro_f1(weights, y, pa, k)

    acc, f1 = _bootstrap(n, resamples, seed, [accuracy, macro_f1])
    ones = np.ones((1, n))
    return Comparison(
        images=n, split=split, accuracy_a=float(right_a.mean()), accuracy_b=float(right_b.mean()),
        accuracy_difference=acc, macro_f1_a=float(_macro_f1(ones, y, pa, k)[0]),
        macro_f1_b=float(_macro_f1(ones, y, pb, k)[0]), macro_f1_difference=f1,
        only_a_right=only_a, only_b_right=only_b, mcnemar_p=float(p_value))


def _bootstrap(n: int, resamples: int, seed: int, statistics) -> list[Interval]:
    """Percentile intervals of paired statistics of image weightings (a row of weights: how often
    each image is drawn), the same draws for every statistic; drawn in blocks so memory stays flat."""
    rng = np.random.default_rng(seed)
    block = max(1, BLOCK_ELEMENTS // n)
    drawn = [[] for _ in statistics]
    for start in range(0, resamples, block):
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=min(block, resamples - start)).astype(np.float64)
        for values, statistic in zip(drawn, statistics):
            values.append(statistic(weights))
    tail = 100 * (1 - LEVEL) / 2
    ones = np.ones((1, n))
    out = []
    for values, statistic in zip(drawn, statistics):
        low, high = np.percentile(np.concatenate(values), [tail, 100 - tail])
        out.append(Interval(float(statistic(ones)[0]), float(low), float(high)))
    return out


def _macro_f1(weights: np.ndarray, y: np.ndarray, pred: np.ndarray, classes: int) -> np.ndarray:
    """Macro F1 of each weighting of the images (rows of ``weights``), as scikit-learn's
    ``f1_score(average="macro")``: over the classes that occur among the labels or predictions drawn."""
    scores = np.zeros((len(weights), classes))
    present = np.zeros((len(weights), classes), bool)
    for k in range(classes):
        tp = weights @ ((y == k) & (pred == k))
        fp = weights @ ((y != k) & (pred == k))
        fn = weights @ ((y == k) & (pred != k))
        denominator = 2 * tp + fp + fn
        present[:, k] = denominator > 0
        scores[:, k] = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    return scores.sum(axis=1) / np.maximum(present.sum(axis=1), 1)


def predictions_file(target) -> Path:
    """The ``predictions.csv`` that ``target`` (a file, an evaluation, run or tuning folder) stands for."""
    path = Path(target)
    for candidate in (path, path / PREDICTIONS, path / "evaluation" / PREDICTIONS,
                      path / "best_run" / "evaluation" / PREDICTIONS):
        if candidate.is_file():
            return candidate
    if not path.exists():
        raise RunFolderError(f"{path} does not exist: pass a run folder, its evaluation folder or a predictions.csv.")
    if (path / "best_hparams.yaml").is_file():  # a tuning folder whose best settings were never trained
        raise RunFolderError(f"{path} is a search without a final model: run the tune command again with --then-fit, "
                             f"or `kclassify fit --config {path}/config.yaml --hparams {path}/best_hparams.yaml`.")
    raise RunFolderError(f"{path} holds no {PREDICTIONS} (looked in it, evaluation/ and best_run/evaluation/): "
                         f"run `kclassify evaluate {path}` first.")


def _rows(path: Path, split: str) -> dict[str, tuple[str, str]]:
    """{image path: (label, predicted)} of one split of a predictions.csv."""
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            missing = {"path", "split", "label", "predicted"} - set(reader.fieldnames or ())
            if missing:
                raise DataError(f"{path}: expected the columns path, split, label, predicted (kclassify evaluate's "
                                f"predictions.csv); missing {', '.join(sorted(missing))}.")
            rows = {}
            for r in reader:
                if split != "all" and r["split"] != split:
                    continue
                if r["path"] in rows:
                    raise DataError(f"{path} lists {r['path']!r} twice: expected one row per image, as kclassify "
                                    f"evaluate writes it.")
                rows[r["path"]] = (r["label"], r["predicted"])
            return rows
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path} is not a predictions.csv ({e.__class__.__name__}): pass the file kclassify evaluate "
                        f"wrote, or the folder that holds it.") from None


def mcnemar_p(only_a: int, only_b: int) -> float:
    """McNemar's exact two-sided p-value from the discordant counts (1.0 when there are none)."""
    from scipy.stats import binomtest

    return float(binomtest(only_a, only_a + only_b, 0.5).pvalue) if only_a + only_b else 1.0
