"""Writing TFLite metadata so MediaPipe Tasks and Android Studio's model binding use a file with no code.

What MediaPipe's ImageClassifier needs (checked with the real ``mediapipe`` package in the
tests): one ``SubGraphMetadata`` whose input is an RGB image and, for a float input,
carries ``NormalizationOptions`` (MediaPipe refuses float input without them); whose output
is a feature vector with the label file attached as ``TENSOR_AXIS_LABELS``; and the label
file appended as an *uncompressed* zip entry (MediaPipe refuses deflated entries). Our
models take raw 0-255 pixels, so the normalization is mean 0, std 1: the model normalizes
inside. The layout follows TFLite Support's ``MetadataPopulator``.
"""

from __future__ import annotations

import io
import zipfile

import flatbuffers
import numpy as np

from .._vendor import metadata_schema_py_generated as meta_fb
from ..inference.tflite_metadata import METADATA_IDENTIFIER, METADATA_NAME
from ..textfiles import LABELS_FILE, labels_text

LABEL_FILE = LABELS_FILE
MIN_PARSER_VERSION = "1.0.0"  # only fields of metadata schema 1.0.0 are used


def with_metadata(model_bytes: bytes, labels: list[str], *, name: str, description: str, version: str,
                  float_input: bool, input_description: str = "") -> bytes:
    """``model_bytes`` with TFLite metadata (image in, labelled probabilities out) and its label file.

    Args:
        input_description: what the image input expects (its size, how to resize a photo to it),
            written before the pixel range in the input tensor's description.
        float_input: the model takes float pixels (records NormalizationOptions mean 0,
            std 1); otherwise uint8 pixels go in as they are.
    """
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    keep = [m for m in (model.metadata or []) if m.name != METADATA_NAME]
    model.buffers.append(_buffer(_metadata_flatbuffer(labels, name, description, version, float_input,
                                                      input_description)))
    entry = _schema().MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    model.metadata = keep + [entry]
    out = io.BytesIO(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))
    out.seek(0, io.SEEK_END)
    # Appending mode on a non-zip file starts a new archive at its end with offsets from the file's
    # start, which is the layout MediaPipe's and TFLite Support's readers expect.
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(zipfile.ZipInfo(LABEL_FILE, date_time=(2020, 1, 1, 0, 0, 0)), labels_text(labels))
    return out.getvalue()


def _schema():
    from tensorflow.lite.python import schema_py_generated

    return schema_py_generated


def _buffer(data: bytes):
    buffer = _schema().BufferT()
    buffer.data = np.frombuffer(data, dtype=np.uint8)
    return buffer


def _metadata_flatbuffer(labels, name, description, version, float_input, input_description="") -> bytes:
    image = meta_fb.TensorMetadataT()
    image.name = "image"
    image.description = ((input_description.rstrip() + " " if input_description else "") +
                         f"RGB image, pixel values 0-255 ({'float32' if float_input else 'uint8'}); "
                         "the model normalizes inside.")
    image.content = meta_fb.ContentT()
    image.content.contentPropertiesType = meta_fb.ContentProperties.ImageProperties
    image.content.contentProperties = meta_fb.ImagePropertiesT()
    image.content.contentProperties.colorSpace = meta_fb.ColorSpaceType.RGB
    if float_input:
        norm = meta_fb.NormalizationOptionsT()
        norm.mean, norm.std = [0.0], [1.0]
        unit = meta_fb.ProcessUnitT()
        unit.optionsType, unit.options = meta_fb.ProcessUnitOptions.NormalizationOptions, norm
        image.processUnits = [unit]
    image.stats = _stats(255.0, 0.0)

    probs = meta_fb.TensorMetadataT()
    probs.name = "probability"
    probs.description = f"Probabilities of the {len(labels)} classes."
    probs.content = meta_fb.ContentT()
    probs.content.contentPropertiesType = meta_fb.ContentProperties.FeatureProperties
    probs.content.contentProperties = meta_fb.FeaturePropertiesT()
    probs.stats = _stats(1.0, 0.0)
    label_file = meta_fb.AssociatedFileT()
    label_file.name = LABEL_FILE
    label_file.description = "Class names, one a line, in output order."
    label_file.type = meta_fb.AssociatedFileType.TENSOR_AXIS_LABELS
    probs.associatedFiles = [label_file]

    subgraph = meta_fb.SubGraphMetadataT()
    subgraph.inputTensorMetadata, subgraph.outputTensorMetadata = [image], [probs]
    doc = meta_fb.ModelMetadataT()
    doc.name, doc.description, doc.version = name, description, version
    doc.author = "kclassify"
    doc.subgraphMetadata = [subgraph]
    doc.minParserVersion = MIN_PARSER_VERSION
    builder = flatbuffers.Builder(1024)
    builder.Finish(doc.Pack(builder), file_identifier=METADATA_IDENTIFIER)
    return bytes(builder.Output())


def _stats(high: float, low: float):
    stats = meta_fb.StatsT()
    stats.max, stats.min = [high], [low]
    return stats
