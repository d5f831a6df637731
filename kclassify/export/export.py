"""``export``: a run folder to SavedModel and TFLite files, each checked by running that very file.

Every exported file is loaded back through the inference layer and scored on the run's
test split (decoded by the data layer, as in training): accuracy, top-1 agreement with the
Keras model, size and single-image latency on this machine; each ``.tflite`` file is scored a
second time as a phone feeds it (MediaPipe's resize, :mod:`kclassify.data.phone`). A file that
loses more than ``max_accuracy_drop`` points (through kclassify's resize, or as the phone feeds a
``.tflite`` file, where the drop must also be more than the test images' noise: McNemar p < 0.05), or a
float32 file that disagrees with Keras on more than 0.1 % of the images, is
not shipped under its normal name: it is kept as ``rejected-<file>`` and the export fails.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from ..config import from_yaml_file
from ..data import prepare_data
from ..errors import DataError, ExportError, RunFolderError
from ..evaluation.card import write_model_card
from ..inference import load_predictor
from ..inference.calibration import FILE as CALIBRATION_FILE
from ..inference.calibration import read_calibration
from ..runs import RunFolder
from ..settings import ExportSettings
from ..textfiles import LABELS_FILE, text_table, write_json, write_labels
from .formats import DEFAULT_FORMATS, FORMATS, Source, parse_formats
from .page import write_export_page

log = logging.getLogger(__name__)

FLOAT_AGREEMENT = 0.999  # float32 files must predict Keras' class on at least this share of images
REJECTED_PREFIX = "rejected-"
STAGING_PREFIX = ".staging-"
REPORT = "export_report.json"
PAGE = "export_report.html"
DISAGREEMENTS_KEPT = 24
NO_PHONE = "none"  # export(phone=...): do not score .tflite files as a phone feeds them
E = ExportSettings  # the defaults
# The gate rejects a phone drop over --max-accuracy-drop that the test images' noise does not explain: with
# ~200 test images, a model that scores the same through both resizes differs by a few points from image to
# image noise (measured on intel_scenes: the same recipe's phone gap changed sign from split to split;
# docs/benchmarks.md, "Which recipe survives the phone's resize (issue 26)").
PHONE_SIGNIFICANCE = 0.05


@dataclass
class FormatReport:
    """How one exported file did; ``status`` is ok, rejected (failed the gate) or failed (did not convert)."""

    format: str
    file: str | None
    status: str
    description: str = ""
    size_bytes: int | None = None
    size_vs_tflite: float | None = None  # file size / float32 TFLite size
    accuracy: float | None = None
    accuracy_drop: float | None = None  # points below the Keras model
    agreement: float | None = None  # share of images where its top-1 class is Keras' top-1 class
    # .tflite files, as a phone runs them: the full-size test images resized as MediaPipe's ImageClassifier
    # does (kclassify.data.phone), accuracy and points below the Keras model (kclassify's own resize)
    phone_accuracy: float | None = None
    phone_drop: float | None = None
    # McNemar's p of the file's right/wrong through kclassify's resize against the phone's, image by image:
    # whether the drop is more than these test images' sampling noise
    phone_p: float | None = None
    latency_ms: float | None = None  # median single-image latency here
    latency_vs_tflite: float | None = None
    outside_xnnpack: dict[str, int] | None = None  # .tflite ops LiteRT runs off XNNPACK's fast path
    message: str = ""
    # test images where its top-1 class is not Keras' (the most confident first, at most DISAGREEMENTS_KEPT):
    # path, true label, Keras' label and probability, the file's label and probability
    disagreements: list[dict] = field(default_factory=list)


@dataclass
class ExportResult:
    folder: Path
    split: str
    images: int
    keras: dict
    formats: list[FormatReport] = field(default_factory=list)
    fastest: str | None = None
    settings: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(f.status == "ok" for f in self.formats)


def export(run: str | Path, formats=DEFAULT_FORMATS, *, output: str | Path | None = None,
           max_accuracy_drop: float = E.max_accuracy_drop, data: str | None = None,
           calibration_images: int = E.calibration_images, threads: int = E.threads,
           latency_runs: int = E.latency_runs, phone: str = E.phone) -> ExportResult:
    """Export a finished run folder and check every file it writes.

    Each file is written under a staging name, scored, then moved to its name (or to
    ``rejected-<name>``), so a file shipped by an earlier export is only ever replaced by one
    that passed. A format that fails to convert gets a ``failed`` row and the others go on.

    Args:
        run: a run folder written by ``kclassify fit``.
        formats: names from :data:`kclassify.export.formats.FORMATS`, or a comma-separated string.
        output: where the files go (default ``RUN/export``); an existing folder must be empty or
            hold an earlier export.
        max_accuracy_drop: accuracy points a format may lose against the Keras model, through
            kclassify's resize and, for ``.tflite`` files, as the phone feeds them.
        data: the run's data source when it has moved (default: the one in config.yaml).
        calibration_images: training images full-integer quantization is calibrated on.
        threads: LiteRT threads when scoring and timing ``.tflite`` files.
        phone: how a phone resizes photos for ``.tflite`` files, a key of
            :data:`kclassify.data.phone.PHONE_RESIZES` (scored and gated), or ``none`` (not scored).

    Example:
        >>> result = export("saved_models/scenes", "tflite,tflite-int8")
        >>> [(f.format, f.status) for f in result.formats]
        [('tflite', 'ok'), ('tflite-int8', 'ok')]
    """
    names = parse_formats(formats)
    E(max_accuracy_drop, calibration_images, threads, latency_runs, phone).check()
    folder = RunFolder(Path(run).expanduser())
    if not folder.is_complete():
        raise RunFolderError(f"{folder.root} is not a finished run (no model.keras and metrics.json): expected a "
                             "run folder written by `kclassify fit`. Finish or rerun the fit first.")
    out = _output_folder(Path(output).expanduser() if output else folder.root / "export")
    cfg = from_yaml_file(folder.config)
    reference = load_predictor(folder.root)
    prepared = _data(folder, cfg, data, reference.labels)
    split, paths, y = _scoring_split(prepared)
    log.info("scoring on the %s split: %d images", split, len(paths))
    from ..data.pipeline import decode_files

    images = decode_files(paths, reference.image_size)  # the data layer's decode, once for every file
    # the images as a phone resizes them: decoded once, when the first .tflite file is scored
    phone_images = functools.cache(lambda: decode_files(paths, reference.image_size, resize=phone)) \
        if phone != NO_PHONE else None
    keras_probs = reference.predict(images)
    keras_top = keras_probs.argmax(1)
    keras_info = {"accuracy": _accuracy(keras_top, y), "latency_ms": round(reference.latency_ms(images[0], latency_runs), 3)}
    source = Source(
        model=reference.model, labels=reference.labels, image_size=reference.image_size,
        name=f"kclassify {cfg.model.backbone} classifier",
        description=(f"{cfg.model.backbone} at {reference.image_size}px, {len(reference.labels)} classes, "
                     f"trained by kclassify on {cfg.data.data}"),
        version=f"{folder.root.name} (kclassify {__version__})",
        calibration=_calibration(prepared, reference.image_size, calibration_images, cfg.train.seed),
        input_description=input_description(reference.image_size, cfg.model.input_scale or 1, cfg.data.phone_resize),
    )
    scoring = Scoring(paths, images, phone_images, y, keras_probs, keras_info["accuracy"], reference.labels)
    reports = [_export_format(FORMATS[name], source, out, scoring, max_accuracy_drop, threads, latency_runs)
               for name in names]
    result = ExportResult(out, split, len(paths), keras_info, reports,
                          settings={"max_accuracy_drop": max_accuracy_drop, "threads": threads, "phone": phone,
                                    "calibration_images": calibration_images, "run": str(folder.root)})
    _relative_costs(result)
    _write_beside(result, reference, folder)
    return result


def _write_beside(result: ExportResult, reference, folder: RunFolder) -> None:
    """What travels with the files: labels, the run's temperature, the report (JSON, page) and the model card."""
    out = result.folder
    write_labels(out / LABELS_FILE, reference.labels)
    calibration = read_calibration(folder.root)  # evaluate's temperature travels with the files it applies to
    if calibration:
        write_json(out / CALIBRATION_FILE, calibration)
    doc = _report_doc(result)
    write_json(out / REPORT, doc)
    write_export_page(out / PAGE, doc, reference)
    write_model_card(folder.root, out)  # beside the files, and the run's own refreshed


def input_description(size: int, input_scale: int = 1, phone_resize: float = 0.0) -> str:
    """What a phone must do to a photo for this model, for the TFLite metadata (see ``docs/android.md``)."""
    text = f"A {size}x{size} px photo: the whole photo resized to it, stretched (no crop, no border), bilinear."
    if input_scale > 1:
        text += (f" The model averages {input_scale}x{input_scale} blocks first (its backbone works at "
                 f"{size // input_scale} px), so a resize without antialiasing, as MediaPipe's ImageClassifier "
                 "does, loses little.")
    mix = f" ({phone_resize:.0%} of them as MediaPipe resizes)" if phone_resize > 0 else ""
    return text + f" Trained on photos resized with antialiasing{mix}; export_report.json's phone column " \
        "scores MediaPipe's resize."


@dataclass
class Scoring:
    """The test images every file is scored on, and the Keras model's answers on them."""

    paths: list[str]  # as the run's split names them
    images: np.ndarray  # decoded through kclassify's resize
    phone: object  # () -> the same images as a phone resizes them, or None (not scored)
    y: np.ndarray
    keras_probs: np.ndarray
    keras_accuracy: float
    labels: list[str]


def _export_format(fmt, source: Source, out: Path, scoring: Scoring, max_drop: float, threads: int,
                   latency_runs: int) -> FormatReport:
    """Write one format under a staging name, score that file, then ship or reject it."""
    staging = out / f"{STAGING_PREFIX}{fmt.filename}"
    _remove(staging)
    log.info("exporting %s", fmt.name)
    report = FormatReport(fmt.name, None, "failed", fmt.description)
    try:
        fmt.write(source, staging)
        report.size_bytes = _size(staging)
        predictor = load_predictor(staging, threads=threads)
        probs = predictor.predict(scoring.images)
        _score_report(report, probs, scoring)
        report.latency_ms = round(predictor.latency_ms(scoring.images[0], latency_runs), 3)
        if predictor.kind == "tflite":
            report.outside_xnnpack = predictor.ops_outside_delegate()
        if predictor.kind == "tflite" and scoring.phone is not None:
            _score_phone(report, probs.argmax(1), predictor.predict(scoring.phone()).argmax(1), scoring.y,
                         scoring.keras_accuracy)
        del predictor
    except Exception as e:  # noqa: BLE001 - one format failing must not stop the others
        _remove(staging)
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        report.message = e.args[0] if isinstance(e, ExportError) else f"{type(e).__name__}: {first}"
        log.warning("%s failed: %s", fmt.name, report.message)
        return report
    reasons = _gate_reasons(report, fmt, max_drop)
    report.status = "rejected" if reasons else "ok"
    report.file = str(_ship(staging, out, fmt, rejected=bool(reasons)))
    if reasons:
        report.message = "; ".join(reasons) + f". Kept as {Path(report.file).relative_to(out)}, not shipped."
    return report


def _output_folder(out: Path) -> Path:
    """The export folder: new, empty, or an earlier export's (never a folder of the user's files)."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"--output {out} is a file: expected a folder for the exported files.")
    if out.is_dir() and any(out.iterdir()) and not (out / REPORT).is_file():
        raise ExportError(f"--output {out} already holds files that kclassify did not export (no {REPORT}). "
                          "Pass a new or empty folder; export never writes among a user's own files.")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _data(folder: RunFolder, cfg, data: str | None, labels: list[str]):
    spec = data or cfg.data.data
    try:
        prepared = prepare_data(spec, seed=cfg.train.seed, split_file=folder.split, min_images=1)
    except DataError as e:
        raise DataError(f"Cannot read the run's data to check the exported files: {e} If the data moved, pass "
                        "--data with its new location.") from None
    if list(prepared.classes) != list(labels):
        raise DataError(f"{spec} has classes {prepared.classes}, but the run was trained on {labels}: its test split "
                        "cannot score this model. Pass --data with the data the run was trained on.")
    return prepared


def _scoring_split(prepared):
    for split in ("test", "val"):
        paths, labels = prepared.subset(split)
        if paths:
            if split == "val":
                log.warning("the run has no test split: scoring exported files on the validation split")
            return split, paths, np.asarray(labels)
    raise ExportError("The run has no test or validation images to check exported files on. Train with "
                      "--test-fraction above 0.")


def _calibration(prepared, image_size: int, count: int, seed: int):
    """A callable decoding a seeded sample of training images, once, when a format needs them."""
    cached = []

    def images():
        if not cached:
            from ..data.pipeline import decode_files

            paths = prepared.subset("train")[0]
            rng = np.random.default_rng(seed)
            pick = sorted(rng.choice(len(paths), size=min(count, len(paths)), replace=False))
            log.info("calibrating full-integer quantization on %d training images", len(pick))
            cached.append(decode_files([paths[i] for i in pick], image_size))
        return cached[0]

    return images


def _score_report(report: FormatReport, probs, scoring: Scoring) -> None:
    top, keras_top, y = probs.argmax(1), scoring.keras_probs.argmax(1), scoring.y
    report.accuracy = float(np.mean(top == y))
    report.accuracy_drop = (scoring.keras_accuracy - report.accuracy) * 100
    report.agreement = float(np.mean(top == keras_top))
    differ = np.flatnonzero(top != keras_top)
    differ = differ[np.argsort(-probs[differ, top[differ]], kind="stable")][:DISAGREEMENTS_KEPT]
    names = scoring.labels
    report.disagreements = [{"path": scoring.paths[i], "true": names[y[i]],
                             "keras": names[keras_top[i]], "keras_probability": round(float(scoring.keras_probs[i, keras_top[i]]), 4),
                             "file": names[top[i]], "file_probability": round(float(probs[i, top[i]]), 4)}
                            for i in differ]


def _score_phone(report: FormatReport, top, phone_top, y, keras_accuracy: float) -> None:
    from ..evaluation.compare import mcnemar_p

    right, phone_right = top == y, phone_top == y
    report.phone_accuracy = float(np.mean(phone_right))
    report.phone_drop = (keras_accuracy - report.phone_accuracy) * 100
    report.phone_p = mcnemar_p(int(np.sum(right & ~phone_right)), int(np.sum(~right & phone_right)))


def _gate_reasons(report: FormatReport, fmt, max_drop: float) -> list[str]:
    """Why a scored file must not ship (on unrounded figures: 99.89 % is not 99.9 %)."""
    reasons = []
    if report.accuracy_drop > max_drop + 1e-9:
        reasons.append(f"accuracy {report.accuracy:.4f} is {report.accuracy_drop:.2f} points below the Keras "
                       f"model (--max-accuracy-drop {max_drop:g})")
    if report.phone_drop is not None and report.phone_drop > max_drop + 1e-9 and report.phone_p < PHONE_SIGNIFICANCE:
        reasons.append(f"as a phone feeds it (photos resized without antialiasing) its accuracy is "
                       f"{report.phone_accuracy:.4f}, {report.phone_drop:.2f} points below the Keras model "
                       f"(--max-accuracy-drop {max_drop:g}), more than the test images' noise (McNemar p = "
                       f"{report.phone_p:.2g}; a recipe that survives the phone's resize: docs/android.md)")
    if fmt.float32 and report.agreement < FLOAT_AGREEMENT:
        reasons.append(f"a float32 file must give Keras' class on {FLOAT_AGREEMENT:.1%} of images; it does on "
                       f"{report.agreement:.2%}")
    return reasons


def _ship(staging: Path, out: Path, fmt, *, rejected: bool) -> Path:
    """Move a scored file from its staging name to its name, or to ``rejected-<name>``."""
    name = (REJECTED_PREFIX if rejected else "") + fmt.filename
    if fmt.versioned:  # a TF Serving base path: add the next version, keep the ones a server may be serving
        base = out / name
        versions = [int(p.name) for p in base.glob("*") if p.is_dir() and p.name.isdigit()] if base.is_dir() else []
        if base.exists() and not base.is_dir():
            _remove(base)
        target = base / str(max(versions, default=0) + 1)
        target.parent.mkdir(parents=True, exist_ok=True)
    else:
        target = out / name
        _remove(target)
    os.replace(staging, target)
    if not rejected and not fmt.versioned:
        _remove(out / (REJECTED_PREFIX + fmt.filename))  # a stale rejection from an earlier export
    return target


def _relative_costs(result: ExportResult) -> None:
    base = next((f for f in result.formats if f.format == "tflite" and f.size_bytes), None)
    for f in result.formats:
        if base and f.size_bytes and f.format != "savedmodel":
            f.size_vs_tflite = f.size_bytes / base.size_bytes
        if base and base.latency_ms and f.latency_ms:
            f.latency_vs_tflite = f.latency_ms / base.latency_ms
    # Only .tflite files run on the same runtime and thread count; TensorFlow uses its own thread pool.
    timed = [f for f in result.formats if f.status == "ok" and f.latency_ms and f.format.startswith("tflite")]
    result.fastest = min(timed, key=lambda f: f.latency_ms).format if timed else None


ROUNDING = {"accuracy": 4, "accuracy_drop": 2, "agreement": 4, "phone_accuracy": 4, "phone_drop": 2, "phone_p": 4,
            "size_vs_tflite": 3, "latency_vs_tflite": 3}


def _report_doc(result: ExportResult) -> dict:
    rows = [{k: round(v, ROUNDING[k]) if k in ROUNDING and v is not None else v for k, v in asdict(f).items()}
            for f in result.formats]
    return {
        "folder": str(result.folder), "split": result.split, "images": result.images,
        "keras": {k: round(v, 4) for k, v in result.keras.items()}, "fastest_tflite": result.fastest,
        "ok": result.ok, "settings": result.settings, "formats": rows,
    }


def format_table(result: ExportResult) -> str:
    """The export report as an aligned text table."""
    rows = [("format", "status", "size", "x tflite", "accuracy", "drop", "agree", "phone", "drop", "latency ms",
             "x tflite")]
    rows.append(("keras", "reference", "", "", f"{result.keras['accuracy']:.4f}", "", "", "", "",
                 f"{result.keras['latency_ms']:.2f}", ""))
    for f in result.formats:
        rows.append((
            f.format, f.status, _mb(f.size_bytes), _num(f.size_vs_tflite, ".2f"), _num(f.accuracy, ".4f"),
            _num(f.accuracy_drop, "+.2f"), _num(f.agreement, ".2%"), _num(f.phone_accuracy, ".4f"),
            _num(f.phone_drop, "+.2f"), _num(f.latency_ms, ".2f"),
            _num(f.latency_vs_tflite, ".2f"),
        ))
    lines = [text_table(rows)]
    lines.append(f"scored on {result.images} {result.split} images; phone: a .tflite file fed as MediaPipe's "
                 "ImageClassifier resizes a photo (no antialiasing), drop against keras; "
                 "latency: median single image on this machine, "
                 f".tflite through LiteRT with {result.settings.get('threads')} thread(s), keras and savedmodel "
                 f"through TensorFlow's own thread pool; fastest .tflite here: {result.fastest or 'n/a'}")
    lines += [f"{f.format}: {f.message}" for f in result.formats if f.message]
    lines += [f"{f.format}: ops off XNNPACK's fast path: " + ", ".join(f"{op} x{n}" for op, n in f.outside_xnnpack.items())
              for f in result.formats if f.outside_xnnpack]
    return "\n".join(lines)


def _accuracy(top, y) -> float:
    return float(np.mean(top == y))


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _mb(size: int | None) -> str:
    return "" if size is None else f"{size / 1e6:.2f} MB" if size >= 1e5 else f"{size / 1e3:.1f} kB"


def _num(value, spec: str) -> str:
    return "" if value is None else format(value, spec)
