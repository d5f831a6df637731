"""How a phone turns a photo into the model's input, emulated exactly, beside kclassify's own resize.

kclassify resizes with antialiasing (:func:`kclassify.data.pipeline.resize_image`) in training,
evaluation, export checks, predict and serve. MediaPipe Tasks' ``ImageClassifier`` on an Android
phone's CPU does not: its ``ImageToTensorCalculator`` warps the whole photo onto the input with
OpenCV's ``warpPerspective(INTER_LINEAR, BORDER_REPLICATE)``, corners to corners (output pixel ``x``
samples the photo at ``x * W / w``: no half-pixel offset, no antialiasing, no aspect ratio kept), in
OpenCV's fixed-point bilinear (source positions rounded to 1/32 pixel, 15-bit weights, rounded half
up), into uint8. A float model then gets those integers through the metadata's normalization, which
for kclassify's models (mean 0, std 1) leaves them 0-255.

Sources read (google-ai-edge/mediapipe): ``tasks/cc/components/processors/image_preprocessing_graph.cc``
(``keep_aspect_ratio`` unset, border unset: replicate), ``calculators/tensor/
image_to_tensor_converter_opencv.cc`` (``boxPoints`` -> ``getPerspectiveTransform`` ->
``warpPerspective``), OpenCV's ``imgproc/src/imgwarp.cpp`` (``INTER_TAB_SIZE`` 32,
``INTER_REMAP_COEF_BITS`` 15). ``tests/test_phone.py`` checks the emulation against MediaPipe itself.
"""

from __future__ import annotations

import functools

import numpy as np

from ..errors import ConfigError, did_you_mean

# How an image becomes the model's input: the keys are the valid values of a ``resize``/``--preprocess``.
RESIZES = {
    "kclassify": "bilinear with antialiasing, as kclassify trains, evaluates, predicts and serves",
    "mediapipe": "MediaPipe Tasks' ImageClassifier on a phone's CPU: bilinear without antialiasing, corners to corners",
}

TAB_BITS = 5  # OpenCV's INTER_BITS: a source position in 1/32 pixel
COEF_BITS = 15  # INTER_REMAP_COEF_BITS: the four weights sum to 2**15


def _taps(out: int, src: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each of ``out`` output pixels along one axis: the two source pixels (replicated at the
    border) and the weight of the second, in 1/32."""
    # cvRound of x * (src / out) * 32: round half to even, as np.rint
    pos = np.rint(np.arange(out, dtype=np.float64) * (src / out) * (1 << TAB_BITS)).astype(np.int64)
    first = pos >> TAB_BITS
    frac = pos & ((1 << TAB_BITS) - 1)
    return np.clip(first, 0, src - 1), np.clip(first + 1, 0, src - 1), frac


def mediapipe_resize(image: np.ndarray, width: int, height: int | None = None) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 RGB photo as MediaPipe's ImageClassifier feeds a ``height x width`` model.

    Args:
        image: uint8 RGB pixels, any size.
        width: the model's input width; ``height`` defaults to it (a square input).

    Returns:
        ``(height, width, 3)`` uint8, equal to the tensor MediaPipe Tasks builds on the CPU.

    Example:
        >>> mediapipe_resize(np.zeros((240, 320, 3), np.uint8), 64).shape
        (64, 64, 3)
    """
    height = int(height or width)
    width = int(width)
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected (H, W, 3) uint8 RGB pixels, got {image.dtype} {image.shape}")
    x0, x1, ax = _taps(width, image.shape[1])
    y0, y1, ay = _taps(height, image.shape[0])
    scale = 1 << TAB_BITS
    wx = np.stack([scale - ax, ax])[:, None, :, None]  # (2, 1, width, 1)
    wy = np.stack([scale - ay, ay])[:, :, None, None]  # (2, height, 1, 1)
    # the four source pixels of each output pixel, gathered before widening (a camera photo stays uint8)
    taps = [[image[y][:, x].astype(np.int64) for x in (x0, x1)] for y in (y0, y1)]
    total = sum(wy[i] * wx[j] * taps[i][j] for i in range(2) for j in range(2))
    # the weights are products of 1/32 steps: (32 - ax) * (32 - ay) * 32 of 2**15, exactly OpenCV's table
    total = total * (1 << (COEF_BITS - 2 * TAB_BITS))
    return ((total + (1 << (COEF_BITS - 1))) >> COEF_BITS).astype(np.uint8)


# The resizes of RESIZES that a phone does, as functions (uint8 photo, size) -> uint8 (size, size, 3).
PHONE_RESIZES = {"mediapipe": mediapipe_resize}


def check_resize(resize: str) -> None:
    """Refuse a resize that is not a key of :data:`RESIZES`."""
    if resize not in RESIZES:
        raise ConfigError(f"Resize {resize!r} is not one kclassify knows; expected one of "
                          f"{', '.join(RESIZES)}.{did_you_mean(resize, RESIZES)}")


SIDE_SAMPLE = 200  # images whose size typical_side reads (headers only)


@functools.lru_cache(maxsize=16)
def typical_side(spec: str) -> float | None:
    """The median of ``sqrt(width * height)`` over up to 200 images of a data source (a spread sample,
    headers only), or None where that is not known cheaply (a TFDS dataset not yet downloaded, a source
    that does not resolve).

    ``--input-scale``'s default reads it: a model's input near the photos' own size leaves a phone's
    resize little to alias.
    """
    from PIL import Image

    from .sources import resolve_source
    from .split import unit_hash

    if spec.startswith("tfds:"):
        return None
    try:
        source = resolve_source(spec)
    except Exception:  # noqa: BLE001 - the data's own errors come when the data is prepared
        return None
    sample = sorted(source.items, key=lambda item: unit_hash(0, item.path))[:SIDE_SAMPLE]
    sides = []
    for item in sample:
        try:
            with Image.open(source.root / item.path) as image:
                sides.append(float(np.sqrt(image.size[0] * image.size[1])))
        except Exception:  # noqa: BLE001 - an unreadable file is excluded later, with its reason
            continue
    return float(np.median(sides)) if sides else None
