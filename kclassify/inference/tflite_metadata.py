"""Reading TFLite metadata: the flatbuffer MediaPipe Tasks and Android Studio read, and its packed files.

A ``.tflite`` file with metadata holds a ``ModelMetadata`` flatbuffer in one of the model's
buffers, named ``TFLITE_METADATA`` in the model's metadata list, and its associated files
(here the label file) as a zip archive appended after the model. Plain LiteRT interpreters
ignore both. :mod:`kclassify.export.metadata` writes what this module reads.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass

from .._vendor import metadata_schema_py_generated as meta_fb
from ..textfiles import parse_labels

METADATA_NAME = b"TFLITE_METADATA"
METADATA_IDENTIFIER = b"M001"  # the metadata schema's file_identifier


@dataclass(frozen=True)
class TFLiteMetadata:
    """What kclassify reads back from a ``.tflite`` file's metadata."""

    name: str
    description: str
    version: str
    labels: list[str] | None
    label_file: str | None
    normalization: tuple[list[float], list[float]] | None  # (mean, std) of the input, if any
    files: list[str]  # names in the appended zip archive
    input_description: str = ""  # the image input's: its size and how to resize a photo to it


def metadata_buffer(model_bytes: bytes) -> bytes | None:
    """The raw ``ModelMetadata`` flatbuffer of a TFLite model, or None when it has none."""
    from tensorflow.lite.python import schema_py_generated as schema_fb

    model = schema_fb.Model.GetRootAs(model_bytes, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() != METADATA_NAME:
            continue
        buffer = model.Buffers(entry.Buffer())
        if buffer.Offset() > 1:  # models over 2 GB keep buffers after the flatbuffer
            return bytes(model_bytes[buffer.Offset(): buffer.Offset() + buffer.Size()])
        return buffer.DataAsNumpy().tobytes()
    return None


def read_metadata(model_bytes: bytes) -> TFLiteMetadata | None:
    """Parse a TFLite model's metadata and its label file; None when the file carries none."""
    raw = metadata_buffer(model_bytes)
    if raw is None:
        return None
    if not meta_fb.ModelMetadata.ModelMetadataBufferHasIdentifier(raw, 0):
        return None
    doc = meta_fb.ModelMetadataT.InitFromObj(meta_fb.ModelMetadata.GetRootAs(raw, 0))
    files = _zip_names(model_bytes)
    label_file = _label_file(doc)
    labels = None
    if label_file and label_file in files:
        with zipfile.ZipFile(io.BytesIO(model_bytes)) as zf:
            text = zf.read(label_file).decode("utf-8")
        labels = parse_labels(text)
    return TFLiteMetadata(
        name=_text(doc.name), description=_text(doc.description), version=_text(doc.version),
        labels=labels, label_file=label_file, normalization=_normalization(doc), files=files,
        input_description=_input_description(doc),
    )


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else (value or "")


def _zip_names(model_bytes: bytes) -> list[str]:
    try:
        with zipfile.ZipFile(io.BytesIO(model_bytes)) as zf:
            return zf.namelist()
    except zipfile.BadZipFile:
        return []


def _label_file(doc) -> str | None:
    """The first TENSOR_AXIS_LABELS file of the first output tensor (no locale before a locale)."""
    subgraphs = doc.subgraphMetadata or []
    outputs = subgraphs[0].outputTensorMetadata if subgraphs else None
    if not outputs:
        return None
    files = [f for f in (outputs[0].associatedFiles or [])
             if f.type == meta_fb.AssociatedFileType.TENSOR_AXIS_LABELS]
    files.sort(key=lambda f: bool(f.locale))
    return _text(files[0].name) if files else None


def _input_description(doc) -> str:
    subgraphs = doc.subgraphMetadata or []
    inputs = subgraphs[0].inputTensorMetadata if subgraphs else None
    return _text(inputs[0].description) if inputs else ""


def _normalization(doc):
    subgraphs = doc.subgraphMetadata or []
    inputs = subgraphs[0].inputTensorMetadata if subgraphs else None
    for unit in (inputs[0].processUnits or []) if inputs else []:
        if unit.optionsType == meta_fb.ProcessUnitOptions.NormalizationOptions:
            return [float(v) for v in unit.options.mean], [float(v) for v in unit.options.std]
    return None
