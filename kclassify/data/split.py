"""Reproducible train/val/test assignment and the ``split.csv`` manifest.

Each file's split is a pure function of ``(seed, relative path)``: a SHA-256 of
both mapped to [0, 1) and compared with the fractions. Adding or removing other
files therefore never moves a file between splits, and since every class is
assigned by the same rule, each class is split in the asked proportions (up to
sampling noise on very small classes).
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

from ..errors import DataError
from .sources import SPLITS, Item

HEADER = ("path", "label", "split")


def unit_hash(seed: int, path: str) -> float:
    """A uniform number in [0, 1) determined by ``seed`` and ``path`` only."""
    digest = hashlib.sha256(f"{seed}:{path}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign_splits(items: list[Item], val_fraction: float, test_fraction: float, seed: int) -> list[Item]:
    """Return items with ``split`` set, keeping any split the source already had.

    A source split into train/test only gets its validation images from train
    (``val_fraction`` of them); likewise for a missing test split.
    """
    present = {i.split for i in items if i.split}
    out = []
    for item in items:
        split = item.split
        u = unit_hash(seed, item.path)
        if split is None:
            split = "test" if u < test_fraction else "val" if u < test_fraction + val_fraction else "train"
        elif split == "train":
            if "test" not in present and u < test_fraction:
                split = "test"
            elif "val" not in present and 1.0 - u <= val_fraction:
                split = "val"
        out.append(Item(item.path, item.label, split))
    return out


def write_split(path: Path, items: list[Item]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        for i in sorted(items, key=lambda i: (SPLITS.index(i.split), i.label, i.path)):
            w.writerow((i.path, i.label, i.split))


def read_split(path: str | Path) -> dict[str, tuple[str, str]]:
    """``split.csv`` -> {relative path: (label, split)}."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"Split file {str(p)!r} does not exist. Pass a split.csv from a run folder.")
    with open(p, newline="") as f:
        reader = csv.reader(f)
        header = tuple(c.strip() for c in next(reader, ()))
        if header != HEADER:
            raise DataError(
                f"{p}: expected the header {','.join(HEADER)}; received {','.join(header) or 'nothing'}."
            )
        out = {}
        for n, row in enumerate(reader, start=2):
            if len(row) != 3 or row[2] not in SPLITS:
                raise DataError(f"{p}, line {n}: expected path,label,train|val|test; received {row!r}.")
            out[row[0]] = (row[1], row[2])
    return out


def apply_split_file(items: list[Item], path: str | Path) -> tuple[list[Item], int]:
    """Reuse a manifest exactly; return (items, number of source files it does not list).

    Raises:
        DataError: when a listed file is gone or its label changed, since the split
            could no longer be reproduced.
    """
    manifest = read_split(path)
    by_path = {i.path: i for i in items}
    missing = [p for p in manifest if p not in by_path]
    if missing:
        raise DataError(
            f"{len(missing)} file(s) listed in {path} are not in the data (first: {missing[:3]}). "
            "Point --data at the same dataset the split was made for, or drop --split-file."
        )
    relabelled = [p for p, (label, _) in manifest.items() if by_path[p].label != label]
    if relabelled:
        raise DataError(
            f"{len(relabelled)} file(s) changed label since {path} was written (first: "
            f"{relabelled[:3]}). Fix the labels or make a new split without --split-file."
        )
    used = [Item(p, label, split) for p, (label, split) in manifest.items()]
    return used, len(items) - len(used)
