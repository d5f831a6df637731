"""kclassify's exceptions.

Every error a user can cause is a :class:`KClassifyError`. Messages say what was
expected, what was received, and what to do about it; the CLI prints them as one
line and exits with status 2 instead of a traceback.
"""

from __future__ import annotations


class KClassifyError(Exception):
    """Base class of every error kclassify raises on purpose."""


class ConfigError(KClassifyError):
    """A setting (flag, YAML key or value) is unknown or out of range."""


class DataError(KClassifyError):
    """The data source is missing, empty, unreadable or too small."""


class UnknownBackboneError(ConfigError):
    """A backbone name that the registry does not know."""


class RunFolderError(KClassifyError):
    """A run folder is incomplete, or does not match the command that uses it."""


class WeightsError(KClassifyError):
    """Weights could not be fetched or do not fit the model."""


class ModelLoadError(KClassifyError):
    """A model artifact (run folder, .keras, SavedModel, .tflite) is missing, corrupt or foreign."""


class ExportError(KClassifyError):
    """An export format failed to convert, or its file failed a check."""


def did_you_mean(name: str, valid) -> str:
    """Return ' Did you mean X?' when a close match exists, else ''."""
    import difflib

    close = difflib.get_close_matches(str(name), [str(v) for v in valid], n=1)
    return f" Did you mean {close[0]!r}?" if close else ""
