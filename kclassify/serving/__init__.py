"""Serving: an HTTP API over :mod:`kclassify.inference` (FastAPI + uvicorn).

``serve(run_or_model)`` runs it; ``create_app(load_served(...))`` gives the ASGI app (for tests,
or to mount in another server). Imports FastAPI, and TensorFlow only when a model loads.
"""

from .app import Settings, create_app
from .model import BACKENDS, ServedModel, load_served
from .serve import serve

__all__ = ["BACKENDS", "ServedModel", "Settings", "create_app", "load_served", "serve"]
