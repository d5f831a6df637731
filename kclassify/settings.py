"""One settings object for each command beyond ``fit`` and ``tune`` (whose settings are :mod:`kclassify.config`'s table).

The CLI reads its flags' defaults from these classes; the library validates them (``check()``, called by
:func:`kclassify.data.audit.audit`, :func:`kclassify.export.export`, :func:`kclassify.evaluation.compare`,
:func:`kclassify.serving.serve`, the predictor and ``evaluate``), so a wrong number is refused the same
way from the command line and from Python. This module imports nothing heavy: ``kclassify --help``
reads it before TensorFlow (or NumPy) loads.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError

SPLIT_CHOICES = ("test", "val", "train", "all")
PHONES = ("mediapipe", "none")  # export --phone: kclassify.data.phone.PHONE_RESIZES and "none" (tests/test_settings.py)
BACKENDS = ("auto", "tflite", "tf")
OUTPUT_FORMATS = ("table", "json", "csv")
# Pixels beyond which an image is refused undecoded (a decompression bomb): training, audit, serving.
MAX_PIXELS = 40_000_000


def _refuse(problems: list[str]) -> None:
    if problems:
        raise ConfigError("; ".join(problems) + ".")


def check_batch_size(batch_size: int) -> None:
    """Images per model call: at least 1."""
    _refuse([f"--batch-size must be at least 1; received {batch_size}"] if int(batch_size) < 1 else [])


@dataclass(frozen=True)
class AuditSettings:
    """``kclassify audit``'s thresholds (:func:`kclassify.data.audit.audit`)."""

    near_dup_threshold: int = 8  # perceptual-hash bits (of 64) within which two images are near copies
    min_size: int = 32  # pixels, the shorter side under which an image is "tiny"
    max_aspect: float = 4.0  # longer side / shorter side beyond which it is "extreme"
    max_pixels: int = MAX_PIXELS
    seed: int = 42  # the split, when computed, is fit's: same seed and fractions
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    workers: int | None = None

    def check(self) -> None:
        if not 0 <= self.near_dup_threshold <= 64:
            raise ConfigError(f"--near-dup-threshold is a number of bits, 0-64; received {self.near_dup_threshold}.")
        if self.min_size < 0 or self.max_aspect < 1:
            raise ConfigError(f"--min-size must be >= 0 and --max-aspect >= 1; received {self.min_size} and "
                              f"{self.max_aspect}.")


@dataclass(frozen=True)
class ExportSettings:
    """``kclassify export``'s gate and measurements (:func:`kclassify.export.export`)."""

    max_accuracy_drop: float = 1.0  # accuracy points a format may lose against the Keras model
    calibration_images: int = 200  # training images that calibrate tflite-int8
    threads: int = 1  # LiteRT threads when scoring and timing .tflite files
    latency_runs: int = 50  # single-image runs whose median is the latency
    phone: str = "mediapipe"  # also score (and gate) each .tflite file as a phone feeds it; "none" skips

    def check(self) -> None:
        _refuse([f"{name} must be {rule}; received {value!r}" for name, value, ok, rule in (
            ("phone", self.phone, self.phone in PHONES, "one of " + ", ".join(PHONES)),
            ("max_accuracy_drop", self.max_accuracy_drop, self.max_accuracy_drop >= 0, "0 or more"),
            ("calibration_images", self.calibration_images, self.calibration_images >= 1, "at least 1"),
            ("threads", self.threads, self.threads >= 1, "at least 1"),
            ("latency_runs", self.latency_runs, self.latency_runs >= 1, "at least 1"),
        ) if not ok])


@dataclass(frozen=True)
class CompareSettings:
    """``kclassify compare``'s split and bootstrap (:func:`kclassify.evaluation.compare`)."""

    split: str = "test"
    resamples: int = 10_000  # bootstrap resamples of the images
    seed: int = 0  # of the bootstrap draws

    def check(self) -> None:
        problems = []
        if self.split not in SPLIT_CHOICES:
            problems.append(f"--split must be one of {', '.join(SPLIT_CHOICES)}; received {self.split!r}")
        if self.resamples < 100:
            problems.append(f"--resamples must be at least 100 for a 95% interval; received {self.resamples}")
        if self.seed < 0:
            problems.append(f"--seed must be 0 or more; received {self.seed}")
        _refuse(problems)


@dataclass(frozen=True)
class PredictSettings:
    """``kclassify predict``'s batching and output (:func:`kclassify.inference.outputs.write_predictions`)."""

    batch_size: int = 32
    top_k: int = 1  # classes per image
    output_format: str = "table"
    tta: str = "none"  # test-time augmentation (kclassify.inference.tta.TTA_POLICIES; checked by the predictor)

    def check(self) -> None:
        problems = []
        if self.batch_size < 1 or self.top_k < 1:
            problems.append(f"--top-k and --batch-size must be at least 1; received {self.top_k} and "
                            f"{self.batch_size}")
        if self.output_format not in OUTPUT_FORMATS:
            problems.append(f"--format must be one of {', '.join(OUTPUT_FORMATS)}; received {self.output_format!r}")
        _refuse(problems)


@dataclass(frozen=True)
class ServeSettings:
    """``kclassify serve``'s server, batching and limits (:func:`kclassify.serving.serve`)."""

    host: str = "127.0.0.1"  # this machine only
    port: int = 8080
    backend: str = "auto"  # a run's gated TFLite export (int8 first), else its Keras model
    workers: int = 1  # server processes
    max_batch: int = 16  # most images per model call
    batch_timeout_ms: float = 5.0  # longest wait for a batch to fill while requests are arriving
    max_body_mb: float = 10.0  # largest request body
    api_key: str | None = None
    threads: int | None = None  # LiteRT threads for .tflite files
    model_name: str | None = None  # the name in /v1/models/NAME:predict (default: the run folder's)
    tta: str = "none"  # test-time augmentation on every request (kclassify.inference.tta.TTA_POLICIES)

    def check(self) -> None:
        """Refuse impossible numbers before anything loads (the CLI calls it before TensorFlow)."""
        problems = []
        if self.workers < 1:
            problems.append(f"--workers must be at least 1; received {self.workers}")
        if self.max_batch < 1:
            problems.append(f"--max-batch must be at least 1; received {self.max_batch}")
        if self.batch_timeout_ms < 0:
            problems.append(f"--batch-timeout-ms must be 0 or more; received {self.batch_timeout_ms}")
        if self.max_body_mb <= 0:
            problems.append(f"--max-body-mb must be positive; received {self.max_body_mb}")
        if not 0 <= self.port <= 65535:
            problems.append(f"--port must be 0-65535; received {self.port}")
        if self.backend not in BACKENDS:
            problems.append(f"--backend must be one of {', '.join(BACKENDS)}; received {self.backend!r}")
        _refuse(problems)
