"""``MODEL_CARD.md``: what was shipped, generated from what the run folder knows (never edited by hand).

Written into the run folder by ``evaluate`` (the run's own model) and ``export``, and beside every
export by ``export``, in the sections model hubs use for model cards: model details, intended uses
and limitations, training data, training procedure, evaluation results, exported files. Every number
is read from ``run.json``, ``config.yaml``, ``evaluation/report.json`` and ``export_report.json``, so
the card says what those say.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path

import yaml

from .. import __version__
from ..runs import RunFolder
from ..textfiles import write_atomic

CARD = "MODEL_CARD.md"
Z95 = 1.959964  # the normal quantile of a two-sided 95% interval


def wilson_interval(right: int, n: int) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion (accuracy: ``right`` of ``n`` images)."""
    if n == 0:
        return 0.0, 1.0
    p = right / n
    centre = (p + Z95 ** 2 / (2 * n)) / (1 + Z95 ** 2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95 ** 2 / (4 * n * n)) / (1 + Z95 ** 2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def sha256(path: Path) -> str:
    """The SHA-256 of a file, or of a folder's files (their relative paths and contents, in sorted order)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(str(c) for c in row) + " |" for row in rows)]


def _files(run: RunFolder, export: dict | None, export_dir: Path | None) -> list[str]:
    rows = [["model.keras (Keras, float32)", f"{_size(run.model) / 2**20:.2f} MB", f"`{sha256(run.model)}`"]]
    for f in (export or {}).get("formats", []):
        if f.get("status") == "ok" and f.get("file") and Path(f["file"]).exists():
            file = Path(f["file"])
            name = file.relative_to(export_dir).as_posix() if export_dir and file.is_relative_to(export_dir) else file.name
            rows.append([f"{name} ({f['format']})", f"{_size(file) / 2**20:.2f} MB", f"`{sha256(file)}`"])
    return _table(["file", "size", "SHA-256"], rows)


def _details(run: RunFolder, info: dict, cfg: dict, labels: list[str], report: dict | None) -> list[str]:
    model = cfg["model"]
    size = report["model"]["image_size"] if report else cfg["data"].get("image_size")
    return ["## Model details", "",
            f"- Task: image classification into {len(labels)} classes: {', '.join(labels)}.",
            f"- Architecture: `{model['backbone']}` backbone (weights: `{model.get('weights')}`), a "
            f"{size} px RGB input of raw 0-255 pixels (preprocessing inside the model), "
            f"{info.get('parameters', 'n/a'):,} parameters, softmax output." if isinstance(info.get("parameters"), int)
            else f"- Architecture: `{model['backbone']}` backbone, a {size} px RGB input, softmax output.",
            f"- Trained by kclassify {info.get('versions', {}).get('kclassify', __version__)} "
            f"(TensorFlow {info.get('versions', {}).get('tensorflow', '?')}, Keras "
            f"{info.get('versions', {}).get('keras', '?')}), {info.get('started', '?')} to {info.get('finished', '?')}, "
            f"{info.get('precision', 'float32')} arithmetic, seed {info.get('seed')}.", ""]


def _uses(labels: list[str], info: dict, size) -> list[str]:
    data = info.get("data", {})
    return ["## Intended uses & limitations", "",
            f"- Intended use: to sort photos like the training images into {', '.join(labels)}.",
            f"- It knows these {len(labels)} classes only: any other image still gets one of them, often with a "
            "high probability. Screen out-of-scope images before trusting its answer.",
            f"- It learnt from {sum(data.get('counts', {}).get('train', {}).values())} training images of "
            f"`{data.get('source', '?')}`; photos from other cameras, places or conditions may score lower than the "
            "test figures below.",
            f"- Feed the whole photo resized to {size} px as the Android section of the documentation says; a "
            "crop or another resize changes what it sees.", ""]


def _data(run: RunFolder, info: dict) -> list[str]:
    data = info.get("data", {})
    counts = data.get("counts", {})
    classes = sorted({c for split in counts.values() for c in split})
    lines = ["## Training data", "",
             f"- Source: `{data.get('source', '?')}` ({data.get('kind', '?')}), fingerprint `{data.get('fingerprint')}`.",
             f"- Excluded (did not decode): {len(data.get('excluded', []))} file(s); listed in excluded.csv.", ""]
    lines += _table(["class", *counts], [[c, *(counts[s].get(c, 0) for s in counts)] for c in classes])
    audit = _read(run.root / "audit" / "audit.json")
    if audit:
        checks = {name: check["count"] for name, check in audit.get("checks", {}).items() if check.get("count")}
        lines += ["", "Audit findings (audit/audit.json): " + (", ".join(f"{k} {v}" for k, v in checks.items())
                                                           or "none") + "."]
    return lines + [""]


def _procedure(cfg: dict) -> list[str]:
    rows = [[f"`{k}`", f"`{v}`"] for group in ("data", "model", "train") for k, v in cfg.get(group, {}).items()]
    return ["## Training procedure", "", "The settings of config.yaml (`kclassify fit --config config.yaml` "
            "retrains them):", "", *_table(["setting", "value"], rows), ""]


def _results(report: dict | None) -> list[str]:
    if not report:
        return ["## Evaluation results", "", "Not evaluated yet (`kclassify evaluate RUN`).", ""]
    m, cal, n = report["metrics"], report["calibration"], report["metrics"]["images"]
    right = round(m["accuracy"] * n)
    low, high = wilson_interval(right, n)
    lines = ["## Evaluation results", "",
             f"On the {report['data']['split']} split ({n} images the model never trained on):", "",
             f"- accuracy {m['accuracy']:.4f} ({right} of {n}; 95% Wilson interval {low:.4f} to {high:.4f})",
             *(f"- {k.replace('_', ' ')} {v:.4f}" for k, v in report["headline"].items()
               if k != "accuracy" and v is not None),
             f"- calibration: ECE {cal['ece']:.4f}" + (f", {cal['ece_calibrated']:.4f} at temperature "
                                                     f"{cal['temperature']:.3f} (fitted on {cal['fitted_on']})"
                                                     if cal.get("fitted_on") else f" (temperature 1: {cal.get('not_fitted')})"),
             ""]
    lines += _table(["class", "precision", "recall", "F1", "images"],
                    [[c["label"], f"{c['precision']:.4f}", f"{c['recall']:.4f}", f"{c['f1']:.4f}", c["support"]]
                     for c in m["per_class"]])
    return lines + ["", "The full report: evaluation/report.html.", ""]


def _exports(export: dict | None) -> list[str]:
    if not export:
        return []
    rows = [[f["format"], f["status"], f"{f['accuracy']:.4f}" if f.get("accuracy") is not None else "",
             f"{f['accuracy_drop']:+.2f}" if f.get("accuracy_drop") is not None else "",
             f"{f['agreement']:.2%}" if f.get("agreement") is not None else "",
             f"{f['phone_accuracy']:.4f}" if f.get("phone_accuracy") is not None else "",
             f"{f['latency_ms']:.2f}" if f.get("latency_ms") is not None else ""] for f in export["formats"]]
    return ["## Exported files", "",
            f"Each file run and scored on the same {export['images']} {export['split']} images (export_report.json; "
            f"Keras model: accuracy {export['keras']['accuracy']:.4f}); latency: median single image on the "
            f"exporting machine, {export['settings']['threads']} LiteRT thread(s).", "",
            *_table(["format", "status", "accuracy", "drop (points)", "agreement with Keras", "phone accuracy",
                     "latency ms"], rows), ""]


def model_card(run: str | Path, export_dir: str | Path | None = None, evaluation: str | Path | None = None) -> str:
    """The card's Markdown for a finished run, its evaluation (default ``RUN/evaluation``) and its export in
    ``export_dir`` (default ``RUN/export``)."""
    folder = RunFolder(Path(run))
    export_dir = Path(export_dir) if export_dir else folder.root / "export"
    info = folder.read_json(folder.run_json)
    cfg = yaml.safe_load(folder.config.read_text())
    labels = folder.read_labels()
    report = _read(Path(evaluation or folder.root / "evaluation") / "report.json")
    export = _read(export_dir / "export_report.json")
    size = report["model"]["image_size"] if report else cfg["data"].get("image_size")
    return "\n".join([
        f"# Model card: {folder.root.name}", "",
        f"Generated by kclassify {__version__} on {time.strftime('%Y-%m-%d %H:%M')} from the run folder's files; "
        "regenerated by `kclassify evaluate` and `kclassify export`: do not edit by hand.", "",
        *_details(folder, info, cfg, labels, report), *_uses(labels, info, size), *_data(folder, info),
        *_procedure(cfg), *_results(report), *_exports(export),
        "## Files", "", *_files(folder, export, export_dir), "",
    ])


def write_model_card(run: str | Path, export_dir: str | Path | None = None,
                     evaluation: str | Path | None = None) -> list[Path]:
    """Write ``MODEL_CARD.md`` into the run folder and, when there is an export, beside its files."""
    text = model_card(run, export_dir, evaluation)
    targets = [Path(run) / CARD]
    export_dir = Path(export_dir) if export_dir else Path(run) / "export"
    if (export_dir / "export_report.json").is_file():
        targets.append(export_dir / CARD)
    for target in targets:
        write_atomic(target, text)
    return targets
