"""``audit``: find what costs a training run before it runs: unreadable files, format quirks, odd sizes,
duplicates within a class, under two labels and across splits, class imbalance, stray files.

Every data source ``fit`` reads is audited the same way (folders, pre-split folders, CSV manifests,
``tfds:``/``builtin:`` once written out). Files are read, hashed and decoded in parallel threads
(Pillow and hashlib release the GIL), a bounded number at a time, and only small findings are kept,
so memory does not grow with the number of images. The user's files are only ever read.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, DataError
from ..settings import AuditSettings
from ..textfiles import write_atomic, write_json
from .files import is_candidate
from .audit_report import build_report, summary, write_html
from .inspect import Inspected, inspect_file
from .sources import Item, Source, cache_dir, resolve_source
from .split import apply_split_file, assign_splits

log = logging.getLogger(__name__)

SCHEMA = 1


@dataclass
class AuditResult:
    folder: Path | None
    report: dict
    files: list[Inspected] = field(default_factory=list)

    @property
    def test_in_train(self) -> list[dict]:
        return [g for g in self.report["duplicates"]["groups"] if g["test_in_train"]]


def audit(spec: str, *, split_file: str | Path | None = None, splits: dict[str, str] | None = None,
          output: str | Path | None = None, write_manifest: str | Path | None = None,
          settings: AuditSettings | None = None, progress: bool | None = None) -> AuditResult:
    """Audit a data source and write audit.json and audit.html.

    Args:
        spec: what ``fit --data`` takes.
        split_file: a split.csv to judge leakage by; default: the split ``fit`` would compute.
        splits: relative path -> split, when the caller has them (``fit --audit full``).
        output: report folder (default ``saved_models/audit-<data>-<time>``).
        write_manifest: write the usable files (``path,label``; one copy of each duplicate, contradictory
            ones dropped) to this new CSV, which ``fit --data`` takes.

    Example:
        >>> result = audit("path/to/images", write_manifest="clean.csv")
        >>> result.report["duplicates"]["across_splits"]["count"]
        0
    """
    settings = settings or AuditSettings()
    settings.check()
    manifest = Path(write_manifest).expanduser() if write_manifest else None
    if manifest and manifest.exists():
        raise ConfigError(f"{manifest} already exists: audit never overwrites a file. Pass a new path to "
                          "--write-manifest, or delete that one first.")
    started = time.time()
    source = resolve_source(spec, cache_dir())
    items, split_from = _with_splits(source, split_file, splits, settings)
    files = _inspect_all(source.root, items, settings, progress)
    report = build_report(source, files, stray_files(source), settings, split_from, started)
    folder = Path(output).expanduser() if output else Path("saved_models") / f"audit-{_slug(source)}-" \
        f"{time.strftime('%Y%m%d-%H%M%S')}"
    folder.mkdir(parents=True, exist_ok=True)

    write_json(folder / "audit.json", report)
    write_html(folder / "audit.html", report, source.root)
    if manifest:
        report["manifest"] = write_clean_manifest(manifest, source.root, files, report)
        write_json(folder / "audit.json", report)
    log.debug("%s", summary(report, folder))
    return AuditResult(folder, report, files)


def _with_splits(source: Source, split_file, splits, settings: AuditSettings) -> tuple[list[Item], str]:
    items = source.items
    if splits is not None:
        return [Item(i.path, i.label, splits.get(i.path, i.split or "train")) for i in items], "given by the caller"
    if split_file:
        used, unlisted = apply_split_file(items, split_file)
        listed = {i.path for i in used}
        rest = assign_splits([i for i in items if i.path not in listed], settings.val_fraction,
                             settings.test_fraction, settings.seed)
        return used + rest, f"{split_file} ({unlisted} file(s) not listed there split as fit would)"
    return assign_splits(items, settings.val_fraction, settings.test_fraction, settings.seed), \
        f"computed as fit would (seed {settings.seed}, val {settings.val_fraction}, test {settings.test_fraction})"


def _inspect_all(root: Path, items: list[Item], settings: AuditSettings, progress: bool | None) -> list[Inspected]:
    """Inspect every file in parallel, at most a few per thread in flight, in the items' order."""
    workers = settings.workers or min(8, 2 * (os.cpu_count() or 1))
    bar = _bar(len(items), progress)
    out: list[Inspected] = []
    window: deque = deque()
    with ThreadPoolExecutor(workers, thread_name_prefix="kclassify-audit") as pool:
        for item in items:
            window.append(pool.submit(inspect_file, root, item.path, item.label, item.split or "train",
                                      settings.max_pixels))
            if len(window) >= 4 * workers:
                out.append(window.popleft().result())
                bar.update(1)
        while window:
            out.append(window.popleft().result())
            bar.update(1)
    bar.close()
    return out


def _bar(total: int, progress: bool | None):
    from tqdm import tqdm

    if progress is None:
        progress = sys.stderr.isatty()
    return tqdm(total=total, unit="img", desc="auditing", disable=not progress, file=sys.stderr,
                mininterval=0.5)


def stray_files(source: Source) -> dict[str, list[str]]:
    """Hidden and non-image files inside the class folders (skipped by fit, worth knowing about)."""
    out = {"hidden": [], "not_image": []}
    if source.kind not in ("folder", "split_folder", "builtin", "tfds"):
        return out
    for dirpath, dirnames, filenames in os.walk(source.root):
        rel_dir = Path(dirpath).relative_to(source.root)
        for d in dirnames:
            if d.startswith("."):
                out["hidden"].append((rel_dir / d).as_posix() + "/")
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        if rel_dir == Path("."):
            continue  # files beside the class folders are not in any class
        for name in filenames:
            if name.startswith("."):
                out["hidden"].append((rel_dir / name).as_posix())
            elif not is_candidate(name):
                out["not_image"].append((rel_dir / name).as_posix())
    return {k: sorted(v) for k, v in out.items()}


def write_clean_manifest(path: Path, root: Path, files: list[Inspected], report: dict) -> dict:
    """The usable files as ``path,label``: readable, one copy per duplicate group, contradictory groups dropped."""
    dropped: dict[str, str] = {}
    for group in report["duplicates"]["groups"]:
        members = [m["path"] for m in group["members"]]
        if group["contradictory"]:
            dropped.update({p: "contradictory labels" for p in members})
        else:
            dropped.update({p: f"copy of {members[0]}" for p in members[1:]})
    kept = [f for f in files if f.readable and f.path not in dropped]
    path.parent.mkdir(parents=True, exist_ok=True)
    text = io.StringIO(newline="")
    w = csv.writer(text)
    w.writerow(("path", "label"))
    for f in kept:
        w.writerow((Path(os.path.relpath(root / f.path, path.parent.resolve())).as_posix(), f.label))
    write_atomic(path, text.getvalue())
    return {"path": str(path), "kept": len(kept), "unreadable": sum(not f.readable for f in files),
            "duplicates_dropped": sum(1 for r in dropped.values() if r != "contradictory labels"),
            "contradictory_dropped": sum(1 for r in dropped.values() if r == "contradictory labels")}


def _slug(source: Source) -> str:
    stem = Path(source.spec.split(":", 1)[-1].rstrip("/")).stem or "data"
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in stem)


def raise_on_leak(result: AuditResult) -> None:
    """``fit --audit full``: stop when test images are copies of training images."""
    leaks = result.test_in_train
    if leaks:
        first = leaks[0]["members"]
        raise DataError(
            f"{len(leaks)} test image(s) are copies of training images (first: "
            f"{', '.join(m['path'] + ' in ' + m['split'] for m in first[:2])}); test accuracy would be inflated. "
            f"See {result.folder / 'audit.html'}. Train on the audit's clean manifest instead "
            "(kclassify audit DATA --write-manifest clean.csv, then fit --data clean.csv)."
        )
