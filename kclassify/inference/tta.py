"""Test-time augmentation: a model's probabilities averaged over a few views of each image.

A view is the image as the model takes it (``image_size``), mirrored, or a crop of it scaled back
up. Scene and object photos keep their class under a horizontal mirror and a slight zoom, which is
why training augments with both; averaging the model's answers over them smooths out a view the
model happens to get wrong. It costs one model call per view, so it is never on unless asked
(``evaluate``, ``predict`` and ``serve --tta``), and ``evaluate`` reports it beside the plain score.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError, did_you_mean

CROP = 0.875  # side of a zoomed crop, as a share of the image's (Inception's centre-crop ratio)

# policy -> (what it averages, views per image); the keys are the valid values of --tta.
TTA_POLICIES = {
    "none": ("the image as it is", 1),
    "flip": ("the image and its mirror image", 2),
    "flip-crops": ("the image, its mirror image, and crops of 87.5% of the side (centre and four corners) "
                   "scaled back to the input size", 7),
}


def check_tta(policy: str) -> None:
    if policy not in TTA_POLICIES:
        raise ConfigError(f"--tta must be one of {', '.join(TTA_POLICIES)}; received {policy!r}."
                          + did_you_mean(policy, TTA_POLICIES))


def _zoomed(images: np.ndarray, top: int, left: int, side: int) -> np.ndarray:
    """The ``side`` x ``side`` crop at (top, left) of each image, scaled back to the images' size (bilinear)."""
    from ..data.phone import mediapipe_resize  # bilinear, in NumPy: no TensorFlow needed to serve a .tflite file

    size = images.shape[1]
    return np.stack([mediapipe_resize(image[top:top + side, left:left + side], size) for image in images])


def tta_views(images: np.ndarray, policy: str) -> list[np.ndarray]:
    """The views of a uint8 batch ``(N, S, S, 3)`` that ``policy`` averages, each shaped like ``images``."""
    check_tta(policy)
    views = [images]
    if policy == "none":
        return views
    views.append(images[:, :, ::-1])
    if policy == "flip-crops":
        size = images.shape[1]
        side = max(int(round(CROP * size)), 1)
        edge = size - side
        for top, left in ((edge // 2, edge // 2), (0, 0), (0, edge), (edge, 0), (edge, edge)):
            views.append(_zoomed(images, top, left, side))
    return views
