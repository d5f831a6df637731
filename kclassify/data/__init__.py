"""Data layer: sources, checks, split manifest (TensorFlow-free) and the tf.data pipeline.

``kclassify.data.pipeline`` and ``kclassify.data.augment`` import TensorFlow/Keras;
everything re-exported here does not.
"""

from .builtin import recommended_settings
from .prepare import PreparedData, Record, prepare_data, prepare_for
from .sources import Source, cache_dir, resolve_source
from .split import read_split, write_split

__all__ = [
    "PreparedData", "Record", "Source", "cache_dir", "prepare_data", "prepare_for", "read_split", "recommended_settings",
    "resolve_source", "write_split",
]
