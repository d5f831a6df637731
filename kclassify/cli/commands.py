"""The ``kclassify`` commands: each parses nothing itself and calls one library function.

TensorFlow is imported inside the command that needs it, after the cheap checks of its settings.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from ..config import Config, fields_by_name, layered
from ..errors import ConfigError
from ..textfiles import text_table

log = logging.getLogger("kclassify")


def _settings_from_flags(args: argparse.Namespace) -> dict:
    table = fields_by_name()
    return {k: v for k, v in vars(args).items() if k in table}


def cmd_fit(args: argparse.Namespace) -> int:
    started = time.perf_counter()  # the time budget is the command's
    cfg = _resolve(args, args.hparams)
    _load_tensorflow(args)
    from ..training.fit import fit

    formats = _export_formats(args)
    result = fit(cfg, output=args.output, verbose=_keras_verbosity(args.quiet), time_budget=args.time_budget,
                 started=started)
    test = result.metrics.get("test")
    summary = f"test accuracy {test['accuracy']:.4f}, loss {test['loss']:.4f}" if test else "no test split"
    print(f"{result.run_dir}: {summary}")
    _report_after(result)
    return _export_after(result, formats, args)


def _report_after(result) -> None:
    """fit's last step: the evaluation report of the test split (the chief's, on a cluster)."""
    if not result.metrics.get("test"):
        return
    from ..evaluation import evaluate

    print(_evaluation_summary(evaluate(result.run_dir)))


def _keras_verbosity(quiet: bool = False):
    """Keras' progress bar on a terminal; one line per epoch in a file or a CI log (a bar there is
    thousands of ANSI-coloured fragments per epoch)."""
    return 2 if quiet or not sys.stdout.isatty() else "auto"


def _export_formats(args: argparse.Namespace) -> list[str] | None:
    """The formats of --export, checked before any training starts."""
    if not getattr(args, "export", None):
        return None
    from ..export.formats import parse_formats

    return parse_formats(args.export)


def _export_after(result, formats: list[str] | None, args: argparse.Namespace) -> int:
    """Export a run fit just finished; on a multi-worker cluster only the chief (it has the metrics) does."""
    if not formats or not result.metrics:
        return 0
    from ..export import export, format_table

    result = export(result.run_dir, formats, max_accuracy_drop=args.max_accuracy_drop)
    print(format_table(result))
    print(f"{result.folder}: {'exported' if result.ok else 'export FAILED its checks'}")
    return 0 if result.ok else 1


def _resolve(args: argparse.Namespace, hparams: str | None = None):
    """Settings from --config, --hparams and flags over the data's recommendations; checked early."""
    from ..data.builtin import recommended_settings

    flags = _settings_from_flags(args)
    cfg = layered(getattr(args, "config", None), hparams, flags, recommended=recommended_settings)
    if cfg.data.data == Config().data.data and "data" not in flags:
        log.info("using the built-in dataset %s (pass --data to train on your images)", cfg.data.data)
    from ..data import resolve_source
    from ..models import get

    # Bad settings and bad data paths fail here, in a fraction of a second, before TensorFlow loads.
    get(cfg.model.backbone)
    if not cfg.data.data.startswith("tfds:"):
        resolve_source(cfg.data.data)
    return cfg


def cmd_tune(args: argparse.Namespace) -> int:
    from ..tuning.budget import check_final_data, check_final_share, check_time_budget
    from ..tuning.space import load_space

    started = time.perf_counter()  # the time budget is the command's
    space = load_space(args.space)
    cfg = _resolve(args)
    formats = _export_formats(args)
    if formats and not args.then_fit:
        raise ConfigError("--export exports the retrained best run: add --then-fit, or export a run folder "
                          "with `kclassify export RUN`.")
    check_final_share(args.final_share, args.time_budget, args.then_fit)
    check_final_data(args.final_data, args.then_fit)
    from ..tuning.final import check_distill

    check_distill(args.distill, args.then_fit)
    check_time_budget(args.time_budget, args.distributed)
    _load_tensorflow(args)
    from ..tuning.tune import Budget, base_settings, configure_distributed, tune

    role = configure_distributed(args.distributed, args.oracle, args.worker_id)
    limits = Budget(max_params=args.max_params, max_latency_ms=args.max_latency_ms,
                    measure_latency=args.measure_latency, threads=args.latency_threads)
    result = tune(cfg, space, algorithm=args.algorithm, max_trials=args.max_trials, output=args.output,
                  objective=args.objective, executions_per_trial=args.executions_per_trial,
                  verbose=1 if args.verbose_trials else 0, distributed=role, time_budget=args.time_budget,
                  limits=limits, min_epochs=args.min_epochs, then_fit=args.then_fit, final_share=args.final_share,
                  started=started)
    if result is None:
        print("worker finished: the chief writes the results")
        return 0
    print(f"{result.folder}: best {args.objective} {result.best_score:.4f} with {result.best_hparams}")
    if result.note:
        print(result.note)
    if args.then_fit:
        from ..tuning.final import best_run

        # The search's own base settings and split, so the final run is the best trial's recipe.
        left = args.time_budget - (time.perf_counter() - started) if args.final_share else None
        run = best_run(result.folder, base_settings(result.folder, cfg), space, args.then_fit,
                       verbose=_keras_verbosity(not args.verbose_trials), seconds=left,
                       final_data=args.final_data, distill=args.distill)
        test = run.metrics.get("test")
        print(f"{run.run_dir}: test accuracy {test['accuracy']:.4f}" if test else f"{run.run_dir}: no test split")
        _report_after(run)
        return _export_after(run, formats, args)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from ..models import REGISTRY
    from ..models.build import parameter_counts

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    params = {} if args.no_params else parameter_counts(list(REGISTRY))
    rows = [("name", "default size", "min size", "parameters", "imagenet weights", "preprocessing")]
    rows += [(s.name, str(s.default_size), str(s.min_size),
              f"{params[s.name] / 1e6:.1f}M" if s.name in params else "-",
              "yes" if s.imagenet else "no", s.preprocessing)
             for s in REGISTRY.values()]
    print(text_table(rows))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..export.formats import parse_formats

    formats = parse_formats(args.formats)
    _load_tensorflow(args)
    from ..export import export, format_table

    result = export(args.run, formats, output=args.output, max_accuracy_drop=args.max_accuracy_drop,
                    data=args.export_data, calibration_images=args.calibration_images, threads=args.threads,
                    phone=args.phone)
    print(format_table(result))
    print(f"report: {result.folder / 'export_report.json'}")
    return 0 if result.ok else 1


def cmd_audit(args: argparse.Namespace) -> int:
    from ..data.audit import audit
    from ..data.audit_report import summary
    from ..settings import AuditSettings

    settings = AuditSettings(near_dup_threshold=args.near_dup_threshold, min_size=args.min_size,
                             max_aspect=args.max_aspect, seed=args.seed)
    result = audit(args.data, split_file=args.split_file, output=args.output, write_manifest=args.write_manifest,
                   settings=settings)
    print(summary(result.report, result.folder))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..settings import check_batch_size

    check_batch_size(args.batch_size)  # before TensorFlow loads; evaluate() checks it too
    _load_tensorflow(args)
    from ..evaluation import evaluate

    result = evaluate(args.model, data=args.data, split=args.split, batch_size=args.batch_size, output=args.output,
                      threads=args.threads, cross_validate=args.cross_validate, preprocess=args.preprocess,
                      tta=args.tta)
    print(_evaluation_summary(result))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    import json

    from ..evaluation.compare import compare

    result = compare(args.a, args.b, split=args.split, resamples=args.resamples, seed=args.seed)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.summary(args.a, args.b))
    return 0


def _evaluation_summary(result) -> str:
    """A few lines: the headline figures, calibration, suspects, where the report is."""
    r = result.report
    figures = "  ".join(f"{k} {v:.4f}" for k, v in result.headline.items() if v is not None)
    cal = r["calibration"]
    lines = [f"{r['model']['name']} on {r['data']['split']} ({r['data']['images']} images): {figures}",
             f"calibration: ECE {cal['ece']:.4f}" + (f" -> {cal['ece_calibrated']:.4f} at temperature "
                                                     f"{cal['temperature']:.3f} (fitted on {cal['fitted_on']})"
                                                     if cal["fitted_on"] else f" ({cal.get('not_fitted')})"),
             f"suspect labels: {r['suspects']['count']} of {r['suspects']['images']} ({r['suspects']['source']})",
             f"report: {result.folder / 'report.html'}"]
    if r.get("tta"):
        t, plain = r["tta"], r["tta"]["plain"]["accuracy"]
        lines.insert(1, f"test-time augmentation {t['policy']} ({t['views']} views): accuracy "
                        f"{result.headline['accuracy']:.4f} against {plain:.4f} without "
                        f"({100 * (result.headline['accuracy'] - plain):+.1f} points)")
    if r["threshold"]:
        t = r["threshold"]
        lines.insert(2, f"threshold: P({t['positive_label']}) >= {t['threshold']:.4f} maximises F1 ({t['fitted_on']})")
    return "\n".join(lines)


def cmd_predict(args: argparse.Namespace) -> int:
    from ..inference.outputs import expand_inputs, write_predictions
    from ..settings import PredictSettings

    PredictSettings(args.batch_size, args.top_k, args.output_format, args.tta).check()  # before TensorFlow loads
    files, skipped = expand_inputs(args.images)
    if not files:
        raise ConfigError(f"No image files in {', '.join(args.images)} ({skipped} non-image file(s) skipped). Pass "
                          "image files or folders holding them.")
    if skipped:
        log.info("skipped %d non-image file(s) inside the folders given", skipped)
    _load_tensorflow(args)
    from ..inference import load_predictor

    from ..data.phone import RESIZES

    predictor = load_predictor(args.model, threads=args.threads).with_resize(args.preprocess).with_tta(args.tta)
    if args.explain:
        from ..inference.explain import keras_model

        keras_model(predictor)  # a model without gradients is refused before anything is predicted
    (log.info if args.preprocess != "kclassify" else log.debug)(  # quiet by default: stdout is the answer
        "images resized to %d px by %s (%s)", predictor.image_size, args.preprocess, RESIZES[args.preprocess])
    results = predictor.predict_files(files, batch_size=args.batch_size)
    write_predictions(sys.stdout, results, predictor, args.top_k, args.output_format)
    if args.explain:
        from ..inference.explain import explain_files

        written = explain_files(predictor, [r.path for r in results if r.ok], args.explain)
        log.info("Grad-CAM overlays of %d image(s) in %s", len(written), args.explain)
    failed = [r for r in results if not r.ok]
    if failed:
        print(f"kclassify: {len(failed)} of {len(results)} file(s) could not be predicted", file=sys.stderr)
    return 1 if failed or not results else 0


def cmd_serve(args: argparse.Namespace) -> int:
    from ..settings import ServeSettings

    ServeSettings(host=args.host, port=args.port, backend=args.backend, workers=args.workers, max_batch=args.max_batch,
                  batch_timeout_ms=args.batch_timeout_ms, max_body_mb=args.max_body_mb, threads=args.threads,
                  model_name=args.model_name, tta=args.tta).check()  # before TensorFlow loads; serve() checks it too
    _load_tensorflow(args)
    from ..serving import serve

    serve(args.model, host=args.host, port=args.port, backend=args.backend, workers=args.workers,
          max_batch=args.max_batch, batch_timeout_ms=args.batch_timeout_ms, max_body_mb=args.max_body_mb,
          api_key=args.api_key, threads=args.threads, model_name=args.model_name, tta=args.tta,
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
