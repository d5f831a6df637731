"""The ``kclassify`` argument parser: one subparser per command, each bound to its ``cmd_*`` function.

No TensorFlow here: ``kclassify --help`` and ``kclassify fit --help`` answer instantly.
"""

from __future__ import annotations

import argparse

from .. import __version__
from ..config import GROUPS, fields_by_name
from ..data.phone import RESIZES
from ..inference.tta import TTA_POLICIES
from ..settings import (BACKENDS, OUTPUT_FORMATS, PHONES, SPLIT_CHOICES, AuditSettings, CompareSettings,
                        ExportSettings, PredictSettings, ServeSettings)
from ..tuning.budget import FINAL_DATA
from .commands import (cmd_audit, cmd_compare, cmd_evaluate, cmd_export, cmd_fit, cmd_models, cmd_predict,
                       cmd_serve, cmd_tune)

EPILOG = "Settings: defaults < --config YAML < --hparams YAML < flags."


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per config field, default SUPPRESS so only typed flags override YAML."""
    from ..models import names as backbone_names

    table = fields_by_name()
    for group_name in GROUPS:
        group = parser.add_argument_group(f"{group_name} settings")
        for name, (g, f) in table.items():
            if g != group_name:
                continue
            flag = "--" + name.replace("_", "-")
            meta = f.metadata
            choices = backbone_names() if name == "backbone" else meta.get("choices")
            # a help text that explains its own default ("default: the backbone's") keeps it
            help_ = meta["help"] if "(default:" in meta["help"] else f"{meta['help']} (default: {f.default})"
            if f.type in ("bool", bool, "bool | None"):
                group.add_argument(flag, action=argparse.BooleanOptionalAction,
                                   default=argparse.SUPPRESS, help=help_)
            else:
                metavar = None if choices else name.upper()
                group.add_argument(flag, dest=name, default=argparse.SUPPRESS, metavar=metavar,
                                   choices=choices, help=help_)


def _duration(text: str) -> float:
    """'90s', '30m', '2h' or plain seconds -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        if text[-1:].lower() in units:
            return float(text[:-1]) * units[text[-1].lower()]
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a duration like 90s, 30m or 2h; received {text!r}") from None


def _count(text: str) -> int:
    """'250k', '5M', '1.5m' or a plain number -> an integer count."""
    units = {"k": 1_000, "m": 1_000_000, "g": 1_000_000_000}
    try:
        value = float(text[:-1]) * units[text[-1].lower()] if text[-1:].lower() in units else float(text)
    except ValueError:
        value = -1
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive count like 250k or 5M; received {text!r}")
    return int(value)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number; received {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kclassify",
        description="Image classification with TensorFlow/Keras: audit, tune, fit, evaluate, "
        "export, predict, serve.",
    )
    parser.add_argument("--version", action="version", version=f"kclassify {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_add_audit, _add_fit, _add_tune, _add_models, _add_evaluate, _add_compare, _add_export, _add_predict,
                _add_serve):
        add(sub)
    return parser


def _add_audit(sub) -> None:
    aud = sub.add_parser(
        "audit", help="find unreadable files, format quirks, odd sizes, duplicates, leakage and imbalance",
        description="Audit a data source (anything fit --data takes) before training: unreadable files, CMYK, 16-bit, "
        "palette, transparency, animation, EXIF rotation, lying extensions, tiny/extreme/huge images, exact and "
        "near-duplicates within a class, across classes and across train/val/test, class balance, stray files. "
        "Writes audit.json and audit.html; never changes your files.",
    )
    aud.add_argument("data", metavar="SRC", help="class-folder dir, pre-split dir, CSV manifest, tfds:NAME, builtin:NAME")
    aud.add_argument("--split-file", help="judge leakage by this split.csv (default: the split fit would compute)")
    d = AuditSettings()
    aud.add_argument("--near-dup-threshold", type=int, default=d.near_dup_threshold, metavar="BITS",
                     help="perceptual-hash bits (of 64) within which images are near copies "
                     f"(default: {d.near_dup_threshold})")
    aud.add_argument("--min-size", type=int, default=d.min_size, metavar="PX", help="shorter side under which an image "
                     f"is tiny (default: {d.min_size}; use your model's input size)")
    aud.add_argument("--max-aspect", type=float, default=d.max_aspect, metavar="R", help="longest/shortest side beyond "
                     f"which an image is extreme (default: {d.max_aspect:g})")
    aud.add_argument("--seed", type=int, default=d.seed, help="the split seed, when the split is computed (fit's default)")
    aud.add_argument("--output", "-o", help="report folder (default: saved_models/audit-<data>-<time>)")
    aud.add_argument("--write-manifest", metavar="CSV", help="write the usable files (path,label; one copy of each "
                     "duplicate, contradictory ones dropped) to this new CSV for fit --data")
    aud.set_defaults(func=cmd_audit)


def _add_fit(sub) -> None:
    fit = sub.add_parser(
        "fit", help="train a classifier into a run folder",
        description="Train a classifier and write a run folder. With no --data, trains on the "
        "built-in digits dataset. Run the same command again with the same --output to resume.",
        epilog=EPILOG,
    )
    fit.add_argument("--output", "-o", help="run folder (default: saved_models/<data>-<time>)")
    fit.add_argument("--config", help="YAML of settings (grouped as in a run's config.yaml, or flat)")
    fit.add_argument("--hparams", help="YAML of settings that override --config (e.g. best_hparams.yaml)")
    fit.add_argument("--quiet", action="store_true", help="no progress bar, one line per epoch")
    fit.add_argument("--time-budget", type=_duration, metavar="DURATION",
                     help="train for this long (90s, 30m, 2h; the evaluation after it included): as many epochs as "
                     "fit at the pace measured while training, the cosine schedule decaying over them; --epochs is "
                     "then the plan until the first batches are timed")
    _add_export_flags(fit, "after training, export the run (as `kclassify export RUN --formats ...`)")
    _add_setting_flags(fit)
    fit.set_defaults(func=cmd_fit)


def _add_tune(sub) -> None:
    tune = sub.add_parser(
        "tune", help="search hyperparameters with KerasTuner",
        description="Search fit's settings over a search-space YAML (search_spaces/*.yaml) with "
        "KerasTuner. Settings not searched come from flags/--config as for fit. Run the same command "
        "again to resume.",
        epilog=EPILOG,
    )
    tune.add_argument("--space", default="default", help="search-space YAML or a shipped name (default, mobile, transfer)")
    tune.add_argument("--algorithm", default="random", choices=("random", "bayesian", "hyperband"))
    tune.add_argument("--max-trials", type=int, default=10, help="number of trials (default: 10)")
    tune.add_argument("--objective", default="val_accuracy",
                      choices=("val_accuracy", "val_loss", "val_auc", "val_f1", "accuracy", "loss"))
    tune.add_argument("--time-budget", type=_duration, help="start no new trial after this long: 90s, 30m, 2h; with "
                      "--then-fit the budget covers retraining the best too (not with --distributed)")
    tune.add_argument("--executions-per-trial", type=int, default=1, help="fits per trial, averaged")
    tune.add_argument("--min-epochs", type=int, default=3, metavar="N",
                      help="hyperband: epochs of the smallest rung (default: 3; 1-epoch rungs rank BatchNorm "
                      "models trained from scratch on noise)")
    tune.add_argument("--output", "-o", help="tuning folder (default: saved_models/tune-<data>-<time>)")
    tune.add_argument("--config", help="YAML of the settings that are not searched")
    tune.add_argument("--then-fit", nargs="?", const="retrain", choices=("retrain", "reuse"), metavar="retrain|reuse",
                      help="write <output>/best_run: retrain the best settings for all epochs (the default), or "
                      "reuse the best trial's own model when it trained for all epochs")
    tune.add_argument("--final-share", type=float, metavar="F",
                      help="with --time-budget and --then-fit: keep this share of the budget (0-1, e.g. 0.5) for "
                      "the final fit, a fit --time-budget of the time left: as many epochs as it holds at the pace "
                      "measured while training; the trials rank settings in --epochs")
    tune.add_argument("--final-data", default="train", choices=tuple(FINAL_DATA),
                      help="with --then-fit (retrain): what the final model trains on: "
                      + "; ".join(f"{k}: {v}" for k, v in FINAL_DATA.items()) + " (default: train)")
    tune.add_argument("--distill", type=int, default=0, metavar="K",
                      help="with --then-fit (retrain): the final model also learns from the K best trials' own models "
                      "(an ensemble of teachers, as fit --teacher), within the same budget")
    tune.add_argument("--distributed", choices=("chief", "worker"),
                      help="KerasTuner's distributed mode: one chief serves trials, workers run them")
    tune.add_argument("--oracle", help="HOST:PORT of the chief (or KERASTUNER_ORACLE_IP/PORT)")
    tune.add_argument("--worker-id", help="unique name of this worker (default: host and process id)")
    tune.add_argument("--verbose-trials", action="store_true", help="Keras progress bar inside each trial")
    _add_export_flags(tune, "with --then-fit: export the retrained best run (search, retrain, export in one command)")
    budget = tune.add_argument_group(
        "deployment budget", "checked before a trial trains: a trial over it is recorded INFEASIBLE, not trained, "
        "and scored below every real trial; trials.csv, summary.md and pareto.png show score against cost")
    budget.add_argument("--max-params", type=_count, metavar="N", help="most parameters a model may have: 250k, 5M")
    budget.add_argument("--max-latency-ms", type=_positive, metavar="MS",
                        help="slowest single-image latency allowed, measured here through LiteRT")
    budget.add_argument("--measure-latency", action="store_true",
                        help="record LiteRT latency without a limit (one conversion per architecture, seconds each; "
                        "measured: docs/benchmarks.md, \"tune's time, draws, memory and latency\")")
    budget.add_argument("--latency-threads", type=int, default=1, metavar="N",
                        help="LiteRT threads when measuring latency (default: 1)")
    _add_setting_flags(tune)
    tune.set_defaults(func=cmd_tune)


def _add_models(sub) -> None:
    models = sub.add_parser(
        "models", help="list the backbones in the registry",
        description="List the registry's backbones. Parameter counts need TensorFlow and are "
        "computed once (slow for the whole zoo; measured: docs/benchmarks.md, \"kclassify models' parameter "
        "counts\"), then read from kclassify's cache.",
    )
    models.add_argument("--no-params", action="store_true", help="skip parameter counts (instant)")
    models.set_defaults(func=cmd_models)


def _add_evaluate(sub) -> None:
    ev = sub.add_parser(
        "evaluate", help="metrics, calibration, plots, suspect labels and an HTML report for a run or model",
        description="Score a run folder, or any model kclassify wrote (.keras, SavedModel, .tflite), on one split and "
        "write report.json, report.html (self-contained), predictions.csv, suspect_labels.csv, calibration.json and "
        "plots/. A model inside a run folder (RUN/export/*.tflite) is scored on the run's own data and split, so its "
        "report compares with the run's. fit writes this report at its end.",
    )
    _add_model_argument(ev, batch_size=True)
    ev.add_argument("--data", metavar="SRC", help="data source (default: the run's own; required outside a run folder)")
    ev.add_argument("--split", choices=("test", "val", "train", "all"),
                    help="which images (default: test for a run, all for a model with --data)")
    ev.add_argument("--output", "-o", help="report folder (default: RUN/evaluation, RUN/evaluation-<model>, or "
                    "evaluations/<model>-<time>)")
    ev.add_argument("--cross-validate", type=int, default=0, metavar="K",
                    help="retrain the run's recipe on K folds so every image gets an out-of-sample probability for "
                    "the suspect-label search (K trainings)")
    ev.add_argument("--preprocess", choices=tuple(RESIZES), default="kclassify",
                    help="how photos are resized to the model's input: " +
                    "; ".join(f"{k}: {v}" for k, v in RESIZES.items()) + " (writes to <report folder>-mediapipe)")
    _add_tta_flag(ev, " (scores the images with and without it, side by side; writes to <report folder>-tta-<policy>)")
    ev.set_defaults(func=cmd_evaluate)


def _add_compare(sub) -> None:
    cmp = sub.add_parser(
        "compare", help="is B really better than A? a paired comparison of two evaluations of the same images",
        description="Compare two evaluations of the same split image by image: the difference of accuracy and macro "
        "F1 (B - A) with 95% bootstrap intervals (the images resampled, the same draw for both) and McNemar's exact "
        "test on the images only one of them got right. Reads predictions.csv of kclassify evaluate, which fit and "
        "tune --then-fit write; no model runs.",
    )
    cmp.add_argument("a", metavar="A", help="run folder, tuning folder (its best_run), evaluation folder or "
                     "predictions.csv")
    cmp.add_argument("b", metavar="B", help="the same for the other model")
    d = CompareSettings()
    cmp.add_argument("--split", default=d.split, choices=SPLIT_CHOICES,
                     help=f"which images of the two evaluations (default: {d.split})")
    cmp.add_argument("--resamples", type=int, default=d.resamples, metavar="N",
                     help=f"bootstrap resamples (default: {d.resamples})")
    cmp.add_argument("--seed", type=int, default=d.seed, help=f"seed of the bootstrap draws (default: {d.seed})")
    cmp.add_argument("--json", action="store_true", help="print the comparison as JSON")
    cmp.set_defaults(func=cmd_compare)


def _add_export(sub) -> None:
    exp = sub.add_parser(
        "export", help="export a run folder to SavedModel and TFLite, each file checked",
        description="Export a finished run folder. Every file is loaded back, scored on the run's test split, "
        "compared with the Keras model and timed here; a format losing more than --max-accuracy-drop points "
        "is kept as rejected-<file> and the command exits 1. Formats: " + _format_list(),
    )
    exp.add_argument("run", help="run folder written by kclassify fit")
    exp.add_argument("--formats", default=None, metavar="LIST",
                     help="comma-separated formats, or all (default: savedmodel,tflite,tflite-int8)")
    exp.add_argument("--output", "-o", help="export folder (default: RUN/export)")
    _add_gate_flags(exp)
    exp.set_defaults(func=cmd_export)


def _add_predict(sub) -> None:
    pred = sub.add_parser(
        "predict", help="predict images with a run folder, .keras, SavedModel or .tflite",
        description="Predict image files and folders (searched recursively) with any model kclassify wrote. A "
        "file that cannot be read is reported and the rest are still predicted; the exit status is 1 when any "
        "file failed.",
    )
    _add_model_argument(pred, batch_size=True)
    pred.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR", help="image files or folders")
    d = PredictSettings()
    pred.add_argument("--top-k", type=int, default=d.top_k, metavar="K", help=f"classes per image (default: {d.top_k})")
    pred.add_argument("--format", default=d.output_format, choices=OUTPUT_FORMATS, dest="output_format",
                      help=f"output on stdout (default: {d.output_format})")
    pred.add_argument("--preprocess", choices=tuple(RESIZES), default="kclassify",
                      help="how photos are resized to the model's input (default: kclassify, as training did; "
                      "mediapipe: as MediaPipe's ImageClassifier does on a phone)")
    _add_tta_flag(pred, "")
    pred.add_argument("--explain", metavar="DIR", help="also write a Grad-CAM overlay of each image's predicted class "
                      "into DIR (<image>.<class>.gradcam.png; needs a run folder or .keras file)")
    pred.set_defaults(func=cmd_predict)


def _add_serve(sub) -> None:
    srv = sub.add_parser(
        "serve", help="serve a run or model over HTTP (FastAPI + uvicorn)",
        description="Serve a run folder or a model file over HTTP: POST /v1/predict (an image as the body or a "
        "multipart upload), POST /v1/predict:batch, TF Serving's POST /v1/models/NAME:predict, GET /healthz, /readyz, "
        "/v1/metadata, /metrics (Prometheus), /docs (OpenAPI) and a web page at /. Concurrent requests are run as "
        "batches. Stops on SIGTERM or Ctrl-C after the requests in flight finish.",
    )
    _add_model_argument(srv)
    d = ServeSettings()
    srv.add_argument("--host", default=d.host, help=f"address to bind (default: {d.host}, this machine only)")
    srv.add_argument("--port", type=int, default=d.port, help=f"port (default: {d.port})")
    srv.add_argument("--backend", default=d.backend, choices=BACKENDS,
                     help="auto: a run's exported TFLite file that passed export's gate (int8 first), else its Keras "
                     f"model (default: {d.backend})")
    srv.add_argument("--workers", type=int, default=d.workers, metavar="N",
                     help=f"server processes (default: {d.workers})")
    srv.add_argument("--max-batch", type=int, default=d.max_batch, metavar="N",
                     help=f"most images per model call (default: {d.max_batch})")
    srv.add_argument("--batch-timeout-ms", type=float, default=d.batch_timeout_ms, metavar="MS",
                     help="longest wait for a batch to fill while requests are arriving "
                     f"(default: {d.batch_timeout_ms:g})")
    srv.add_argument("--max-body-mb", type=float, default=d.max_body_mb, metavar="MB",
                     help=f"largest request body (default: {d.max_body_mb:g})")
    srv.add_argument("--api-key", help="require this key (X-API-Key or Authorization: Bearer) on every endpoint but "
                     "the health checks (default: $KCLASSIFY_API_KEY)")
    srv.add_argument("--model-name", help="the name in /v1/models/NAME:predict (default: the run folder's name)")
    _add_tta_flag(srv, " (on every request; one model call per view)")
    srv.set_defaults(func=cmd_serve)


def _add_model_argument(parser: argparse.ArgumentParser, batch_size: bool = False) -> None:
    """The artifact a command runs (anything ``load_predictor`` reads), its LiteRT threads, its batch size."""
    parser.add_argument("model", metavar="RUN_OR_MODEL", help="run folder, .keras file, SavedModel folder or .tflite file")
    parser.add_argument("--threads", type=int, default=None, metavar="N", help="LiteRT threads for .tflite files")
    if batch_size:
        size = PredictSettings.batch_size
        parser.add_argument("--batch-size", type=int, default=size, metavar="N",
                            help=f"images per batch (default: {size})")


def _add_tta_flag(parser: argparse.ArgumentParser, note: str) -> None:
    views = "; ".join(f"{k}: {v} ({n} model call{'s' if n > 1 else ''})" for k, (v, n) in TTA_POLICIES.items())
    parser.add_argument("--tta", choices=tuple(TTA_POLICIES), default=PredictSettings.tta,
                        help="test-time augmentation, the mean probabilities of several views of each image: "
                        + views.replace("%", "%%")  # argparse formats help with %: a policy's "87.5%" must stay text
                        + f" (default: {PredictSettings.tta}){note}")


def _format_list() -> str:
    from ..export.formats import FORMATS

    return "; ".join(f"{f.name} ({f.description})" for f in FORMATS.values()) + "."


def _add_gate_flags(parser: argparse.ArgumentParser) -> None:
    d = ExportSettings()
    parser.add_argument("--max-accuracy-drop", type=float, default=d.max_accuracy_drop, metavar="POINTS",
                        help="accuracy points a format may lose against the Keras model "
                        f"(default: {d.max_accuracy_drop})")
    parser.add_argument("--calibration-images", type=int, default=d.calibration_images, metavar="N",
                        help=f"training images that calibrate tflite-int8 (default: {d.calibration_images})")
    parser.add_argument("--threads", type=int, default=d.threads, metavar="N",
                        help=f"LiteRT threads when scoring and timing .tflite files (default: {d.threads})")
    parser.add_argument("--phone", choices=PHONES, default=d.phone,
                        help="score and gate each .tflite file also as a phone feeds it: mediapipe (MediaPipe's "
                        "ImageClassifier resize, no antialiasing), none (skip)")
    parser.add_argument("--data", dest="export_data", metavar="SRC",
                        help="the run's data source, if it moved since training (default: the run's own)")


def _add_export_flags(parser: argparse.ArgumentParser, help_: str) -> None:
    group = parser.add_argument_group("export")
    group.add_argument("--export", metavar="FORMATS", help=help_ + "; e.g. savedmodel,tflite,tflite-int8 or all")
    drop = ExportSettings.max_accuracy_drop
    group.add_argument("--max-accuracy-drop", type=float, default=drop, metavar="POINTS",
                       help=f"export gate: accuracy points a format may lose (default: {drop})")
