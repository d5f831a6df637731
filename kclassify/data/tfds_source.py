"""``tfds:NAME``: any TFDS image-classification dataset, written once as PNG folders.

Materialising to files keeps one data path for every source: the split manifest
names real files, the checks and the tf.data pipeline are the ones a user's folder
gets. TFDS splits ``train``, ``validation`` and ``test`` become ``train/ val/ test/``.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import DataError

log = logging.getLogger(__name__)

SPLIT_NAMES = {"train": "train", "validation": "val", "valid": "val", "val": "val", "test": "test"}


def _features(info, name: str) -> tuple[str, str]:
    """The image and label feature keys of a TFDS dataset."""
    import tensorflow_datasets as tfds

    if info.supervised_keys and len(info.supervised_keys) == 2:
        image_key, label_key = info.supervised_keys
    else:
        image_key = next((k for k, f in info.features.items() if isinstance(f, tfds.features.Image)), None)
        label_key = next((k for k, f in info.features.items() if isinstance(f, tfds.features.ClassLabel)), None)
    ok = (
        image_key in info.features
        and isinstance(info.features[image_key], tfds.features.Image)
        and label_key in info.features
        and isinstance(info.features[label_key], tfds.features.ClassLabel)
    )
    if not ok:
        raise DataError(
            f"tfds:{name} is not an image-classification dataset: expected an Image feature and "
            f"a ClassLabel feature; received features {list(info.features)}. "
            "Pick a dataset with (image, label) supervised keys, e.g. tfds:tf_flowers."
        )
    return image_key, label_key


def materialize(name: str, cache_dir: Path) -> Path:
    """Download (through TFDS) and write ``name`` as class folders; return the folder."""
    import numpy as np
    import tensorflow_datasets as tfds
    from PIL import Image

    try:
        builder = tfds.builder(name)
    except Exception as e:  # DatasetNotFoundError and friends
        raise DataError(
            f"TFDS has no dataset {name!r} ({type(e).__name__}). See `tfds.list_builders()` "
            "for valid names, or pass a local folder or CSV with --data."
        ) from None
    target = cache_dir / "tfds" / f"{builder.name}-{builder.version}"
    done = target.parent / f"{target.name}.complete"  # outside, so no hidden file in the data
    if done.exists() and target.is_dir():
        return target
    try:
        builder.download_and_prepare()
    except Exception as e:
        raise DataError(
            f"Could not download or prepare TFDS dataset {name!r} ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:160] if str(e) else 'no details'}). Without internet, "
            "pass a local image folder or CSV with --data, or prepare it into TFDS' data_dir first."
        ) from None
    image_key, label_key = _features(builder.info, name)
    names = builder.info.features[label_key].names
    splits = [s for s in builder.info.splits.keys()] or ["train"]
    unknown = [s for s in splits if s not in SPLIT_NAMES]
    if unknown:  # odd split names: keep everything in one pool and split it ourselves
        log.warning("tfds:%s splits %s are not train/validation/test; pooling them", name, unknown)
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{builder.name}-", dir=target.parent))
    try:
        pool = bool(unknown) or splits == ["train"]
        for split in splits:
            sub = tmp if pool else tmp / SPLIT_NAMES[split]
            for i, ex in enumerate(tfds.as_numpy(builder.as_dataset(split=split))):
                img = np.asarray(ex[image_key])
                img = img[..., 0] if img.ndim == 3 and img.shape[-1] == 1 else img
                folder = sub / names[int(ex[label_key])]
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(folder / f"{split}_{i:07d}.png")
        os.replace(tmp, target)
        done.touch()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("wrote tfds:%s to %s", name, target)
    return target
