"""One interface over the four kinds of data source.

``resolve_source(spec)`` turns what a user typed after ``--data`` into a
:class:`Source`: a root folder and a list of ``(relative path, label, split)``
items, ``split`` being set only when the source comes already split. Nothing here
decodes an image or imports TensorFlow (except ``tfds:``, which needs TFDS).
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError
from .files import is_candidate, list_images

SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val",
    "test": "test", "testing": "test",
}


@dataclass
class Item:
    path: str  # posix path relative to Source.root
    label: str
    split: str | None = None


@dataclass
class Source:
    kind: str  # folder | split_folder | csv | tfds | builtin
    spec: str
    root: Path
    items: list[Item]
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def classes(self) -> list[str]:
        return sorted({i.label for i in self.items})


def cache_dir() -> Path:
    """kclassify's cache: ``$KCLASSIFY_CACHE_DIR`` or ``~/.cache/kclassify``."""
    env = os.environ.get("KCLASSIFY_CACHE_DIR")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kclassify"
    base.mkdir(parents=True, exist_ok=True)
    return base


def resolve_source(spec: str, cache: Path | None = None) -> Source:
    """Identify the kind of ``spec`` and list its items.

    Args:
        spec: a class-folder directory, a directory with train/val/test subfolders of
            classes, a CSV file ``path,label[,split]``, ``tfds:NAME`` or ``builtin:NAME``.
        cache: where builtin and TFDS datasets are written (default :func:`cache_dir`).

    Raises:
        DataError: missing path, fewer than 2 classes, or an empty class.
    """
    cache = cache or cache_dir()
    if spec.startswith("builtin:"):
        from .builtin import materialize

        src = _from_folder(materialize(spec.split(":", 1)[1], cache), spec)
        src.kind = "builtin"
    elif spec.startswith("tfds:"):
        from .tfds_source import materialize

        src = _from_folder(materialize(spec.split(":", 1)[1], cache), spec)
        src.kind = "tfds"
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            raise DataError(
                f"Data path {spec!r} does not exist. Pass an image folder (one subfolder per "
                "class), a CSV 'path,label', tfds:NAME, or builtin:digits."
            )
        if path.is_file():
            if path.suffix.lower() != ".csv":
                raise DataError(
                    f"Data path {spec!r} is a file but not a .csv manifest. Pass a folder of "
                    "class subfolders or a CSV with columns path,label."
                )
            src = _from_csv(path, spec)
        else:
            src = _from_folder(path, spec)
    _check_classes(src)
    return src


def _split_dirs(root: Path) -> dict[str, Path] | None:
    """Subfolders that make ``root`` a pre-split dataset, or None."""
    subdirs = [d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]
    names = {d.name.lower(): d for d in subdirs}
    if "train" in names and set(names) <= set(SPLIT_ALIASES):
        return {SPLIT_ALIASES[n]: d for n, d in names.items()}
    return None


def _class_items(folder: Path, root: Path, split: str | None, skipped: Counter) -> list[Item]:
    items = []
    loose = 0
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            skipped["hidden"] += 1
        elif entry.is_dir():
            files, sk = list_images(entry)
            skipped.update(sk)
            if not files:
                raise DataError(
                    f"Class folder {str(entry)!r} has no images (looked for "
                    ".jpg/.jpeg/.png/.bmp/.gif/.webp/.tif). Add images or remove the folder."
                )
            items += [Item(f.relative_to(root).as_posix(), entry.name, split) for f in files]
        elif entry.is_file():
            loose += 1
    if loose:
        skipped["outside_class_folders"] += loose
    return items


def _from_folder(root: Path, spec: str) -> Source:
    skipped: Counter = Counter()
    splits = _split_dirs(root)
    if splits:
        items = []
        for split, folder in sorted(splits.items()):
            items += _class_items(folder, root, split, skipped)
        kind = "split_folder"
    else:
        items = _class_items(root, root, None, skipped)
        kind = "folder"
    return Source(kind, spec, root.resolve(), items, dict(skipped))


def _from_csv(path: Path, spec: str) -> Source:
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    if not rows:
        raise DataError(f"CSV manifest {spec!r} is empty. Expected rows 'path,label'.")
    header = [c.strip().lower() for c in rows[0]]
    has_header = "path" in header and "label" in header
    if has_header:
        cols = {name: header.index(name) for name in ("path", "label", "split") if name in header}
        rows = rows[1:]
    else:
        cols = {"path": 0, "label": 1}
    root = path.parent.resolve()
    items, skipped = [], Counter()
    for n, row in enumerate(rows, start=2 if has_header else 1):
        if len(row) <= max(cols.values()):
            raise DataError(
                f"{spec}, line {n}: expected columns {', '.join(cols)}; received {row!r}."
            )
        rel, label = row[cols["path"]].strip(), row[cols["label"]].strip()
        split = None
        if "split" in cols and row[cols["split"]].strip():
            raw = row[cols["split"]].strip().lower()
            if raw not in SPLIT_ALIASES:
                raise DataError(
                    f"{spec}, line {n}: unknown split {raw!r}. Valid: train, val, test."
                )
            split = SPLIT_ALIASES[raw]
        if not is_candidate(Path(rel).name):
            skipped["not_image"] += 1
            continue
        p = Path(rel) if Path(rel).is_absolute() else root / rel
        items.append(Item(Path(os.path.relpath(p, root)).as_posix(), label, split))
    return Source("csv", spec, root, items, dict(skipped))


def _check_classes(src: Source) -> None:
    counts = Counter(i.label for i in src.items)
    if len(counts) < 2:
        found = f"only {list(counts)}" if counts else "no labelled images"
        raise DataError(
            f"{src.spec}: classification needs at least 2 classes; found {found}. "
            "Put each class's images in its own subfolder (data/cat/*.jpg, data/dog/*.jpg)."
        )
