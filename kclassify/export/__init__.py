"""Export: a run folder to a TF-Serving SavedModel and TFLite files with metadata, each checked through inference."""

from .export import ExportResult, FormatReport, export, format_table
from .formats import DEFAULT_FORMATS, FORMATS, Format, parse_formats

__all__ = ["DEFAULT_FORMATS", "ExportResult", "FORMATS", "Format", "FormatReport", "export", "format_table",
           "parse_formats"]
