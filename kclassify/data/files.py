"""Finding image files and checking that each one decodes, before any TensorFlow work.

A file that fails to decode must never crash an epoch, so every candidate is fully
decoded once with Pillow (in threads; Pillow releases the GIL while decoding).
Files TensorFlow's own decoders are known to read correctly go to the tf.data
pipeline as they are; the rest (palette BMP, TIFF, 1-bit, ...) are converted once
to PNG in kclassify's cache, never next to the user's file.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
)

# (Pillow format, Pillow mode) pairs that tf.io.decode_image turns into the same
# RGB pixels as Pillow's convert("RGB") (checked in tests/test_files.py). A palette
# BMP, for one, comes out of TensorFlow as palette indices, so it is converted.
TF_NATIVE = {
    "JPEG": {"L", "RGB", "CMYK"},
    "PNG": {"L", "LA", "P", "RGB", "RGBA", "I;16", "I;16B", "I;16L"},
    "GIF": {"P", "L"},
    "BMP": {"L", "RGB", "RGBA"},
    "WEBP": {"RGB", "RGBA"},
    "MPO": {"L", "RGB"},  # multi-picture JPEG from cameras; TF reads the first picture
}
SUPPORTED_FORMATS = frozenset(TF_NATIVE) | {"TIFF"}
# Beyond MAX_PIXELS (kclassify.settings) an image is refused without decoding (audit, serve): a
# 40-megapixel photo is fine; a 20000x20000 PNG of a few KB is a decompression bomb (1.2 GB of RGB
# once decoded).


@dataclass(frozen=True)
class Checked:
    """The outcome of checking one file."""

    path: Path
    ok: bool
    reason: str = ""
    decode_path: Path | None = None  # what tf.data reads: the file itself or a converted copy
    digest: str = ""  # SHA-256 of the file's bytes (read once, for the decode check and the data fingerprint)


def is_candidate(name: str) -> bool:
    """True for non-hidden names with an image extension (case-insensitive)."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def list_images(folder: Path) -> tuple[list[Path], dict[str, int]]:
    """Image files under ``folder`` (recursive, sorted) and counts of what was skipped."""
    found, skipped = [], {"hidden": 0, "not_image": 0}
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        hidden_dirs = [d for d in dirnames if d.startswith(".")]
        skipped["hidden"] += len(hidden_dirs)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith("."):
                skipped["hidden"] += 1
            elif is_candidate(name):
                found.append(Path(dirpath) / name)
            else:
                skipped["not_image"] += 1
    return sorted(found), skipped


def _converted_path(path: Path, cache_dir: Path) -> Path:
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()
    return cache_dir / "converted" / (hashlib.sha1(key).hexdigest() + ".png")


def check_image(path: Path, cache_dir: Path) -> Checked:
    """Fully decode ``path``; decide whether TF reads it natively or a PNG copy is needed."""
    from PIL import Image, UnidentifiedImageError

    try:
        if not path.is_file():
            return Checked(path, False, "missing file")
        data = path.read_bytes()
        if not data:
            return Checked(path, False, "empty file (0 bytes)")
        digest = hashlib.sha256(data).hexdigest()
        with Image.open(io.BytesIO(data)) as im:
            fmt, mode = im.format, im.mode
            if fmt not in SUPPORTED_FORMATS:
                return Checked(path, False, f"unsupported format {fmt}")
            im.load()  # raises on truncated or corrupt data
            if mode in TF_NATIVE.get(fmt, ()):
                return Checked(path, True, decode_path=path, digest=digest)
            target = _converted_path(path, cache_dir)
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_suffix(f".{os.getpid()}.tmp")
                rgb = im.convert("RGBA" if "A" in im.getbands() else "RGB")
                rgb.save(tmp, format="PNG")
                os.replace(tmp, target)
            return Checked(path, True, decode_path=target, digest=digest)
    except UnidentifiedImageError:
        return Checked(path, False, "not an image Pillow can identify")
    except (OSError, SyntaxError, ValueError) as e:
        # Pillow raises OSError("image file is truncated"), SyntaxError for broken PNG chunks.
        return Checked(path, False, f"cannot decode: {e}")
    except Image.DecompressionBombError as e:
        return Checked(path, False, f"refused: {e}")


def check_images(paths: list[Path], cache_dir: Path, workers: int | None = None) -> list[Checked]:
    """Check many files in parallel threads, keeping order."""
    if not paths:
        return []
    workers = workers or min(8, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda p: check_image(p, cache_dir), paths, chunksize=64))
