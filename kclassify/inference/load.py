"""``load_predictor``: any model artifact kclassify writes, by what the path holds."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..errors import ConfigError, ModelLoadError
from .backends import KerasPredictor, SavedModelPredictor, TFLitePredictor, load_keras_model
from .predictor import Predictor, read_labels_file

EXPECTED = ("a run folder (model.keras + labels.txt), a .keras file, a SavedModel folder written by "
            "`kclassify export`, or a .tflite file")


def _run_folder(path: Path, threads: int | None) -> Predictor:
    model = path / "model.keras"
    if not model.is_file():
        raise ModelLoadError(
            f"{path} is a run folder without model.keras: its training has not finished. Rerun the same "
            "`kclassify fit` command to resume it, or pass a finished run."
        )
    return _keras_file(model, threads)


def _keras_file(path: Path, threads: int | None) -> Predictor:
    model = load_keras_model(path)
    if model.input_shape[1] is None:
        model = _at_the_runs_size(model, path)
    return KerasPredictor(model, _labels_beside(path, required=True), path)


def _at_the_runs_size(model, path: Path):
    """A checkpoint that takes any size (``fit --progressive-resize`` trains one), at its run's input size.

    Without a run's config.yaml beside the file or above ``checkpoints/``, the model comes back as it is
    (the predictor then says which input it expected).
    """
    from ..config import from_yaml_file
    from ..models.build import with_input_size

    for config in (path.parent / "config.yaml", path.parent.parent / "config.yaml"):
        if config.is_file():
            cfg = from_yaml_file(config)
            if cfg.data.image_size:
                return with_input_size(model, cfg.data.image_size, cfg.model.input_scale or 1)
    return model


def _savedmodel(path: Path, threads: int | None) -> Predictor:
    return SavedModelPredictor(_savedmodel_version(path))


def _tflite(path: Path, threads: int | None) -> Predictor:
    from .tflite_metadata import read_metadata

    try:
        data = path.read_bytes()
    except OSError as e:
        raise ModelLoadError(f"{path} cannot be read ({e.strerror or e}): expected a readable .tflite file.") from None
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelLoadError(f"{path} is not a TFLite model (no TFL3 identifier): expected a .tflite file.")
    try:
        meta = read_metadata(data)
    except Exception:  # noqa: BLE001 - a damaged metadata buffer: fall back to labels.txt
        meta = None
    labels = meta.labels if meta and meta.labels else _labels_beside(path, required=True)
    normalization = meta.normalization if meta else None
    if normalization == ([0.0], [1.0]):
        normalization = None  # kclassify's float files: the model normalizes inside
    return TFLitePredictor(path, labels, threads, normalization)


# kind -> loader; detect_kind() picks the key from what the path holds.
LOADERS: dict[str, Callable[[Path, int | None], Predictor]] = {
    "run": _run_folder,
    "keras": _keras_file,
    "savedmodel": _savedmodel,
    "tflite": _tflite,
}


def detect_kind(path: Path) -> str:
    """Which of :data:`LOADERS` reads ``path``; a clear error when none does."""
    if not path.exists():
        raise ModelLoadError(f"{path} does not exist: expected {EXPECTED}.")
    if path.is_dir():
        if (path / "saved_model.pb").is_file() or _versions(path):
            return "savedmodel"
        if (path / "model.keras").is_file() or (path / "config.yaml").is_file():
            return "run"
        raise ModelLoadError(f"{path} is a folder with neither model.keras nor saved_model.pb: expected {EXPECTED}.")
    suffix = path.suffix.lower()
    if suffix == ".keras":
        return "keras"
    if suffix == ".tflite":
        return "tflite"
    raise ModelLoadError(f"{path} is a {suffix or 'suffix-less'} file: expected {EXPECTED}.")


def load_predictor(path: str | Path, *, threads: int | None = None) -> Predictor:
    """Load a model artifact behind the one :class:`Predictor` interface.

    Args:
        path: a run folder, a ``.keras`` file, a SavedModel folder (or a TF Serving model
            folder of numbered versions: the highest is loaded), or a ``.tflite`` file.
        threads: LiteRT interpreter threads for ``.tflite`` files (None: LiteRT's default).

    Example:
        >>> predictor = load_predictor("saved_models/digits-20260101-120000")
        >>> predictor.labels[:3], predictor.image_size
        (['0', '1', '2'], 32)
        >>> [p.probabilities.argmax() for p in predictor.predict_files(["seven.png"])]
        [7]
    """
    if threads is not None and int(threads) < 1:
        raise ConfigError(f"threads must be at least 1; received {threads}.")
    path = Path(path).expanduser()
    return LOADERS[detect_kind(path)](path, threads)


def _versions(path: Path) -> list[Path]:
    return sorted((p for p in path.iterdir() if p.is_dir() and p.name.isdigit() and (p / "saved_model.pb").is_file()),
                  key=lambda p: int(p.name))


def _savedmodel_version(path: Path) -> Path:
    """A SavedModel folder itself, or the highest numbered version inside (TF Serving's layout)."""
    if (path / "saved_model.pb").is_file():
        return path
    return _versions(path)[-1]


def _labels_beside(model: Path, *, required: bool) -> list[str] | None:
    """``labels.txt`` beside the model file, or in the run folder above ``checkpoints/``."""
    candidates = [model.parent / "labels.txt"]
    if model.parent.name == "checkpoints":
        candidates.append(model.parent.parent / "labels.txt")
    for file in candidates:
        if file.is_file():
            return read_labels_file(file)
    if required:
        raise ModelLoadError(
            f"No class names for {model}: expected {candidates[0]} (one class name a line, in output order)"
            + (" or TFLite metadata with a label file" if model.suffix == ".tflite" else "") + "."
        )
    return None
