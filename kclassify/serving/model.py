"""Which model file a server runs (``--backend``), and what it says about itself.

``auto`` serves a run's exported TFLite file when there is one that passed export's gate (int8
first: smallest and, for most models, fastest), else the run's Keras model; a model file is
served as it is. LiteRT runs a small model many times faster than Keras' ``predict`` does a
call, which is most of the difference between a naive server and this one (measured:
docs/benchmarks.md, "kclassify serve under load").
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, ModelLoadError
from ..inference import Predictor, detect_kind, load_predictor
from ..inference.calibration import read_calibration

log = logging.getLogger(__name__)

# backend -> the artifact kinds it may serve
BACKENDS = {
    "auto": ("tflite", "keras", "savedmodel"),
    "tflite": ("tflite",),
    "tf": ("keras", "savedmodel"),
}
# a run's exported files, preferred first, by the export format that wrote them
RUN_TFLITE = (("tflite-int8", "model_int8.tflite"), ("tflite", "model.tflite"), ("tflite-fp16", "model_fp16.tflite"),
              ("tflite-dynamic", "model_dynamic.tflite"))


@dataclass
class ServedModel:
    predictor: Predictor
    name: str  # the TF Serving model name: /v1/models/<name>:predict
    version: str
    temperature: float  # from evaluate's calibration.json; 1.0 when there is none
    source: Path  # what was asked for (a run folder, or the file)
    gradients: Path | None = None  # the Keras model /v1/explain runs Grad-CAM on (None: the served file has none)

    def metadata(self) -> dict:
        p = self.predictor
        return {"model": self.name, "version": self.version, "backend": p.kind, "path": str(p.path),
                "labels": p.labels, "image_size": p.image_size, "input_dtype": p.input_dtype,
                "resize": "kclassify", "temperature": self.temperature,  # images.Decoder resizes as training did
                "explain": self.gradients is not None, **({"tta": p.tta} if p.tta != "none" else {})}


def load_served(target: str | Path, backend: str = "auto", *, threads: int | None = None,
                name: str | None = None, tta: str = "none") -> ServedModel:
    """Load what ``kclassify serve TARGET --backend BACKEND`` serves (``tta``: on every request)."""
    if backend not in BACKENDS:
        raise ConfigError(f"--backend must be one of {', '.join(BACKENDS)}; received {backend!r}.")
    target = Path(target).expanduser()
    kind = detect_kind(target)
    run = target if kind == "run" else None
    artifact = _pick(run, backend) if run else target
    chosen = "keras" if detect_kind(artifact) == "run" else detect_kind(artifact)
    if chosen not in BACKENDS[backend]:
        raise ConfigError(f"--backend {backend} serves {' or '.join(BACKENDS[backend])} models; {target} is a "
                          f"{chosen} model. Pass --backend auto, or a model of that kind.")
    predictor = load_predictor(artifact, threads=threads).with_tta(tta)
    calibration = read_calibration(run) if run else read_calibration(artifact.parent)
    temperature = float(calibration["temperature"]) if calibration else 1.0
    gradients = run / "model.keras" if run else (artifact if predictor.kind == "keras" else None)
    served = ServedModel(predictor, name or _name(target, run), _version(run, artifact), temperature, target,
                         gradients if gradients is not None and gradients.exists() else None)
    log.info("serving %s (%s, %d classes, %d px, temperature %.3f%s)", artifact, predictor.kind,
             predictor.num_classes, predictor.image_size, temperature,
             "" if tta == "none" else f", test-time augmentation {tta}")
    return served


def _pick(run: Path, backend: str) -> Path:
    """A run folder's file for ``backend``: its gated TFLite export, or its Keras model."""
    if backend in ("auto", "tflite"):
        passed = _passed_formats(run / "export")
        for fmt, filename in RUN_TFLITE:
            if (run / "export" / filename).is_file() and (passed is None or fmt in passed):
                return run / "export" / filename
        if backend == "tflite":
            raise ModelLoadError(f"{run} has no exported .tflite file: run `kclassify export {run} --formats "
                                 "tflite-int8` first, or serve with --backend tf.")
    return run


def _passed_formats(export: Path) -> set[str] | None:
    """Formats export_report.json lists as ok (None when there is no report to consult)."""
    report = export / "export_report.json"
    if not report.is_file():
        return None
    doc = json.loads(report.read_text())
    return {f["format"] for f in doc.get("formats", []) if f.get("status") == "ok"}


def _name(target: Path, run: Path | None) -> str:
    base = (run or target).resolve()
    return base.name if run or base.is_dir() else base.stem


def _version(run: Path | None, artifact: Path) -> str:
    """The run's finish time (or the file's modification time): changes when the model does."""
    if run is not None and (run / "run.json").is_file():
        info = json.loads((run / "run.json").read_text())
        if info.get("finished"):
            return str(info["finished"])
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(artifact.stat().st_mtime))
