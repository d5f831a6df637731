"""Batch augmentation from Keras preprocessing layers: one strength knob, and image mixing.

Applied inside tf.data to training batches only, so the saved model never carries
it and validation/test images are left as they are.
"""

from __future__ import annotations


def _basic(s: float, seed: int | None) -> list:
    import keras

    return [
        keras.layers.RandomRotation(min(0.05 * s, 0.5), fill_mode="reflect", seed=seed),
        keras.layers.RandomZoom(min(0.1 * s, 0.9), fill_mode="reflect", seed=seed),
        keras.layers.RandomTranslation(min(0.1 * s, 0.9), min(0.1 * s, 0.9), fill_mode="reflect", seed=seed),
        keras.layers.RandomContrast(min(0.2 * s, 0.95), seed=seed),
    ]


def _randaugment(s: float, seed: int | None) -> list:
    import keras

    # Two ops a batch drawn from RandAugment's list (colour, contrast, equalize, shear, translate, ...);
    # strength 1 is Keras' default magnitude 0.5.
    return [keras.layers.RandAugment(value_range=(0, 255), num_ops=2, factor=min(0.5 * s, 1.0), seed=seed)]


def _augmix(s: float, seed: int | None) -> list:
    import keras

    # Three chains of 1-3 ops mixed with the image (Hendrycks et al., 2020); strength 1 is Keras' default 0.3.
    return [keras.layers.AugMix(value_range=(0, 255), factor=min(0.3 * s, 1.0), seed=seed)]


# --augment-policy -> (strength, seed) -> the Keras layers after the flip; keys are config.AUGMENT_POLICIES.
AUGMENT_POLICIES = {"basic": _basic, "randaugment": _randaugment, "augmix": _augmix}


def build_augmentation(strength: float, flip: str = "horizontal", seed: int | None = None, policy: str = "basic"):
    """A ``keras.Sequential``: the random flip, then ``policy``'s layers, on float 0-255 batches.

    Args:
        strength: 0 disables augmentation (returns None); 1 is a moderate default (basic: rotation
            +-18 degrees, zoom and shift +-10 %, contrast +-20 %; randaugment: two ops at magnitude
            0.5; augmix: Keras' defaults). Each policy scales its own magnitudes with it.
        flip: 'horizontal', 'vertical', 'both' or 'none'.
        policy: ``basic`` (geometry and contrast), ``randaugment`` or ``augmix`` (Keras' layers).
    """
    import keras

    if strength <= 0:
        return None
    layers = []
    if flip != "none":
        mode = "horizontal_and_vertical" if flip == "both" else flip
        layers.append(keras.layers.RandomFlip(mode, seed=seed))
    layers += AUGMENT_POLICIES[policy](float(strength), seed)
    return keras.Sequential(layers, name="augmentation")


def _mixup(alpha: float, seed: int | None):
    import keras

    return keras.layers.MixUp(alpha=alpha, seed=seed)


def _cutmix(alpha: float, seed: int | None):
    import keras

    # A (low, high) factor: Keras draws alpha itself from U(low, high), so (0, alpha) for a single number.
    return keras.layers.CutMix(factor=(alpha, alpha), seed=seed)


# --mix -> (alpha, seed) -> the Keras layer that mixes a batch of {"images", "labels"} (one-hot) with
# itself shuffled, or None. MixUp draws each pair's weight from Beta(alpha, alpha), CutMix the pasted
# patch's share of the area (Keras' CutMix takes alpha up to 1), so one --mix-alpha means the same for
# both. Keys are config.MIXES.
MIXES = {"none": lambda alpha, seed: None, "mixup": _mixup, "cutmix": _cutmix}


def build_mixing(mode: str, alpha: float, seed: int | None = None):
    """A callable ``(images, one-hot labels) -> mixed (images, labels)``, or None for ``mode='none'``."""
    layer = MIXES[mode](float(alpha), seed)
    if layer is None:
        return None

    def mix(images, labels):
        out = layer({"images": images, "labels": labels}, training=True)
        return out["images"], out["labels"]

    return mix
