"""The export formats: one record each, whose keys are the valid ``--formats`` values (no TensorFlow here)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError, did_you_mean


@dataclass
class Source:
    """What every format writes from: the trained model and what describes it."""

    model: Any  # the Keras classifier (raw 0-255 pixels in, probabilities out)
    labels: list[str]
    image_size: int
    name: str
    description: str
    version: str
    calibration: Callable[[], Any]  # uint8 training images for full-integer calibration (decoded on first use)
    input_description: str = ""  # the input size and the resize a photo needs, for the TFLite metadata


@dataclass(frozen=True)
class Format:
    """One export format.

    Attributes:
        name: what ``--formats`` takes.
        filename: file (or folder) written in the export folder.
        description: one line for the report and ``--help``.
        float32: computes in float32, so it must agree with the Keras model on practically
            every image (see :data:`kclassify.export.export.FLOAT_AGREEMENT`).
        write: writes the artifact from a :class:`Source` to a (staging) path.
        versioned: ``filename`` is a TF Serving base path and each export adds a numbered version.
    """

    name: str
    filename: str
    description: str
    float32: bool
    write: Callable[[Source, Path], None]
    versioned: bool = False


def _write_savedmodel(src: Source, path: Path) -> None:
    from .savedmodel import write_savedmodel

    write_savedmodel(src.model, src.labels, src.image_size, path)


def _tflite_writer(options: Callable[[Source], dict], *, integer: bool = False) -> Callable[[Source, Path], None]:
    def write(src: Source, path: Path) -> None:
        from .metadata import with_metadata
        from .tflite import check_integer, convert, for_tflite

        data = convert(for_tflite(src.model, integer=integer), src.image_size, options(src))
        if integer:
            check_integer(data, path.name)
        path.write_bytes(with_metadata(data, src.labels, name=src.name, description=src.description,
                                       version=src.version, float_input=not integer,
                                       input_description=src.input_description))

    return write


def _float16(src: Source) -> dict:
    from .tflite import float16_options

    return float16_options()


def _dynamic(src: Source) -> dict:
    from .tflite import dynamic_range_options

    return dynamic_range_options()


def _int8(src: Source) -> dict:
    from .tflite import full_integer_options

    return full_integer_options(src.calibration())


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("savedmodel", "savedmodel", "SavedModel for TF Serving: image bytes or uint8 images in", True,
           _write_savedmodel, versioned=True),
    Format("tflite", "model.tflite", "TFLite float32", True, _tflite_writer(lambda src: {})),
    Format("tflite-fp16", "model_fp16.tflite", "TFLite float16 weights (float32 compute on CPU)", False,
           _tflite_writer(_float16)),
    Format("tflite-dynamic", "model_dynamic.tflite", "TFLite int8 weights, float activations", False,
           _tflite_writer(_dynamic)),
    Format("tflite-int8", "model_int8.tflite", "TFLite full integer, uint8 pixels in, uint8 scores out", False,
           _tflite_writer(_int8, integer=True)),
)}
DEFAULT_FORMATS = ("savedmodel", "tflite", "tflite-int8")


def parse_formats(text: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """``"savedmodel,tflite"`` (or a list, or ``"all"``) to known format names, in table order."""
    if text is None:
        return list(DEFAULT_FORMATS)
    items = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    if items == ["all"]:
        return list(FORMATS)
    for item in items:
        if item not in FORMATS:
            raise ConfigError(f"Unknown export format {item!r}.{did_you_mean(item, FORMATS)} "
                              f"Valid formats: {', '.join(FORMATS)} (or all).")
    if not items:
        raise ConfigError(f"No export format given. Valid formats: {', '.join(FORMATS)} (or all).")
    return [name for name in FORMATS if name in items]
