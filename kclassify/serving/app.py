"""The HTTP API (FastAPI): predict endpoints, TF Serving's REST shape, health, metadata, metrics, a web page.

Each request's bytes are decoded in a thread pool (the event loop never decodes), the decoded
images of concurrent requests are run as one batch (:mod:`.batcher`), and the scores get the
run's temperature. Every refusal is a JSON ``{"error": ...}`` with a 4xx status; an unexpected
failure is logged here and answered 500 without a trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..inference.calibration import apply_temperature
from ..inference.tfserving import rest_predict
from ..settings import MAX_PIXELS, ServeSettings
from .batcher import Batcher
from .guard import Guard
from .images import BadImage, Decoder
from .limits import BodyLimit, BodyTooLarge
from .model import ServedModel
from .page import render_page
from .telemetry import Telemetry
from .tfserving import signatures

log = logging.getLogger(__name__)

MAX_FILES = 64  # images in one :batch request
RAW_TYPES = ("image/", "application/octet-stream")


class Settings:
    def __init__(self, max_batch: int = ServeSettings.max_batch, batch_timeout_ms: float = ServeSettings.batch_timeout_ms,
                 max_body_mb: float = ServeSettings.max_body_mb, api_key: str | None = None, max_pixels: int = MAX_PIXELS,
                 decode_threads: int | None = None):
        self.max_batch = int(max_batch)
        self.batch_timeout_ms = float(batch_timeout_ms)
        self.max_body = int(max_body_mb * 1024 * 1024)
        self.api_key = api_key or None
        self.max_pixels = int(max_pixels)
        self.decode_threads = decode_threads or min(8, 2 * (os.cpu_count() or 1))


def create_app(served: ServedModel, settings: Settings | None = None) -> FastAPI:
    """The ASGI app serving ``served`` (run it with uvicorn, or test it with FastAPI's TestClient)."""
    settings = settings or Settings()
    telemetry = Telemetry()
    decoder = Decoder(served.predictor.image_size, settings.max_pixels)
    decode_pool = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="kclassify-decode")
    batcher = Batcher(served.predictor.predict_batch, settings.max_batch, settings.batch_timeout_ms,
                      observe=telemetry.batch_size.observe)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        # Warm up: the decoder's functions trace (a fraction of a second; docs/benchmarks.md, "kclassify serve
        # under load") and the model runs once before /readyz says ready.
        await batcher.predict(await asyncio.get_running_loop().run_in_executor(decode_pool, decoder.warm_up))
        telemetry.ready.set(1)
        app.state.ready = True
        yield
        app.state.ready = False
        telemetry.ready.set(0)
        await batcher.stop()  # uvicorn has already let the requests in flight finish
        decode_pool.shutdown(wait=True)

    app = FastAPI(title=f"kclassify: {served.name}", version=served.version, lifespan=lifespan,
                  description="Image classification served by kclassify. TF Serving clients: "
                  f"POST /v1/models/{served.name}:predict.")
    app.state.ready = False
    app.state.batcher = batcher
    app.add_middleware(BodyLimit, max_bytes=settings.max_body)
    app.add_middleware(Guard, api_key=settings.api_key, telemetry=telemetry)  # added last: runs first
    _add_error_handlers(app)

    async def scores(data: bytes) -> np.ndarray:
        batcher.expect()
        try:
            image = await asyncio.get_running_loop().run_in_executor(decode_pool, decoder, data)
        except BaseException:
            batcher.cancel()
            raise
        probs = await batcher.predict(image)
        return apply_temperature(probs[None], served.temperature)[0]

    def top(probs: np.ndarray, k: int) -> list[dict]:
        return [{"label": label, "score": round(score, 6)} for label, score in served.predictor.top_k(probs[None], k)[0]]

    _add_predict_routes(app, served, scores, top, settings)
    _add_explain_route(app, served, decoder, decode_pool)
    _add_info_routes(app, served, telemetry, settings)
    _add_tfserving_routes(app, served, decoder, batcher, decode_pool)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """JSON errors for everything that goes wrong; a crash is logged here and answered without details."""

    @app.exception_handler(BadImage)
    async def bad_image(request: Request, e: BadImage):
        return JSONResponse({"error": str(e)}, status_code=e.status)

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, e: BodyTooLarge):
        return JSONResponse({"error": str(e)}, status_code=413)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException):
        return JSONResponse({"error": str(e.detail)}, status_code=e.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid request')}"}, status_code=400)

    @app.exception_handler(Exception)
    async def crash(request: Request, e: Exception):
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"error": "internal error; the server log has the details"}, status_code=500)


def _add_predict_routes(app: FastAPI, served: ServedModel, scores, top, settings: Settings) -> None:
    labels = len(served.predictor.labels)

    @app.post("/v1/predict", summary="Classify one image (raw body image/*, or a multipart upload)")
    async def predict(request: Request, top_k: int = 5):
        started = time.perf_counter()
        k = _top_k(top_k, labels)
        data = (await _uploads(request, single=True))[0][1]
        probs = await scores(data)
        return {"predictions": top(probs, k), "model": served.name, "latency_ms": _ms(started)}

    @app.post("/v1/predict:batch", summary="Classify several images of one multipart request")
    async def predict_batch(request: Request, top_k: int = 5):
        started = time.perf_counter()
        k = _top_k(top_k, labels)
        files = await _uploads(request, single=False)
        outcomes = await asyncio.gather(*(scores(data) for _, data in files), return_exceptions=True)
        results = []
        for (name, _), outcome in zip(files, outcomes):
            if isinstance(outcome, BadImage):
                results.append({"filename": name, "error": str(outcome)})
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                results.append({"filename": name, "predictions": top(outcome, k)})
        return {"results": results, "model": served.name, "latency_ms": _ms(started)}


def _add_explain_route(app: FastAPI, served: ServedModel, decoder, decode_pool) -> None:
    """``POST /v1/explain``: the Grad-CAM overlay (PNG) of one image's top class, from the run's Keras model.

    The image goes through the same limits and decoding as ``/v1/predict``; the Keras model is loaded on
    the first request, on a thread of its own (the batcher's model thread serves predictions meanwhile).
    """
    model_thread = ThreadPoolExecutor(1, thread_name_prefix="kclassify-explain")
    loaded = {}

    def overlay(image: np.ndarray) -> tuple[bytes, str]:
        from ..inference import load_predictor
        from ..inference.explain import explain, png

        if "predictor" not in loaded:
            loaded["predictor"] = load_predictor(served.gradients)
        picture, klass = explain(loaded["predictor"], image[None])[0]
        return png(picture), loaded["predictor"].labels[klass]

    @app.post("/v1/explain", summary="Where the model looks: a Grad-CAM overlay (PNG) of one image's top class",
              responses={200: {"content": {"image/png": {}}}})
    async def explain_route(request: Request):
        if served.gradients is None:
            return JSONResponse({"error": f"Grad-CAM needs the gradients of a Keras model; this server runs "
                                          f"{served.predictor.path} alone ({served.predictor.kind}). Serve the run "
                                          "folder or a .keras file to explain."}, status_code=400)
        data = (await _uploads(request, single=True))[0][1]
        loop = asyncio.get_running_loop()
        image = await loop.run_in_executor(decode_pool, decoder, data)
        picture, label = await loop.run_in_executor(model_thread, overlay, image)
        return Response(picture, media_type="image/png", headers={"X-Class": label})


def _add_info_routes(app: FastAPI, served: ServedModel, telemetry: Telemetry, settings: Settings) -> None:
    meta = {**served.metadata(), "max_batch": settings.max_batch, "batch_timeout_ms": settings.batch_timeout_ms,
            "max_body_bytes": settings.max_body}

    @app.get("/healthz", summary="The process is alive")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", summary="The model is loaded and warmed up")
    async def readyz():
        if not app.state.ready:
            return JSONResponse({"status": "loading"}, status_code=503)
        return {"status": "ready"}

    @app.get("/v1/metadata", summary="Labels, input size, version and backend of the served model")
    async def metadata():
        return meta

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics():
        return Response(telemetry.render(), media_type=telemetry.content_type)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return render_page(meta, api_key=bool(settings.api_key))


def _add_tfserving_routes(app: FastAPI, served: ServedModel, decoder, batcher: Batcher, pool) -> None:
    def check(name: str) -> None:
        if name != served.name:
            raise StarletteHTTPException(404, f"Servable not found for request: Latest({name})")

    @app.post("/v1/models/{name}:predict", summary="TensorFlow Serving's REST predict")
    async def tf_predict(name: str, request: Request):
        check(name)
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "JSON Parse error: the body is not valid JSON"}, status_code=400)
        loop = asyncio.get_running_loop()
        sigs = signatures(served, decoder, lambda images: _run_in_batcher(loop, batcher, images))
        status, doc = await loop.run_in_executor(pool, rest_predict, sigs, body)
        return JSONResponse(doc, status_code=status)

    @app.get("/v1/models/{name}", summary="TensorFlow Serving's model status")
    async def tf_status(name: str):
        check(name)
        return {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                          "status": {"error_code": "OK", "error_message": ""}}]}


def _run_in_batcher(loop, batcher: Batcher, images: np.ndarray) -> np.ndarray:
    """From a worker thread: the images' probabilities, through the event loop's batcher."""
    async def all_of():
        for _ in images:
            batcher.expect()
        return await asyncio.gather(*(batcher.predict(image) for image in images))

    rows = asyncio.run_coroutine_threadsafe(all_of(), loop).result()
    return np.stack(rows) if rows else np.zeros((0, 0), np.float32)


async def _uploads(request: Request, single: bool) -> list[tuple[str, bytes]]:
    """(filename, bytes) of the images in a raw ``image/*`` body or a multipart form."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        async with request.form(max_files=MAX_FILES) as form:
            files = [(v.filename or k, await v.read()) for k, v in form.multi_items() if hasattr(v, "read")]
        if not files:
            raise BadImage("the multipart form has no file: send the image as a file field (e.g. -F file=@cat.jpg)")
        if single and len(files) > 1:
            raise BadImage(f"{len(files)} files sent to /v1/predict: send one, or use /v1/predict:batch")
        return files
    if single and ctype.startswith(RAW_TYPES):
        return [("body", await request.body())]
    expected = "multipart/form-data" if not single else "image/* (the file as the body) or multipart/form-data"
    raise BadImage(f"content type {ctype or 'missing'}: expected {expected}", 415)


def _top_k(k: int, labels: int) -> int:
    if k < 1:
        raise BadImage(f"top_k must be at least 1; received {k}")
    return min(k, labels)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
