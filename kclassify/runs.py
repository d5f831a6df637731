"""The run folder: the contract between commands (no TensorFlow here).

Every ``fit`` writes one self-describing folder; ``evaluate``, ``export``,
``predict`` and ``serve`` take it as their argument::

    saved_models/<run>/
      config.yaml    fully resolved settings (enough to rerun)
      run.json       versions, seed, data source and fingerprint, timings, excluded files
      split.csv      path,label,split for every image used
      excluded.csv   files that failed to decode, with the reason
      labels.txt     class names, one a line, index order
      model.keras    the trained model (raw pixels in, probabilities out)
      history.csv    per-epoch metrics
      metrics.json   test-split metrics
      logs/          TensorBoard event files
      checkpoints/   best.keras, last.keras and the backup used to resume
"""

from __future__ import annotations

import csv
import json
import os
import platform
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import RunFolderError
from .textfiles import read_labels

DEFAULT_ROOT = Path("saved_models")


@dataclass(frozen=True)
class RunFolder:
    root: Path

    config = property(lambda self: self.root / "config.yaml")
    run_json = property(lambda self: self.root / "run.json")
    split = property(lambda self: self.root / "split.csv")
    excluded = property(lambda self: self.root / "excluded.csv")
    labels = property(lambda self: self.root / "labels.txt")
    model = property(lambda self: self.root / "model.keras")
    history = property(lambda self: self.root / "history.csv")
    metrics = property(lambda self: self.root / "metrics.json")
    logs = property(lambda self: self.root / "logs")
    checkpoints = property(lambda self: self.root / "checkpoints")
    backup = property(lambda self: self.root / "checkpoints" / "backup")
    cache = property(lambda self: self.root / "cache")

    def is_complete(self) -> bool:
        return self.metrics.is_file() and self.model.is_file()

    def is_started(self) -> bool:
        return self.config.is_file()

    def read_labels(self) -> list[str]:
        self.require(self.labels)
        return read_labels(self.labels)

    def read_json(self, path: Path) -> dict[str, Any]:
        self.require(path)
        return json.loads(path.read_text())

    def require(self, path: Path) -> None:
        if not path.exists():
            raise RunFolderError(
                f"{self.root} has no {path.name}: expected a run folder written by `kclassify fit`. "
                "Pass a finished run folder (see saved_models/)."
            )

    def completed_epochs(self) -> int:
        """Epochs the resume backups hold (one per training phase; 0 when there is none)."""
        done = [json.loads(m.read_text() or "{}").get("epoch", 0)
                for m in self.backup.glob("*/training_metadata.json")]
        return int(max(done, default=0))


def default_run_name(data_spec: str) -> str:
    stem = Path(data_spec.split(":", 1)[-1].rstrip("/")).stem or "data"
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-") or "data"
    return f"{slug}-{time.strftime('%Y%m%d-%H%M%S')}"


def write_excluded(path: Path, excluded: list[tuple[str, str]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(("path", "reason"))
        w.writerows(excluded)


def versions() -> dict[str, str]:
    """Versions of the software that shaped a run (imports TF only if already imported)."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("kclassify", "tensorflow", "keras", "numpy", "keras-tuner"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def host() -> dict[str, Any]:
    return {"node": platform.node(), "platform": platform.platform(), "cpus": os.cpu_count()}


def find_run(path: Path) -> RunFolder | None:
    """The run folder ``path`` is, or lies in (``RUN/export/x.tflite``, ``RUN/export/savedmodel/1``)."""
    for folder in [path, *list(path.parents)[:4]]:
        run = RunFolder(folder)
        if folder.is_dir() and run.config.is_file() and run.split.is_file() and run.labels.is_file():
            return run
    return None
