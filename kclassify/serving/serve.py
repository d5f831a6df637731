"""``serve``: load the model, build the app, run it under uvicorn until SIGTERM or Ctrl-C.

uvicorn stops taking connections on SIGTERM/SIGINT, lets the requests in flight finish (up to
``GRACE_S``), then runs the app's shutdown, which drains the batcher. ``--workers N`` runs N
processes (uvicorn's own supervisor), each loading the model; they share the port.
"""

from __future__ import annotations

import json
import logging
import os

from ..settings import ServeSettings
from .app import Settings, create_app
from .model import load_served

log = logging.getLogger(__name__)
S = ServeSettings  # the defaults

GRACE_S = 30
ENV_KEY = "KCLASSIFY_API_KEY"
ENV_SETTINGS = "KCLASSIFY_SERVE_SETTINGS"  # how --workers hands the settings to each worker process


def serve(target, *, host: str = S.host, port: int = S.port, backend: str = S.backend, workers: int = S.workers,
          max_batch: int = S.max_batch, batch_timeout_ms: float = S.batch_timeout_ms, max_body_mb: float = S.max_body_mb,
          api_key: str | None = None, threads: int | None = None, model_name: str | None = None,
          tta: str = S.tta, log_level: str = "info") -> None:
    """Serve a run folder or model file over HTTP until stopped.

    Args:
        target: a run folder (its gated TFLite export with ``backend="auto"``) or a model file.
        api_key: required on every endpoint but the health checks (default: ``$KCLASSIFY_API_KEY``).
        host, port, backend, workers, max_batch, batch_timeout_ms, max_body_mb, threads, model_name, tta:
            as :class:`kclassify.settings.ServeSettings` (defaults and checks).

    Example:
        >>> serve("saved_models/scenes", port=8080)   # then: curl -T cat.jpg -H 'Content-Type: image/jpeg' ...
    """
    import uvicorn

    options = {"target": str(target), "backend": backend, "threads": threads, "model_name": model_name, "tta": tta,
               "max_batch": max_batch, "batch_timeout_ms": batch_timeout_ms, "max_body_mb": max_body_mb,
               "api_key": api_key or os.environ.get(ENV_KEY)}
    ServeSettings(host=host, port=port, backend=backend, workers=workers, max_batch=max_batch,
                  batch_timeout_ms=batch_timeout_ms, max_body_mb=max_body_mb, threads=threads,
                  model_name=model_name, tta=tta).check()
    if host not in ("127.0.0.1", "localhost", "::1") and not options["api_key"]:
        log.warning("serving on %s without --api-key: anyone who can reach this port can use the model", host)
    config = dict(host=host, port=port, log_level=log_level, timeout_graceful_shutdown=GRACE_S,
                  access_log=log_level == "debug")
    if workers > 1:
        os.environ[ENV_SETTINGS] = json.dumps(options)
        uvicorn.run("kclassify.serving.serve:app_from_environment", factory=True, workers=workers, **config)
    else:
        uvicorn.run(build_app(options), **config)


def build_app(options: dict):
    served = load_served(options["target"], options["backend"], threads=options["threads"], name=options["model_name"],
                         tta=options.get("tta", "none"))
    settings = Settings(options["max_batch"], options["batch_timeout_ms"], options["max_body_mb"], options["api_key"])
    return create_app(served, settings)


def app_from_environment():
    """uvicorn's factory in each ``--workers`` process."""
    return build_app(json.loads(os.environ[ENV_SETTINGS]))
