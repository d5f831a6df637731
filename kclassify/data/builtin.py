"""Datasets that ship inside installed packages, written out once as real image files.

They go through exactly the same folder path as a user's data, so the default job
exercises the code a user's folder does. Each record writes a class-folder tree.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import DataError, did_you_mean

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuiltinDataset:
    name: str
    version: str
    description: str
    write: Callable[[Path], None]  # fills an empty folder with <label>/<file> images
    # Settings that suit this data, applied under the user's config and flags: digits
    # are 8x8 pixels (no point upscaling them to 64; a phone only upscales them, which
    # aliases nothing: no phone resizes in training) and a mirrored 2 is no 2.
    recommended: dict = field(default_factory=dict)


def _write_digits(folder: Path) -> None:
    """scikit-learn's 1,797 8x8 handwritten digits (16 grey levels) as PNG files."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.clip(np.rint(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    for i, (img, label) in enumerate(zip(images, digits.target)):
        out = folder / str(int(label))
        out.mkdir(exist_ok=True)
        Image.fromarray(img, mode="L").save(out / f"digit_{i:04d}.png")


BUILTIN: dict[str, BuiltinDataset] = {
    d.name: d
    for d in [
        BuiltinDataset(
            "digits", "1", "scikit-learn handwritten digits, 10 classes, 1,797 8x8 images",
            _write_digits, recommended={"image_size": 32, "flip": "none", "phone_resize": 0.0},
        ),
    ]
}


def materialize(name: str, cache_dir: Path) -> Path:
    """Write builtin dataset ``name`` under ``cache_dir`` once; return its folder."""
    if name not in BUILTIN:
        raise DataError(
            f"Unknown builtin dataset {name!r}.{did_you_mean(name, BUILTIN)} "
            f"Available: {', '.join('builtin:' + n for n in BUILTIN)}."
        )
    ds = BUILTIN[name]
    target = cache_dir / "builtin" / f"{ds.name}-v{ds.version}"
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{ds.name}-", dir=target.parent))
    try:
        ds.write(tmp)
        try:
            os.replace(tmp, target)  # atomic: a half-written folder is never used
        except OSError:
            if not target.is_dir():  # another process may have won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("wrote builtin:%s to %s", name, target)
    return target


def recommended_settings(spec: str) -> dict:
    """Settings a builtin dataset suggests (lowest precedence); {} for any other source."""
    if spec.startswith("builtin:") and spec.split(":", 1)[1] in BUILTIN:
        return dict(BUILTIN[spec.split(":", 1)[1]].recommended)
    return {}
