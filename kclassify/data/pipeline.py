"""The tf.data input pipeline: parallel decode and resize, cache, shuffle, batch, augment, prefetch.

Decoded images are cached as uint8 at the model's input size (4x smaller than
float32), in memory when they fit and in a cache file otherwise, so that after the
first epoch the pipeline serves tensors as fast as data already held in memory.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import tensorflow as tf

log = logging.getLogger(__name__)

AUTOTUNE = tf.data.AUTOTUNE


def decode_image(path: tf.Tensor, image_size: int, resize: str = "kclassify") -> tf.Tensor:
    """Read a file and return a ``(size, size, 3)`` uint8 RGB image (see :func:`decode_bytes`).

    Args:
        resize: a key of :data:`kclassify.data.phone.RESIZES`: ``kclassify`` (antialiased) or
            ``mediapipe`` (as MediaPipe's ImageClassifier resizes on a phone, emulated exactly).
    """
    data = tf.io.read_file(path)
    if resize == "kclassify":
        return decode_bytes(data, image_size)
    return phone_resize(decode_full(data), image_size, resize)


def phone_resize(image: tf.Tensor, image_size: int, resize: str = "mediapipe") -> tf.Tensor:
    """One ``(H, W, 3)`` uint8 image resized to ``image_size`` square as a phone does (see ``RESIZES``)."""
    from .phone import PHONE_RESIZES, check_resize

    check_resize(resize)
    out = tf.numpy_function(lambda img: PHONE_RESIZES[resize](img, image_size), [image], tf.uint8, stateful=False)
    out.set_shape([image_size, image_size, 3])
    return out


def decode_bytes(data: tf.Tensor, image_size: int) -> tf.Tensor:
    """Encoded image bytes to a ``(size, size, 3)`` uint8 RGB image.

    JPEG, PNG, BMP, GIF (first frame) and WebP decode natively; grayscale, RGBA,
    palette and 16-bit inputs all come out as 8-bit RGB. This is the one decode of
    kclassify: training, evaluation, prediction and the exported SavedModel's bytes
    signature all call it, so a served image gets exactly the pixels a trained one did
    (resizing with Pillow instead moved a small CNN's test accuracy; measured: docs/benchmarks.md,
    "One decode for every path").
    """
    return resize_image(decode_full(data), image_size)


def decode_full(data: tf.Tensor) -> tf.Tensor:
    """Encoded image bytes to ``(H, W, 3)`` uint8 RGB at the size they were stored (see :func:`decode_bytes`).

    JPEGs decode with libjpeg's accurate integer DCT, bit for bit what Pillow and libjpeg-turbo's
    default give (TensorFlow's own default, the fast DCT, differed visibly on intel_scenes' photos;
    measured: docs/benchmarks.md, "One decode for every path"); a phone's decoder computes the
    accurate one too, so the pixels a phone resizes are these.
    """
    img = tf.cond(
        tf.io.is_jpeg(data),
        lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(data, channels=3, expand_animations=False),
    )
    img.set_shape([None, None, 3])
    return img


def resize_image(images: tf.Tensor, image_size: int) -> tf.Tensor:
    """Resize uint8 RGB images (one, or a batch) to ``image_size`` square, as training did.

    Bilinear with antialiasing, rounded back to uint8; an image already at that size
    comes back unchanged.
    """
    img = tf.image.resize(images, [image_size, image_size], method="bilinear", antialias=True)
    return tf.cast(tf.round(tf.clip_by_value(img, 0.0, 255.0)), tf.uint8)


def available_memory_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def cache_target(mode: str, n_images: int, image_size: int, cache_file: Path) -> str | None:
    """Where ``Dataset.cache`` should keep decoded images: '' (memory), a file, or None."""
    if mode == "none":
        return None
    need = n_images * image_size * image_size * 3
    if mode == "auto":
        mode = "memory" if need < 0.4 * available_memory_bytes() else "disk"
        if mode == "disk":
            log.info("decoded images need %.1f GiB; caching them in %s", need / 2**30, cache_file)
    if mode == "memory":
        return ""
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    # A killed run leaves a lockfile that makes TensorFlow refuse the cache; it is ours to clear.
    for stale in cache_file.parent.glob(cache_file.name + "*.lockfile"):
        stale.unlink()
    return str(cache_file)


def decoded(paths: list[str], labels: list[int], image_size: int, cache: str | None = "",
            resize: str = "kclassify") -> tf.data.Dataset:
    """``(uint8 image, int label)`` pairs, decoded in parallel and cached after the first pass.

    Every dataset derived from the returned one shares its cache, so e.g. adapting a
    Normalization layer on it fills the cache the first training epoch then reads.

    Args:
        cache: '' caches in memory, a path caches in that file, None disables caching.
        resize: how images reach ``image_size`` (a key of :data:`kclassify.data.phone.RESIZES`).
    """
    ds = tf.data.Dataset.from_tensor_slices(
        (tf.constant(paths, tf.string), tf.constant(labels, tf.int32))
    )
    ds = ds.map(lambda p, y: (decode_image(p, image_size, resize), y), num_parallel_calls=AUTOTUNE)
    return ds.cache(cache) if cache is not None else ds


def mixed_resizes(plain: tf.data.Dataset, phone: tf.data.Dataset, share: float, seed: int = 0) -> tf.data.Dataset:
    """Each ``(image, label)`` of ``plain`` replaced, with probability ``share`` and afresh every epoch,
    by the same image of ``phone`` (the same files in the same order, resized as a phone does)."""
    if share <= 0:
        return plain
    share = float(share)

    def pick(a, b, seeds):
        take_phone = tf.random.stateless_uniform([], seed=seeds) < share
        return tf.where(take_phone, b[0], a[0]), a[1]

    # a stateless draw per (epoch, image): the random dataset restarts each epoch with a new seed
    draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    return tf.data.Dataset.zip(plain, phone, draws).map(pick, num_parallel_calls=AUTOTUNE)


def batches(
    ds: tf.data.Dataset,
    num_classes: int,
    batch_size: int,
    *,
    training: bool,
    seed: int = 0,
    augment=None,
    mix=None,
    targets=None,
    replicas: int = 1,
    side=None,
) -> tf.data.Dataset:
    """Batches of ``(float32 images in 0..255, one-hot labels)`` from :func:`decoded`.

    Args:
        training: shuffle (seeded, reshuffled each epoch) and augment.
        augment: a Keras layer applied to training batches (None: no augmentation).
        mix: ``(images, labels) -> (images, labels)`` applied to augmented training batches
            (see :func:`kclassify.data.augment.build_mixing`; None: no mixing).
        targets: ``(images, labels) -> targets`` or ``(targets, per-image weights)``, applied last to
            training batches, on the images the model will see (e.g. labels and a teacher's
            probabilities; None: the labels).
        replicas: devices a batch is split over. With more than one, a last batch
            smaller than the number of replicas would leave one empty, which
            MirroredStrategy cannot run: training drops that remainder (a different
            one each epoch, as the data are reshuffled), evaluation pads it with
            zero-weight images so that every real image is counted.
        side: a scalar integer ``tf.Variable``: augmented training batches are resized to ``side x side``
            (antialiased bilinear), as it holds when each batch is made (progressive resizing; None: not).
    """
    n = int(ds.cardinality())
    if training:
        ds = ds.shuffle(n if n > 0 else 10_000, seed=seed, reshuffle_each_iteration=True)
    elif replicas > 1 and n > 0 and n % batch_size:
        ds = ds.map(lambda x, y: (x, y, tf.constant(1.0)))
        pad = tf.data.Dataset.from_tensors(
            (tf.zeros(ds.element_spec[0].shape, ds.element_spec[0].dtype), tf.constant(0, tf.int32),
             tf.constant(0.0))
        ).repeat(batch_size - n % batch_size)
        ds = ds.concatenate(pad).batch(batch_size)
        return ds.map(
            lambda x, y, w: (tf.cast(x, tf.float32), tf.one_hot(y, num_classes), w),
            num_parallel_calls=AUTOTUNE,
        ).prefetch(AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=training and replicas > 1)
    ds = ds.map(
        lambda x, y: (tf.cast(x, tf.float32), tf.one_hot(y, num_classes)),
        num_parallel_calls=AUTOTUNE,
    )
    if training and augment is not None:
        ds = ds.map(lambda x, y: (augment(x, training=True), y), num_parallel_calls=AUTOTUNE)
    if training and side is not None:
        ds = ds.map(lambda x, y: (tf.image.resize(x, tf.stack([side, side]), antialias=True), y),
                    num_parallel_calls=AUTOTUNE)
    if training and mix is not None:
        ds = ds.map(mix, num_parallel_calls=AUTOTUNE)
    if training and targets is not None:
        def retarget(x, y):
            out = targets(x, y)  # targets, or (targets, per-image weights)
            return (x, *out) if isinstance(out, tuple) else (x, out)

        ds = ds.map(retarget, num_parallel_calls=AUTOTUNE)
    ds = ds.prefetch(AUTOTUNE)
    return ds.with_options(steady_options()) if training else ds


def steady_options() -> tf.data.Options:
    """Training pipelines run without tf.data's autotuning: each parallel map then makes one call per core.

    With autotuning, the default training pipeline (the phone-resize mix, then augmentation) ran whole
    epochs at half speed, one core idle, and which epochs did changed from run to run (a third of them in
    some 10-minute fits on 2 cores, which then trained about a fifth fewer epochs); the default, hill-climb
    and max-parallelism algorithms all did it, and turning autotuning off stopped it (docs/benchmarks.md,
    "Half-speed epochs").
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return options


def make_dataset(paths, labels, num_classes, image_size, batch_size, *, training, seed=0,
                 augment=None, cache: str | None = "") -> tf.data.Dataset:
    """:func:`decoded` then :func:`batches`: the whole pipeline for one split."""
    return batches(
        decoded(paths, labels, image_size, cache), num_classes, batch_size,
        training=training, seed=seed, augment=augment,
    )


def decode_files(paths: list[str], image_size: int, batch_size: int = 64, resize: str = "kclassify"):
    """Checked image files (see :func:`kclassify.data.files.check_images`) as one uint8 NumPy array.

    Args:
        resize: a key of :data:`kclassify.data.phone.RESIZES`: ``kclassify`` (training's antialiased
            resize) or ``mediapipe`` (what MediaPipe's ImageClassifier feeds the model on a phone).
    """
    import numpy as np

    from .phone import check_resize

    check_resize(resize)
    ds = tf.data.Dataset.from_tensor_slices(tf.constant(paths, tf.string))
    ds = ds.map(lambda p: decode_image(p, image_size, resize), num_parallel_calls=AUTOTUNE).batch(batch_size)
    parts = [b.numpy() for b in ds]
    return np.concatenate(parts) if parts else np.zeros((0, image_size, image_size, 3), np.uint8)
