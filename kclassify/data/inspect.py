"""One image file, looked at the way ``audit`` needs: readable or why not, format quirks, size, hashes.

Decoding is training's own check (Pillow decodes the whole file, :func:`kclassify.data.files.check_image`
rules): a file this calls unreadable is one ``fit`` excludes. The header is read first, so an image
with a huge pixel count is refused without decoding it (a decompression bomb). Only the findings are
kept; the pixels are dropped as soon as the perceptual hash is computed, so memory does not grow
with the number of files.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..settings import MAX_PIXELS
from .files import SUPPORTED_FORMATS

# What inspect_file notes about a readable file (the keys of Inspected.notes), in the audit's order.
QUIRKS = ("cmyk", "sixteen_bit", "palette", "transparency", "animated", "exif_rotated", "extension_mismatch")

# extension -> the formats a file with it may hold
EXTENSION_FORMATS = {
    ".jpg": {"JPEG", "MPO"}, ".jpeg": {"JPEG", "MPO"}, ".jpe": {"JPEG", "MPO"}, ".png": {"PNG"}, ".gif": {"GIF"},
    ".bmp": {"BMP"}, ".webp": {"WEBP"}, ".tif": {"TIFF"}, ".tiff": {"TIFF"},
}
SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}


@dataclass
class Inspected:
    """What audit learned about one file (no pixels)."""

    path: str  # relative to the source root
    label: str
    split: str
    bytes: int = 0
    sha256: str = ""
    error: str | None = None  # why it is unreadable (None: training reads it)
    format: str = ""
    mode: str = ""
    width: int = 0
    height: int = 0
    phash: int | None = None  # 64-bit perceptual hash of the pixels training sees
    notes: dict[str, str] = field(default_factory=dict)  # quirk name -> detail

    @property
    def readable(self) -> bool:
        return self.error is None


def inspect_file(root: Path, path: str, label: str, split: str, max_pixels: int = MAX_PIXELS) -> Inspected:
    """Read, hash and check one file; never raises for a bad file (it is a finding)."""
    from PIL import Image, UnidentifiedImageError

    out = Inspected(path, label, split)
    try:
        data = (root / path).read_bytes()
    except OSError as e:
        out.error = f"cannot read: {e.strerror or e}"
        return out
    out.bytes, out.sha256 = len(data), hashlib.sha256(data).hexdigest()
    if not data:
        out.error = "empty file (0 bytes)"
        return out
    try:
        with Image.open(io.BytesIO(data)) as im:
            _header(out, im, data, path)
            if out.width * out.height > max_pixels:
                out.notes["huge"] = f"{out.width}x{out.height} = {out.width * out.height / 1e6:.0f} megapixels"
                out.error = "refused without decoding: a decompression bomb (more than " \
                            f"{max_pixels / 1e6:.0f} megapixels)"
                return out
            if out.format not in SUPPORTED_FORMATS:
                out.error = f"unsupported format {out.format}"
                return out
            im.load()  # the whole decode: raises on truncated or corrupt data
            _pixels(out, im)
    except UnidentifiedImageError:
        out.error = "not an image (Pillow cannot identify it)"
    except Image.DecompressionBombError as e:  # so large that Pillow refuses even to open it
        out.error = f"refused without decoding: {e}"
        size = _png_size(data)
        out.notes["huge"] = (f"{size[0]}x{size[1]} = {size[0] * size[1] / 1e6:.0f} megapixels" if size
                             else str(e).split(",")[0])
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        out.error = f"cannot decode: {e}"  # "image file is truncated", broken PNG chunks...
    return out


def _header(out: Inspected, im, data: bytes, path: str) -> None:
    """Format, mode, size and the quirks the header alone tells."""
    out.format, out.mode, (out.width, out.height) = im.format or "", im.mode, im.size
    ext = os.path.splitext(path)[1].lower()
    if ext in EXTENSION_FORMATS and out.format not in EXTENSION_FORMATS[ext]:
        out.notes["extension_mismatch"] = f"named {ext} but holds {out.format}"
    if out.mode == "CMYK":
        out.notes["cmyk"] = "CMYK colour (converted to RGB for training)"
    if out.mode in SIXTEEN_BIT_MODES or _png_bit_depth(data) == 16:
        out.notes["sixteen_bit"] = f"16 bits per channel ({out.mode}; reduced to 8 for training)"
    if out.mode in ("P", "PA") and out.format != "GIF":  # every GIF is a palette image: no news
        out.notes["palette"] = f"palette image ({out.format} {out.mode}; expanded to RGB for training)"
    if getattr(im, "is_animated", False) and getattr(im, "n_frames", 1) > 1:
        out.notes["animated"] = f"animated, {im.n_frames} frames (training reads the first)"
    orientation = im.getexif().get(0x0112, 1)
    if orientation not in (1, 0, None):
        out.notes["exif_rotated"] = (f"EXIF orientation {orientation}: a viewer shows it rotated or flipped, "
                                     "training sees the stored pixels")


def _pixels(out: Inspected, im) -> None:
    """What needs the decoded pixels: real transparency, and the perceptual hash."""
    import imagehash

    if "A" in im.getbands() or (im.mode == "P" and "transparency" in im.info):
        alpha = im.convert("RGBA").getchannel("A")
        low = alpha.getextrema()[0]
        if low < 255:
            see_through = sum(alpha.histogram()[:255]) / (im.width * im.height)
            out.notes["transparency"] = f"{see_through:.0%} of pixels (partly) transparent (dropped for training)"
    # The hash of the RGB pixels training gets (no EXIF rotation: TensorFlow's decode ignores it too).
    out.phash = int(str(imagehash.phash(im.convert("RGB"))), 16)


def _png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR, read without Pillow."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 24 and data[12:16] == b"IHDR":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return None


def _png_bit_depth(data: bytes) -> int | None:
    """The IHDR bit depth of a PNG (Pillow reads 48-bit RGB PNGs as 8-bit RGB and hides it)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 24 and data[12:16] == b"IHDR":
        return data[24]
    return None
