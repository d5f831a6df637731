"""The ``kclassify`` command line: parsing and wiring only.

Each subcommand parses its flags and calls one library function. TensorFlow is
imported only inside the command that needs it, so ``kclassify --help`` and
``kclassify fit --help`` stay instant.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from . import __version__
from .config import GROUPS, Config, fields_by_name, layered
from .errors import ConfigError, KClassifyError

log = logging.getLogger("kclassify")

EPILOG = "Settings: defaults < --config YAML < --hparams YAML < flags."


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per config field, default SUPPRESS so only typed flags override YAML."""
    from .models import names as backbone_names

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
            if f.type in ("bool", bool):
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
    for add in (_add_audit, _add_fit, _add_tune, _add_models, _add_evaluate, _add_export, _add_predict, _add_serve):
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
    aud.add_argument("--near-dup-threshold", type=int, default=8, metavar="BITS",
                     help="perceptual-hash bits (of 64) within which images are near copies (default: 8)")
    aud.add_argument("--min-size", type=int, default=32, metavar="PX", help="shorter side under which an image "
                     "is tiny (default: 32; use your model's input size)")
    aud.add_argument("--max-aspect", type=float, default=4.0, metavar="R", help="longest/shortest side beyond "
                     "which an image is extreme (default: 4)")
    aud.add_argument("--seed", type=int, default=42, help="the split seed, when the split is computed (fit's default)")
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
    tune.add_argument("--time-budget", type=_duration, help="start no new trial after this long: 90s, 30m, 2h")
    tune.add_argument("--executions-per-trial", type=int, default=1, help="fits per trial, averaged")
    tune.add_argument("--min-epochs", type=int, default=3, metavar="N",
                      help="hyperband: epochs of the smallest rung (default: 3; 1-epoch rungs rank BatchNorm "
                      "models trained from scratch on noise)")
    tune.add_argument("--output", "-o", help="tuning folder (default: saved_models/tune-<data>-<time>)")
    tune.add_argument("--config", help="YAML of the settings that are not searched")
    tune.add_argument("--then-fit", action="store_true",
                      help="retrain the best settings with the full epoch budget into <output>/best_run")
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
                        help="record LiteRT latency without a limit (one conversion per architecture, 2-15 s)")
    budget.add_argument("--latency-threads", type=int, default=1, metavar="N",
                        help="LiteRT threads when measuring latency (default: 1)")
    _add_setting_flags(tune)
    tune.set_defaults(func=cmd_tune)


def _add_models(sub) -> None:
    models = sub.add_parser(
        "models", help="list the backbones in the registry",
        description="List the registry's backbones. Parameter counts need TensorFlow and are "
        "computed once (about a minute for the whole zoo), then read from kclassify's cache.",
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
    ev.add_argument("model", metavar="RUN_OR_MODEL", help="run folder, .keras file, SavedModel folder or .tflite file")
    ev.add_argument("--data", metavar="SRC", help="data source (default: the run's own; required outside a run folder)")
    ev.add_argument("--split", choices=("test", "val", "train", "all"),
                    help="which images (default: test for a run, all for a model with --data)")
    ev.add_argument("--batch-size", type=int, default=32, metavar="N", help="images per batch (default: 32)")
    ev.add_argument("--output", "-o", help="report folder (default: RUN/evaluation, RUN/evaluation-<model>, or "
                    "evaluations/<model>-<time>)")
    ev.add_argument("--threads", type=int, default=None, metavar="N", help="LiteRT threads for .tflite files")
    ev.add_argument("--cross-validate", type=int, default=0, metavar="K",
                    help="retrain the run's recipe on K folds so every image gets an out-of-sample probability for "
                    "the suspect-label search (K trainings)")
    ev.set_defaults(func=cmd_evaluate)


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
    pred.add_argument("model", help="run folder, .keras file, SavedModel folder or .tflite file")
    pred.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR", help="image files or folders")
    pred.add_argument("--top-k", type=int, default=1, metavar="K", help="classes per image (default: 1)")
    pred.add_argument("--format", default="table", choices=("table", "json", "csv"), dest="output_format",
                      help="output on stdout (default: table)")
    pred.add_argument("--batch-size", type=int, default=32, metavar="N", help="images per batch (default: 32)")
    pred.add_argument("--threads", type=int, default=None, metavar="N", help="LiteRT threads for .tflite files")
    pred.set_defaults(func=cmd_predict)


def _add_serve(sub) -> None:
    srv = sub.add_parser(
        "serve", help="serve a run or model over HTTP (FastAPI + uvicorn)",
        description="Serve a run folder or a model file over HTTP: POST /v1/predict (an image as the body or a "
        "multipart upload), POST /v1/predict:batch, TF Serving's POST /v1/models/NAME:predict, GET /healthz, /readyz, "
        "/v1/metadata, /metrics (Prometheus), /docs (OpenAPI) and a web page at /. Concurrent requests are run as "
        "batches. Stops on SIGTERM or Ctrl-C after the requests in flight finish.",
    )
    srv.add_argument("model", metavar="RUN_OR_MODEL", help="run folder, .keras file, SavedModel folder or .tflite file")
    srv.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    srv.add_argument("--port", type=int, default=8080, help="port (default: 8080)")
    srv.add_argument("--backend", default="auto", choices=("auto", "tflite", "tf"),
                     help="auto: a run's exported TFLite file that passed export's gate (int8 first), else its Keras "
                     "model (default: auto)")
    srv.add_argument("--workers", type=int, default=1, metavar="N", help="server processes (default: 1)")
    srv.add_argument("--max-batch", type=int, default=16, metavar="N", help="most images per model call (default: 16)")
    srv.add_argument("--batch-timeout-ms", type=float, default=5.0, metavar="MS",
                     help="longest wait for a batch to fill while requests are arriving (default: 5)")
    srv.add_argument("--max-body-mb", type=float, default=10.0, metavar="MB", help="largest request body (default: 10)")
    srv.add_argument("--api-key", help="require this key (X-API-Key or Authorization: Bearer) on every endpoint but "
                     "the health checks (default: $KCLASSIFY_API_KEY)")
    srv.add_argument("--threads", type=int, default=None, metavar="N", help="LiteRT threads for .tflite models")
    srv.add_argument("--model-name", help="the name in /v1/models/NAME:predict (default: the run folder's name)")
    srv.set_defaults(func=cmd_serve)


def _format_list() -> str:
    from .export.formats import FORMATS

    return "; ".join(f"{f.name} ({f.description})" for f in FORMATS.values()) + "."


def _add_gate_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-accuracy-drop", type=float, default=1.0, metavar="POINTS",
                        help="accuracy points a format may lose against the Keras model (default: 1.0)")
    parser.add_argument("--calibration-images", type=int, default=200, metavar="N",
                        help="training images that calibrate tflite-int8 (default: 200)")
    parser.add_argument("--threads", type=int, default=1, metavar="N",
                        help="LiteRT threads when scoring and timing .tflite files (default: 1)")
    parser.add_argument("--data", dest="export_data", metavar="SRC",
                        help="the run's data source, if it moved since training (default: the run's own)")


def _add_export_flags(parser: argparse.ArgumentParser, help_: str) -> None:
    group = parser.add_argument_group("export")
    group.add_argument("--export", metavar="FORMATS", help=help_ + "; e.g. savedmodel,tflite,tflite-int8 or all")
    group.add_argument("--max-accuracy-drop", type=float, default=1.0, metavar="POINTS",
                       help="export gate: accuracy points a format may lose (default: 1.0)")


def _settings_from_flags(args: argparse.Namespace) -> dict:
    table = fields_by_name()
    return {k: v for k, v in vars(args).items() if k in table}


def cmd_fit(args: argparse.Namespace) -> int:
    cfg = _resolve(args, args.hparams)
    _load_tensorflow(args)
    from .training.fit import fit

    formats = _export_formats(args)
    result = fit(cfg, output=args.output, verbose=_keras_verbosity(args.quiet))
    test = result.metrics.get("test")
    summary = f"test accuracy {test['accuracy']:.4f}, loss {test['loss']:.4f}" if test else "no test split"
    print(f"{result.run_dir}: {summary}")
    _report_after(result)
    return _export_after(result, formats, args)


def _report_after(result) -> None:
    """fit's last step: the evaluation report of the test split (the chief's, on a cluster)."""
    if not result.metrics.get("test"):
        return
    from .evaluation import evaluate

    print(_evaluation_summary(evaluate(result.run_dir)))


def _keras_verbosity(quiet: bool = False):
    """Keras' progress bar on a terminal; one line per epoch in a file or a CI log (a bar there is
    thousands of ANSI-coloured fragments per epoch)."""
    return 2 if quiet or not sys.stdout.isatty() else "auto"


def _export_formats(args: argparse.Namespace) -> list[str] | None:
    """The formats of --export, checked before any training starts."""
    if not getattr(args, "export", None):
        return None
    from .export.formats import parse_formats

    return parse_formats(args.export)


def _export_after(result, formats: list[str] | None, args: argparse.Namespace) -> int:
    """Export a run fit just finished; on a multi-worker cluster only the chief (it has the metrics) does."""
    if not formats or not result.metrics:
        return 0
    from .export import export, format_table

    result = export(result.run_dir, formats, max_accuracy_drop=args.max_accuracy_drop)
    print(format_table(result))
    print(f"{result.folder}: {'exported' if result.ok else 'export FAILED its checks'}")
    return 0 if result.ok else 1


def _resolve(args: argparse.Namespace, hparams: str | None = None):
    """Settings from --config, --hparams and flags over the data's recommendations; checked early."""
    from .data.builtin import recommended_settings

    flags = _settings_from_flags(args)
    cfg = layered(getattr(args, "config", None), hparams, flags, recommended=recommended_settings)
    if cfg.data.data == Config().data.data and "data" not in flags:
        log.info("using the built-in dataset %s (pass --data to train on your images)", cfg.data.data)
    from .data import resolve_source
    from .models import get

    # Bad settings and bad data paths fail here, in a fraction of a second, before TensorFlow loads.
    get(cfg.model.backbone)
    if not cfg.data.data.startswith("tfds:"):
        resolve_source(cfg.data.data)
    return cfg


def cmd_tune(args: argparse.Namespace) -> int:
    from .tuning.space import load_space

    space = load_space(args.space)
    cfg = _resolve(args)
    formats = _export_formats(args)
    if formats and not args.then_fit:
        raise ConfigError("--export exports the retrained best run: add --then-fit, or export a run folder "
                          "with `kclassify export RUN`.")
    _load_tensorflow(args)
    from .tuning.tune import Budget, base_settings, configure_distributed, tune

    role = configure_distributed(args.distributed, args.oracle, args.worker_id)
    limits = Budget(max_params=args.max_params, max_latency_ms=args.max_latency_ms,
                    measure_latency=args.measure_latency, threads=args.latency_threads)
    result = tune(cfg, space, algorithm=args.algorithm, max_trials=args.max_trials, output=args.output,
                  objective=args.objective, executions_per_trial=args.executions_per_trial,
                  verbose=1 if args.verbose_trials else 0, distributed=role, time_budget=args.time_budget,
                  limits=limits, min_epochs=args.min_epochs)
    if result is None:
        print("worker finished: the chief writes the results")
        return 0
    print(f"{result.folder}: best {args.objective} {result.best_score:.4f} with {result.best_hparams}")
    if args.then_fit:
        from .training.fit import fit

        # The search's own base settings and split, so the retrained run is the best trial's recipe.
        run = fit(base_settings(result.folder, cfg).replace(**result.best_hparams), output=result.folder / "best_run",
                  verbose=_keras_verbosity(not args.verbose_trials))
        test = run.metrics.get("test")
        print(f"{run.run_dir}: test accuracy {test['accuracy']:.4f}" if test else f"{run.run_dir}: no test split")
        _report_after(run)
        return _export_after(run, formats, args)
    return 0


def _parameter_counts(names: list[str]) -> dict[str, int]:
    """Backbone parameter counts, cached per Keras version in kclassify's cache folder."""
    import json
    from importlib import metadata

    from .data import cache_dir

    path = cache_dir() / f"backbone_parameters-keras{metadata.version('keras')}.json"
    counts = json.loads(path.read_text()) if path.is_file() else {}
    missing = [n for n in names if n not in counts]
    if missing:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        from .models.build import count_parameters

        for i, name in enumerate(missing, 1):
            log.info("counting parameters %d/%d: %s", i, len(missing), name)
            counts[name] = count_parameters(name)
        path.write_text(json.dumps(counts, indent=1))
    return counts


def cmd_models(args: argparse.Namespace) -> int:
    from .models import REGISTRY

    params = {} if args.no_params else _parameter_counts(list(REGISTRY))
    rows = [("name", "default size", "min size", "parameters", "imagenet weights", "preprocessing")]
    rows += [(s.name, str(s.default_size), str(s.min_size),
              f"{params[s.name] / 1e6:.1f}M" if s.name in params else "-",
              "yes" if s.imagenet else "no", s.preprocessing)
             for s in REGISTRY.values()]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export.formats import parse_formats

    formats = parse_formats(args.formats)
    _load_tensorflow(args)
    from .export import export, format_table

    result = export(args.run, formats, output=args.output, max_accuracy_drop=args.max_accuracy_drop,
                    data=args.export_data, calibration_images=args.calibration_images, threads=args.threads)
    print(format_table(result))
    print(f"report: {result.folder / 'export_report.json'}")
    return 0 if result.ok else 1


def cmd_audit(args: argparse.Namespace) -> int:
    from .data.audit import AuditSettings, audit
    from .data.audit_report import summary

    settings = AuditSettings(near_dup_threshold=args.near_dup_threshold, min_size=args.min_size,
                             max_aspect=args.max_aspect, seed=args.seed)
    result = audit(args.data, split_file=args.split_file, output=args.output, write_manifest=args.write_manifest,
                   settings=settings)
    print(summary(result.report, result.folder))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1; received {args.batch_size}.")
    _load_tensorflow(args)
    from .evaluation import evaluate

    result = evaluate(args.model, data=args.data, split=args.split, batch_size=args.batch_size, output=args.output,
                      threads=args.threads, cross_validate=args.cross_validate)
    print(_evaluation_summary(result))
    return 0


def _evaluation_summary(result) -> str:
    """A few lines: the headline figures, calibration, suspects, where the report is."""
    r = result.report
    figures = "  ".join(f"{k} {v:.4f}" for k, v in result.headline.items() if v is not None)
    cal = r["calibration"]
    lines = [f"{r['model']['name']} on {r['data']['split']} ({r['data']['images']} images): {figures}",
             f"calibration: ECE {cal['ece']:.4f}" + (f" -> {cal['ece_calibrated']:.4f} at temperature "
                                                     f"{cal['temperature']:.3f} (fitted on {cal['fitted_on']})"
                                                     if cal["fitted_on"] else " (no validation images to fit a temperature)"),
             f"suspect labels: {r['suspects']['count']} of {r['suspects']['images']} ({r['suspects']['source']})",
             f"report: {result.folder / 'report.html'}"]
    if r["threshold"]:
        t = r["threshold"]
        lines.insert(2, f"threshold: P({t['positive_label']}) >= {t['threshold']:.4f} maximises F1 ({t['fitted_on']})")
    return "\n".join(lines)


def cmd_predict(args: argparse.Namespace) -> int:
    from .inference.outputs import expand_inputs, write_predictions

    if args.top_k < 1 or args.batch_size < 1:
        raise ConfigError(f"--top-k and --batch-size must be at least 1; received {args.top_k} and {args.batch_size}.")
    files, skipped = expand_inputs(args.images)
    if not files:
        raise ConfigError(f"No image files in {', '.join(args.images)} ({skipped} non-image file(s) skipped). Pass "
                          "image files or folders holding them.")
    if skipped:
        log.info("skipped %d non-image file(s) inside the folders given", skipped)
    _load_tensorflow(args)
    from .inference import load_predictor

    predictor = load_predictor(args.model, threads=args.threads)
    results = predictor.predict_files(files, batch_size=args.batch_size)
    write_predictions(sys.stdout, results, predictor, args.top_k, args.output_format)
    failed = [r for r in results if not r.ok]
    if failed:
        print(f"kclassify: {len(failed)} of {len(results)} file(s) could not be predicted", file=sys.stderr)
    return 1 if failed or not results else 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .serving.serve import check_settings

    check_settings(args.workers, args.port, args.max_batch, args.batch_timeout_ms, args.max_body_mb)
    _load_tensorflow(args)
    from .serving import serve

    serve(args.model, host=args.host, port=args.port, backend=args.backend, workers=args.workers,
          max_batch=args.max_batch, batch_timeout_ms=args.batch_timeout_ms, max_body_mb=args.max_body_mb,
          api_key=args.api_key, threads=args.threads, model_name=args.model_name,
          log_level="debug" if args.verbose > 1 else "info")
    return 0


def _load_tensorflow(args: argparse.Namespace) -> None:
    """Load TensorFlow once a command's cheap checks passed; quietly unless ``-v``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not args.verbose:
        _import_tensorflow_quietly()


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow with its C++ start-up lines hidden (``-v`` shows them).

    TensorFlow's native logging prints before absl is initialised, so TF_CPP_MIN_LOG_LEVEL does
    not reach it: every run began with oneDNN and "could not find cuda drivers" notices, twice,
    and a cuInit error on CPU-only machines. They go to the file descriptor, not to
    ``sys.stderr``, so it is the descriptor that is pointed at /dev/null while TensorFlow loads
    and probes its devices; a failing import still raises, and is reported, after it.
    """
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow as tf

        tf.config.list_physical_devices()  # the CUDA probe, and its error on CPU-only machines
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(  # other libraries (TensorFlow's "Assets written to ...") only from -vv on
        level=logging.DEBUG if args.verbose > 1 else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s" if args.verbose else "%(message)s",
    )
    log.setLevel(logging.DEBUG if args.verbose > 1 else logging.INFO)
    if not args.command:
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except KClassifyError as e:
        print(f"kclassify: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kclassify: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
