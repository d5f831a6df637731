"""Uploaded bytes to the model's input, safely: the header is read before any pixel is.

Pillow reads only the header to learn the format and the dimensions, so a 20000x20000 PNG of a
few kilobytes (a decompression bomb) is refused before a pixel buffer exists. Formats that
TensorFlow decodes as training did go through the data layer's own decode (one compiled
function: the pixels a served image gets are those a trained one got); the others (TIFF,
palette BMP, ...) are decoded by Pillow and resized by the same resize, as training converts them.
"""

from __future__ import annotations

import io

import numpy as np

from ..data.files import SUPPORTED_FORMATS, TF_NATIVE
from ..settings import MAX_PIXELS


class BadImage(Exception):
    """An upload the server refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def header(data: bytes, max_pixels: int = MAX_PIXELS) -> tuple[str, str, int, int]:
    """(format, mode, width, height) from the header alone; :class:`BadImage` when unusable."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise BadImage("empty body: expected the bytes of an image file (JPEG, PNG, GIF, BMP, WebP, TIFF)")
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt, mode, (width, height) = im.format, im.mode, im.size
    except Image.DecompressionBombError as e:
        raise BadImage(f"image refused as a decompression bomb (Pillow: {e})", 413) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise BadImage("not an image: the body is not a JPEG, PNG, GIF, BMP, WebP or TIFF file") from None
    if fmt not in SUPPORTED_FORMATS:
        raise BadImage(f"unsupported image format {fmt}: send JPEG, PNG, GIF, BMP, WebP or TIFF", 415)
    if width * height > max_pixels:
        raise BadImage(f"image of {width}x{height} pixels refused as a decompression bomb: more than "
                       f"{max_pixels / 1e6:.0f} megapixels (downscale a real photo before sending it)", 413)
    if width < 1 or height < 1:
        raise BadImage(f"image of {width}x{height} pixels has nothing to classify")
    return fmt, mode, width, height


class Decoder:
    """bytes -> uint8 ``(size, size, 3)``, thread-safe (called from the server's decode threads)."""

    def __init__(self, image_size: int, max_pixels: int = MAX_PIXELS):
        import tensorflow as tf

        from ..data.pipeline import decode_bytes, resize_image

        self.size = int(image_size)
        self.max_pixels = int(max_pixels)
        # One traced function, not six eager ops: measurably less per request (docs/benchmarks.md,
        # "kclassify serve under load").
        self._tf_decode = tf.function(lambda b: decode_bytes(b, self.size),
                                      input_signature=[tf.TensorSpec([], tf.string)])
        self._tf_resize = tf.function(lambda x: resize_image(x, self.size),
                                      input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
        self._errors = (tf.errors.InvalidArgumentError, tf.errors.UnknownError, tf.errors.OutOfRangeError)

    def __call__(self, data: bytes) -> np.ndarray:
        fmt, mode, _, _ = header(data, self.max_pixels)
        try:
            if mode in TF_NATIVE.get(fmt, ()):
                return self._tf_decode(data).numpy()
            return self._tf_resize(self._pillow(data)).numpy()
        except self._errors:
            raise BadImage(f"the {fmt} image is truncated or corrupt: it could not be decoded") from None

    def warm_up(self) -> np.ndarray:
        """Trace both decode paths once (a JPEG through TensorFlow, a TIFF through Pillow)."""
        from PIL import Image

        image = None
        for fmt in ("JPEG", "TIFF"):
            buf = io.BytesIO()
            Image.new("RGB", (8, 8), (128, 128, 128)).save(buf, fmt)
            image = self(buf.getvalue())
        return image

    def resize(self, image: np.ndarray) -> np.ndarray:
        """uint8 ``(H, W, 3)`` pixels (a TF Serving ``images`` instance) to the model's size."""
        return self._tf_resize(image).numpy()

    @staticmethod
    def _pillow(data: bytes) -> np.ndarray:
        from PIL import Image

        try:
            with Image.open(io.BytesIO(data)) as im:
                return np.asarray(im.convert("RGB"), np.uint8)
        except (OSError, SyntaxError, ValueError):
            raise BadImage("the image is truncated or corrupt: it could not be decoded") from None
