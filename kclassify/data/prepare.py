"""From a ``--data`` spec to checked, split, labelled records (no TensorFlow)."""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError
from .files import check_images
from .sources import SPLITS, Item, Source, cache_dir, resolve_source
from .split import apply_split_file, assign_splits

log = logging.getLogger(__name__)


@dataclass
class Record:
    path: str  # relative to the source root, as in split.csv
    label: str
    split: str
    decode_path: str  # absolute file tf.data reads (the image, or a converted PNG copy)
    digest: str = ""  # SHA-256 of the file's bytes


@dataclass
class PreparedData:
    """Everything later stages need to know about the data, TensorFlow-free."""

    source: Source
    classes: list[str]
    records: list[Record]
    excluded: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    unlisted: int = 0  # source files left out because --split-file does not list them

    def subset(self, split: str) -> tuple[list[str], list[int]]:
        """Decode paths and integer labels of one split, in a stable order."""
        index = {c: i for i, c in enumerate(self.classes)}
        rows = [r for r in self.records if r.split == split]
        return [r.decode_path for r in rows], [index[r.label] for r in rows]

    def counts(self) -> dict[str, dict[str, int]]:
        """{split: {class: n}}."""
        out = {s: Counter() for s in SPLITS}
        for r in self.records:
            out[r.split][r.label] += 1
        return {s: {c: out[s][c] for c in self.classes} for s in SPLITS}

    def items(self) -> list[Item]:
        return [Item(r.path, r.label, r.split) for r in self.records]

    def fingerprint(self) -> str:
        """SHA-256 over (path, label, split, content hash) of every record: same files, labels and split.

        Stable wherever the same files sit (another folder, another machine); any changed byte,
        label or split assignment changes it.
        """
        h = hashlib.sha256()
        for r in sorted(self.records, key=lambda r: r.path):
            h.update(f"{r.path}\0{r.label}\0{r.split}\0{r.digest}\n".encode())
        return h.hexdigest()


def prepare_data(
    spec: str,
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 42,
    split_file: str | Path | None = None,
    min_images: int = 2,
    cache: Path | None = None,
    for_training: bool = True,
) -> PreparedData:
    """Resolve, check and split a data source.

    Every image is decoded once here so that a bad file is excluded (and reported)
    instead of crashing an epoch.

    Args:
        spec: what ``--data`` received (folder, CSV, ``tfds:NAME``, ``builtin:NAME``).
        split_file: a ``split.csv`` to reuse exactly instead of assigning splits.
        min_images: fail when a class keeps fewer usable images than this.
        for_training: also fail when a class has no training images (``evaluate`` does not train).

    Example:
        >>> data = prepare_data("builtin:digits")
        >>> data.classes[:3]
        ['0', '1', '2']
    """
    cache = cache or cache_dir()
    source = resolve_source(spec, cache)
    _check_class_names(source.classes, source.root)
    unlisted = 0
    items = source.items
    if split_file:
        items, unlisted = apply_split_file(items, split_file)
        if unlisted:
            log.warning("%d file(s) in the data are not in %s and are left out", unlisted, split_file)
    checked = check_images([source.root / i.path for i in items], cache)
    good, excluded = [], []
    for item, result in zip(items, checked):
        if result.ok:
            good.append((item, (str(result.decode_path), result.digest)))
        else:
            excluded.append((item.path, result.reason))
    if excluded:
        log.warning(
            "excluded %d file(s) that do not decode (first: %s: %s); listed in the run folder",
            len(excluded), excluded[0][0], excluded[0][1],
        )
    if not split_file:
        split_items = assign_splits([g[0] for g in good], val_fraction, test_fraction, seed)
    else:
        split_items = [g[0] for g in good]
    records = [Record(i.path, i.label, i.split, dp, digest) for i, (_, (dp, digest)) in zip(split_items, good)]
    classes = source.classes
    data = PreparedData(source, classes, records, excluded, unlisted)
    _check_enough(data, min_images, for_training)
    return data


def prepare_for(cfg, split_file: str | Path | None = None) -> PreparedData:
    """:func:`prepare_data` with a :class:`~kclassify.config.Config`'s data settings and seed (fit, tune).

    ``split_file``: a split to reuse (a resumed run's or search's own); by default the settings' one.
    """
    d = cfg.data
    return prepare_data(d.data, val_fraction=d.val_fraction, test_fraction=d.test_fraction, seed=cfg.train.seed,
                        split_file=split_file or d.split_file, min_images=d.min_images)


def _check_class_names(classes: list[str], root) -> None:
    """Class names labels.txt can hold: one a line, no space around it (every reader strips it, as MediaPipe does)."""
    bad = [c for c in classes if not c.strip() or c != c.strip() or "\n" in c or "\r" in c]
    if bad:
        raise DataError(f"Class name(s) {bad[:5]} in {root} begin or end with a space or hold a line break: labels.txt "
                        "(one name a line, read back stripped) cannot hold them. Rename the folders (or the labels "
                        "in your CSV) without them.")


def _check_enough(data: PreparedData, min_images: int, for_training: bool = True) -> None:
    per_class = Counter(r.label for r in data.records)
    short = {c: per_class.get(c, 0) for c in data.classes if per_class.get(c, 0) < min_images}
    if short:
        raise DataError(
            f"Too few usable images: class(es) {short} have fewer than {min_images} after "
            f"excluding {len(data.excluded)} file(s) that do not decode. Add images, fix the "
            "files listed in excluded.csv, or lower --min-images."
        )
    counts = data.counts()
    no_train = [c for c in data.classes if counts["train"][c] == 0]
    if no_train and for_training:
        raise DataError(
            f"Class(es) {no_train} have no training images after the split. Add images or "
            "lower --val-fraction/--test-fraction."
        )
    for split in ("val", "test"):
        empty = [c for c in data.classes if counts[split][c] == 0]
        if empty and sum(counts[split].values()):
            log.warning("class(es) %s have no %s images; their %s metrics are missing", empty, split, split)
