"""``evaluate``: score a run folder or any model artifact on a split and write the full report.

One call writes, into one folder (``RUN/evaluation`` for a run)::

    report.json          every metric, calibration, threshold, suspects (keys: docs/evaluation.md)
    report.html          the same as one self-contained page with plots and image galleries
    predictions.csv      path, split, label, predicted, confidence of every evaluated image
    suspect_labels.csv   likely-mislabelled images, most suspect first
    calibration.json     the temperature (and, for two classes, the F1-best threshold)
    plots/*.png          confusion matrix, ROC, PR, reliability, training curves

For a run's own model it also stores ``calibration.json`` in the run folder (for export and
serving), adds the headline figures to ``metrics.json`` and writes the confusion matrix and the
figures to TensorBoard (``RUN/logs/evaluation``).
"""

from __future__ import annotations

import csv
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import config as config_mod
from ..data import PreparedData, prepare_data
from ..errors import ConfigError, DataError
from ..inference import Predictor, load_predictor
from ..inference.predictor import DEFAULT_BATCH
from ..inference.tta import TTA_POLICIES, check_tta
from ..inference.calibration import FILE as CALIBRATION_FILE
from ..runs import RunFolder, find_run
from ..settings import check_batch_size
from ..textfiles import write_json
from . import plots as plot
from .calibration import calibration_report
from .html import write_report_html
from .crossval import cross_validated
from .metrics import at_threshold, best_f1_threshold, classification_metrics, headline
from .scored import Scored
from .suspects import METHOD, find_suspects, write_suspects

log = logging.getLogger(__name__)

SPLITS = ("test", "val", "train", "all")
GALLERY = 24  # worst mistakes shown in the page
SUSPECTS_SHOWN = 24
OUT_OF_SAMPLE = ("val", "test")  # splits a run's model never trained on
SCHEMA = 1


@dataclass
class EvaluationResult:
    folder: Path
    report: dict

    @property
    def headline(self) -> dict:
        return headline(self.report["metrics"])


def evaluate(target: str | Path, *, data: str | None = None, split: str | None = None, batch_size: int = DEFAULT_BATCH,
             output: str | Path | None = None, threads: int | None = None, cross_validate: int = 0,
             progress: bool | None = None, preprocess: str = "kclassify", tta: str = "none") -> EvaluationResult:
    """Evaluate a model on one split and write report.json, report.html, plots and suspect labels.

    Args:
        target: a run folder, or any model :func:`~kclassify.inference.load_predictor` reads. A model
            inside a run folder (``RUN/export/model_int8.tflite``) is scored on that run's data and
            split, so its report compares with the run's.
        data: the data source; default the run's own (required for a model outside a run folder).
        split: ``test``, ``val``, ``train`` or ``all`` (default: ``test`` with a run, else ``all``).
        output: report folder (default ``RUN/evaluation``, ``RUN/evaluation-<model>`` for another file
            of the run, else ``evaluations/<model>-<time>``).
        threads: LiteRT threads for ``.tflite`` files.
        cross_validate: K >= 2 retrains the run's recipe on K folds so that every image gets an
            out-of-sample probability for the suspect-label search (K trainings: slow).
        progress: progress bar while predicting (None: on a terminal, for large splits).
        preprocess: how photos are resized to the model's input, a key of
            :data:`kclassify.data.phone.RESIZES`: ``kclassify`` (as training did) or ``mediapipe`` (what
            MediaPipe's ImageClassifier feeds the model on a phone). Another than ``kclassify`` writes to
            ``<default>-<preprocess>`` and leaves the run's own calibration and metrics alone.
        tta: test-time augmentation, a key of :data:`kclassify.inference.tta.TTA_POLICIES`. Another than
            ``none`` scores the images twice, with and without it: the report is of the averaged views and
            holds the plain figures beside them (``report["tta"]``); it writes to ``<default>-tta-<tta>``
            and leaves the run's own calibration and metrics alone.

    Example:
        >>> result = evaluate("saved_models/digits-20260101-120000")
        >>> result.headline["macro_f1"] > 0.9, (result.folder / "report.html").is_file()
        (True, True)
    """
    started = time.time()
    check_batch_size(batch_size)
    target = Path(target).expanduser()
    run = find_run(target)
    split = _check_split(split, run)
    if cross_validate and (cross_validate < 2 or run is None):
        raise ConfigError(f"--cross-validate needs K >= 2 and a run folder (its recipe is retrained); "
                          f"received K={cross_validate} for {target}.")
    check_tta(tta)
    predictor = load_predictor(target, threads=threads).with_resize(preprocess)
    prepared = _prepare(run, data, target)
    classes = _class_index(prepared, predictor)
    if tta != "none":  # the plain score first, for the report's side-by-side
        plain = _score(predictor, prepared, classes, {split} if split != "all" else set(SPLITS), batch_size, progress)
        predictor.with_tta(tta)
    scored = _score(predictor, prepared, classes, _needed(split, run), batch_size, progress)
    evaluated = scored if split == "all" else scored.where(lambda r: r.split == split)
    if not len(evaluated):
        counts = {s: sum(c.values()) for s, c in prepared.counts().items()}
        raise DataError(f"The {split} split of {prepared.source.root} has no image the model could read "
                        f"(images per split: {counts}). Pass --split all, or another split.")
    folder = Path(output) if output else default_output(target, run, preprocess, tta)
    (folder / "plots").mkdir(parents=True, exist_ok=True)
    extra = {} if tta == "none" else {"tta": {
        "policy": tta, "views": TTA_POLICIES[tta][1], "description": TTA_POLICIES[tta][0],
        "plain": headline(classification_metrics(plain.y, plain.probs, predictor.labels))}}
    report = _report(target, predictor, run, prepared, split, scored, evaluated, cross_validate, folder, batch_size,
                     extra)
    report["seconds"] = round(time.time() - started, 2)
    write_json(folder / "report.json", report)
    if run is not None and _is_runs_model(target, run) and preprocess == "kclassify" and tta == "none":
        _update_run(run, report, split, folder)
    log.info("evaluation report: %s", folder / "report.html")
    return EvaluationResult(folder, report)


def default_output(target: Path, run: RunFolder | None, preprocess: str = "kclassify", tta: str = "none") -> Path:
    tag = ("" if preprocess == "kclassify" else f"-{preprocess}") + ("" if tta == "none" else f"-tta-{tta}")
    if run is not None:
        if _is_runs_model(target, run):
            return run.root / f"evaluation{tag}"
        rel = target.resolve().relative_to(run.root.resolve())  # export/model_int8.tflite -> model_int8.tflite
        name = "-".join(p for p in rel.parts if p not in ("export", "checkpoints"))
        return run.root / f"evaluation-{name or target.stem}{tag}"
    return Path("evaluations") / f"{target.stem or target.name}{tag}-{time.strftime('%Y%m%d-%H%M%S')}"


def _is_runs_model(target: Path, run: RunFolder) -> bool:
    return target.resolve() in (run.root.resolve(), run.model.resolve())


def _check_split(split: str | None, run: RunFolder | None) -> str:
    split = split or ("test" if run is not None else "all")
    if split not in SPLITS:
        raise ConfigError(f"--split must be one of {', '.join(SPLITS)}; received {split!r}.")
    return split


def _needed(split: str, run: RunFolder | None) -> set[str]:
    """The splits to predict: the evaluated one, val (calibration), and a run's out-of-sample ones (suspects)."""
    if split == "all":
        return {"train", "val", "test"}
    return {split, "val"} | (set(OUT_OF_SAMPLE) if run is not None else set())


def _prepare(run: RunFolder | None, data: str | None, target: Path) -> PreparedData:
    """The run's data and exact split (``data`` overrides where it lives), or ``data`` split as fit would."""
    if run is not None:
        spec = data or config_mod.from_yaml_file(run.config).data.data
        return prepare_data(spec, split_file=run.split, min_images=0, for_training=False)
    if not data:
        raise ConfigError(f"{target} is not inside a run folder, so its data is unknown: pass --data with the "
                          "images to evaluate on (a class-folder tree, a CSV manifest, ...).")
    return prepare_data(data, min_images=0, for_training=False)


def _class_index(prepared: PreparedData, predictor: Predictor) -> dict[str, int]:
    """Data class name -> the model's output index; every data class must be one the model knows."""
    index = {name: i for i, name in enumerate(predictor.labels)}
    unknown = [c for c in prepared.classes if c not in index]
    if unknown:
        raise DataError(f"The data has class(es) {unknown[:5]} that the model does not know (its classes: "
                        f"{predictor.labels[:10]}). Evaluate on data labelled with the model's classes.")
    return index


def _score(predictor: Predictor, prepared: PreparedData, classes: dict[str, int], splits: set[str],
           batch_size: int, progress: bool | None) -> Scored:
    records = [r for r in prepared.records if r.split in splits]
    results = predictor.predict_files([r.decode_path for r in records], batch_size=batch_size, progress=progress)
    failed = [(r, res) for r, res in zip(records, results) if not res.ok]
    if failed:
        log.warning("%d image(s) could not be predicted and are not scored (first: %s: %s)",
                    len(failed), failed[0][0].path, failed[0][1].error)
    kept = [(r, res.probabilities) for r, res in zip(records, results) if res.ok]
    y = np.array([classes[r.label] for r, _ in kept], np.int64)
    probs = np.stack([p for _, p in kept]) if kept else np.zeros((0, predictor.num_classes), np.float32)
    return Scored([r for r, _ in kept], y, probs.astype(np.float64))


def _report(target, predictor, run, prepared, split, scored, evaluated, cross_validate, folder, batch_size,
            extra: dict) -> dict:
    labels = predictor.labels
    metrics = classification_metrics(evaluated.y, evaluated.probs, labels)
    val = scored.where(lambda r: r.split == "val")
    calibration = calibration_report(evaluated.y, evaluated.probs, val.y, val.probs, "val") if len(val) >= 2 \
        else calibration_report(evaluated.y, evaluated.probs)
    threshold = _threshold(evaluated, val, labels) if len(labels) == 2 else None
    suspects, pool_name, pool_size = _suspects(run, scored, evaluated, labels, cross_validate, prepared, predictor, batch_size)
    write_suspects(folder / "suspect_labels.csv", suspects)
    _write_predictions(folder / "predictions.csv", evaluated, labels)
    write_json(folder / CALIBRATION_FILE, _calibration_file(calibration, threshold, target))
    report = {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "model": {"name": run.root.name if run and _is_runs_model(target, run) else target.name,
                  "path": str(target), "kind": predictor.kind, "image_size": predictor.image_size,
                  "resize": predictor.resize, "labels": labels},
        "run": str(run.root) if run else None,
        "data": {"source": str(prepared.source.root), "split": split, "images": len(evaluated),
                 "per_split": {s: sum(c.values()) for s, c in prepared.counts().items()},
                 "not_predicted": len([r for r in prepared.records if split in ("all", r.split)]) - len(evaluated)},
        "headline": headline(metrics),
        "metrics": metrics,
        "calibration": calibration,
        "threshold": threshold,
        "suspects": {"method": METHOD, "source": pool_name, "images": pool_size,
                     "count": len(suspects), "shown": SUSPECTS_SHOWN, "file": "suspect_labels.csv",
                     "top": suspects[:SUSPECTS_SHOWN]},
        **extra,
    }
    pictures = _plots(folder / "plots", evaluated, labels, metrics, calibration, threshold, run)
    report["plots"] = {name: str(p.relative_to(folder)) for name, p in pictures.items()}
    mistakes, image_paths = _worst_mistakes(evaluated, labels), {r.path: r.decode_path for r in scored.records}
    heat = _heat_maps(predictor, mistakes, suspects[:SUSPECTS_SHOWN], image_paths)
    report["gradcam"] = len(heat) > 0
    write_report_html(folder / "report.html", report, pictures, mistakes, suspects[:SUSPECTS_SHOWN], image_paths, heat)
    return report


def _heat_maps(predictor, mistakes: list[dict], suspects: list[dict], image_paths: dict[str, str]) -> dict:
    """(path, class) -> Grad-CAM data URI of the true and predicted (given and suggested) classes of the gallery's
    images; empty for a model without gradients (a .tflite file, a SavedModel)."""
    if predictor.kind != "keras":
        return {}
    from ..htmlpage import data_uri
    from ..inference.explain import overlay_pngs

    index = {name: i for i, name in enumerate(predictor.labels)}
    wanted = [(r["path"], c) for r in mistakes for c in (r["true"], r["predicted"])]
    wanted += [(r["path"], c) for r in suspects for c in (r["given_label"], r["suggested_label"])]
    wanted = list(dict.fromkeys(w for w in wanted if w[1] in index))
    pngs = overlay_pngs(predictor, [image_paths.get(p, p) for p, _ in wanted], [index[c] for _, c in wanted])
    return {key: data_uri(data, "image/png") for key, data in zip(wanted, pngs) if data is not None}


def _threshold(evaluated: Scored, val: Scored, labels: list[str]) -> dict:
    """Binary tasks: the F1-best threshold on P(second class), fitted on val when it has both classes."""
    fit_on, name = (val, "val") if len(set(val.y.tolist())) == 2 else (evaluated, "evaluated split")
    found = best_f1_threshold(fit_on.y, fit_on.probs, positive=1)
    return {**found, "positive_label": labels[1], "fitted_on": name,
            "on_evaluated_split": at_threshold(evaluated.y, evaluated.probs, found["threshold"])}


def _suspects(run, scored, evaluated, labels, cross_validate, prepared, predictor, batch_size):
    """Suspect rows over out-of-sample probabilities, where those came from, and how many images they cover."""
    if cross_validate:
        pool, name = cross_validated(run, prepared, predictor.labels, cross_validate, batch_size), \
            f"{cross_validate}-fold cross-validated probabilities of every image"
    elif run is not None:
        pool, name = scored.where(lambda r: r.split in OUT_OF_SAMPLE), "the validation and test splits"
    else:
        pool, name = evaluated, "the evaluated images"
    rows = find_suspects(pool.y, pool.probs, labels, [r.path for r in pool.records], [r.split for r in pool.records])
    return rows, name, len(pool)


def _worst_mistakes(evaluated: Scored, labels: list[str]) -> list[dict]:
    pred = evaluated.probs.argmax(axis=1)
    wrong = np.flatnonzero(pred != evaluated.y)
    wrong = wrong[np.argsort(-evaluated.probs[wrong, pred[wrong]], kind="stable")][:GALLERY]
    return [{"path": evaluated.records[i].path, "true": labels[evaluated.y[i]], "predicted": labels[pred[i]],
             "confidence": float(evaluated.probs[i, pred[i]])} for i in wrong]


def _plots(folder: Path, evaluated: Scored, labels, metrics, calibration, threshold, run) -> dict[str, Path]:
    out = {
        "confusion_matrix": plot.confusion_matrix(folder / "confusion_matrix.png", metrics["confusion_matrix"]),
        "roc": plot.roc_curves(folder / "roc.png", evaluated.y, evaluated.probs, labels, metrics),
        "precision_recall": plot.pr_curves(folder / "precision_recall.png", evaluated.y, evaluated.probs, labels,
                                           metrics),
        "reliability": plot.reliability(folder / "reliability.png", calibration),
    }
    if threshold:
        out["threshold"] = plot.threshold_curve(folder / "threshold.png", threshold, labels[1])
    curves = plot.training_curves(folder / "training_curves.png", run.history) if run else None
    if curves:
        out["training_curves"] = curves
    return out


def _write_predictions(path: Path, evaluated: Scored, labels: list[str]) -> None:
    pred = evaluated.probs.argmax(axis=1)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(("path", "split", "label", "predicted", "confidence", "label_probability"))
        for r, y, k, p in zip(evaluated.records, evaluated.y, pred, evaluated.probs):
            w.writerow((r.path, r.split, labels[y], labels[k], f"{p[k]:.6f}", f"{p[y]:.6f}"))


def _calibration_file(calibration: dict, threshold: dict | None, target: Path) -> dict:
    doc = {"temperature": calibration["temperature"], "fitted_on": calibration["fitted_on"],
           "fitted_images": calibration["fitted_images"], "not_fitted": calibration["not_fitted"], "model": str(target),
           "ece": calibration["ece"], "ece_calibrated": calibration["ece_calibrated"]}
    if threshold:
        doc["threshold"] = {"positive_label": threshold["positive_label"], "value": threshold["threshold"],
                            "fitted_on": threshold["fitted_on"]}
    return doc


def _update_run(run: RunFolder, report: dict, split: str, folder: Path) -> None:
    """The run's own model: its calibration.json, metrics.json's headline figures, TensorBoard, MODEL_CARD.md."""
    # Always written: a temperature kept at 1 (and why) replaces one an earlier evaluation fitted.
    write_json(run.root / CALIBRATION_FILE, _calibration_file(report["calibration"], report["threshold"], run.model))
    if split == "test" and run.metrics.is_file():
        metrics = run.read_json(run.metrics)
        test = metrics.get("test") or {}
        extra = {k: v for k, v in report["headline"].items() if k not in ("accuracy",)}
        metrics["test"] = {**test, **extra, "ece": report["calibration"]["ece"],
                           "temperature": report["calibration"]["temperature"], "report": str(folder / "report.html")}
        write_json(run.metrics, metrics)
    from .tensorboard import write_summaries

    write_summaries(run.logs / "evaluation", report, folder)
    from .card import write_model_card

    write_model_card(run.root, evaluation=folder)
