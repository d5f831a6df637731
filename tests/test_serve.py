"""serve: every endpoint, every refusal, batching under concurrency, TF Serving shapes, the key, the page."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import bomb_png, make_image

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from kclassify.serving import Settings, create_app, load_served  # noqa: E402
from kclassify.serving.batcher import Batcher  # noqa: E402


def encode(array: np.ndarray, fmt: str = "PNG") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, fmt)
    return buf.getvalue()


RED, GREEN, BLUE = (encode(make_image(k, 40, seed=77)) for k in range(3))  # cat, dog, fox in tiny_run


@pytest.fixture(scope="module")
def served(tiny_run):
    return load_served(tiny_run)


@pytest.fixture(scope="module")
def client(served):
    with TestClient(create_app(served, Settings(max_body_mb=1))) as c:
        yield c


def post_image(client, data: bytes, ctype: str = "image/png", **params):
    return client.post("/v1/predict", content=data, headers={"Content-Type": ctype}, params=params)


# ---------------------------------------------------------------- the endpoints

def test_health_ready_metadata_and_openapi(client, served, tiny_run):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    meta = client.get("/v1/metadata").json()
    assert meta["labels"] == (tiny_run / "labels.txt").read_text().split() and meta["image_size"] == 16
    assert meta["backend"] == "keras" and meta["model"] == tiny_run.name and meta["version"]
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/predict", "/v1/predict:batch", "/v1/models/{name}:predict", "/v1/metadata"} <= set(paths)


def test_predict_raw_body_and_multipart_agree(client):
    raw = post_image(client, RED)
    assert raw.status_code == 200
    body = raw.json()
    assert [p["label"] for p in body["predictions"]][0] == "cat" and len(body["predictions"]) == 3
    scores = [p["score"] for p in body["predictions"]]
    assert scores == sorted(scores, reverse=True) and sum(scores) == pytest.approx(1, abs=1e-4)
    assert body["latency_ms"] > 0 and body["model"]
    form = client.post("/v1/predict", files={"file": ("red.png", RED, "image/png")}, params={"top_k": 1}).json()
    assert form["predictions"] == body["predictions"][:1]
    assert post_image(client, BLUE, top_k=2).json()["predictions"][0]["label"] == "fox"


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF", "BMP", "WEBP", "GIF"])
def test_every_training_format_is_served(client, fmt):
    from PIL import Image

    image = Image.fromarray(make_image(0, 40, seed=9))
    if fmt == "BMP":
        image = image.convert("P")  # palette BMP: TensorFlow misreads it, so Pillow decodes it (as training does)
    buf = io.BytesIO()
    image.save(buf, fmt)
    response = post_image(client, buf.getvalue(), f"image/{fmt.lower()}")
    assert response.status_code == 200 and response.json()["predictions"][0]["label"] == "cat"


def test_batch_endpoint_answers_each_file(client):
    files = [("file", ("g.png", GREEN, "image/png")), ("file", ("r.png", RED, "image/png")),
             ("file", ("notes.jpg", b"shopping list", "image/jpeg")), ("file", ("b.png", BLUE, "image/png"))]
    body = client.post("/v1/predict:batch", files=files, params={"top_k": 1}).json()
    got = [(r["filename"], r["predictions"][0]["label"] if "predictions" in r else "error") for r in body["results"]]
    assert got == [("g.png", "dog"), ("r.png", "cat"), ("notes.jpg", "error"), ("b.png", "fox")]
    assert "not an image" in body["results"][2]["error"]


@pytest.mark.parametrize("data,ctype,status,words", [
    (b"", "image/png", 400, "empty body"),
    (b"this is not an image at all", "image/jpeg", 400, "not an image"),
    (RED[: len(RED) // 2], "image/png", 400, "truncated or corrupt"),
    (RED, "text/plain", 415, "content type text/plain"),
    (b'{"image": 1}', "application/json", 415, "expected image/*"),
    (bomb_png(), "image/png", 413, "decompression bomb"),
    (bomb_png(8000), "image/png", 413, "8000x8000 pixels"),  # 64 MP: over our 40, under Pillow's own 179
])
def test_bad_input_gets_a_json_error(client, data, ctype, status, words):
    response = post_image(client, data, ctype)
    assert response.status_code == status, response.text
    assert words in response.json()["error"] and "Traceback" not in response.text


def test_truncated_jpeg_and_top_k(client):
    jpeg = encode(make_image(0, 64, seed=3), "JPEG")
    assert post_image(client, jpeg[:300], "image/jpeg").status_code == 400
    assert post_image(client, RED, top_k=0).status_code == 400
    assert post_image(client, RED, top_k="many").status_code == 400


def test_a_body_over_the_limit_is_refused_before_it_is_read(client):
    big = b"\xff" * (1024 * 1024 + 10)
    response = post_image(client, big)
    assert response.status_code == 413 and "1 MB" in response.json()["error"]

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(40):
            yield b"\0" * 65536

    response = client.post("/v1/predict", content=chunks(), headers={"Content-Type": "image/png"})
    assert response.status_code == 413


def test_the_bomb_is_refused_without_allocating_it(client):
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(3):
        assert post_image(client, bomb_png(), "image/png").status_code == 413
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 50  # decoding it would need 400 MB (20000 x 20000 grey bytes)


def test_unexpected_failures_are_500_without_details(served):
    app = create_app(served)
    with TestClient(app, raise_server_exceptions=False) as c:
        original = served.predictor.predict_batch
        app.state.batcher.predict_batch = lambda images: (_ for _ in ()).throw(RuntimeError("secret detail"))
        try:
            response = post_image(c, RED)
        finally:
            app.state.batcher.predict_batch = original
        assert response.status_code == 500 and "secret" not in response.text and "Traceback" not in response.text
        assert post_image(c, RED).status_code == 200  # and the server goes on


# ---------------------------------------------------------------- TF Serving's REST shape

def test_tf_serving_rows_columns_and_images(client, served):
    name = served.name
    url = f"/v1/models/{name}:predict"
    b64 = [{"b64": base64.b64encode(x).decode()} for x in (RED, BLUE)]
    rows = client.post(url, json={"instances": b64}).json()["predictions"]
    assert [r["label"] for r in rows] == ["cat", "fox"] and len(rows[0]["probabilities"]) == 3
    assert rows[0]["score"] == pytest.approx(max(rows[0]["probabilities"]))
    cols = client.post(url, json={"inputs": b64[:1]}).json()["outputs"]
    assert cols["label"] == ["cat"]
    pixels = make_image(1, 24, seed=5).tolist()  # another size: resized as training did
    images = client.post(url, json={"signature_name": "serving_images", "instances": [pixels]}).json()
    assert images["predictions"][0]["label"] == "dog"
    assert client.get(f"/v1/models/{name}").json()["model_version_status"][0]["state"] == "AVAILABLE"


@pytest.mark.parametrize("body,status,words", [
    ({"instances": [{"b64": "%%%"}]}, 400, "base64"),
    ({"instances": [{"b64": base64.b64encode(b"text").decode()}]}, 400, "not an image"),
    ({"instances": []}, 400, "non-empty"),
    ({"signature_name": "nope", "instances": [1]}, 400, "not found"),
])
def test_tf_serving_errors(client, served, body, status, words):
    response = client.post(f"/v1/models/{served.name}:predict", json=body)
    assert response.status_code == status and words in response.json()["error"], response.text


def test_tf_serving_unknown_model_and_bad_json(client, served):
    assert client.post("/v1/models/other:predict", json={"instances": []}).status_code == 404
    bad = client.post(f"/v1/models/{served.name}:predict", content=b"{nope", headers={"Content-Type": "application/json"})
    assert bad.status_code == 400 and "JSON" in bad.json()["error"]


# ---------------------------------------------------------------- key, metrics, temperature

def test_api_key_guards_everything_but_health(served):
    with TestClient(create_app(served, Settings(api_key="s3cret"))) as c:
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200
        assert post_image(c, RED).status_code == 401
        assert c.post("/v1/predict", content=RED, headers={"Content-Type": "image/png", "X-API-Key": "wrong"}).status_code == 401
        assert c.get("/v1/metadata").status_code == 401 and c.get("/metrics").status_code == 401
        ok = c.post("/v1/predict", content=RED, headers={"Content-Type": "image/png", "X-API-Key": "s3cret"})
        bearer = c.post("/v1/predict", content=RED, headers={"Content-Type": "image/png", "Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and bearer.status_code == 200


def test_metrics_count_requests_and_batches(served):
    with TestClient(create_app(served)) as c:
        for _ in range(3):
            post_image(c, RED)
        post_image(c, b"junk", "image/png")
        text = c.get("/metrics").text
    assert 'kclassify_requests_total{endpoint="/v1/predict",status="200"} 3.0' in text
    assert 'kclassify_requests_total{endpoint="/v1/predict",status="400"} 1.0' in text
    assert "kclassify_batch_size_count 4.0" in text  # the warm-up and three images
    assert 'kclassify_request_duration_seconds_count{endpoint="/v1/predict"} 4.0' in text
    assert "kclassify_model_ready 1.0" in text


def test_the_temperature_is_applied(served):
    from dataclasses import replace

    from kclassify.inference.calibration import apply_temperature

    with TestClient(create_app(served)) as c:
        plain = post_image(c, GREEN).json()["predictions"]
    with TestClient(create_app(replace(served, temperature=3.0))) as c:
        soft = post_image(c, GREEN).json()["predictions"]
    raw = np.array([[p["score"] for p in sorted(plain, key=lambda p: p["label"])]])
    expected = sorted(apply_temperature(raw, 3.0)[0].tolist(), reverse=True)
    assert [p["label"] for p in soft] == [p["label"] for p in plain]
    assert [p["score"] for p in soft] == pytest.approx(expected, abs=1e-4) and soft[0]["score"] < plain[0]["score"]


def test_auto_backend_picks_the_gated_int8_file(tiny_run, tiny_export, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("checkpoints", "logs"))
    shutil.copytree(tiny_export.folder, run / "export")
    assert load_served(run).predictor.path.name == "model_int8.tflite"
    assert load_served(run, "tf").predictor.kind == "keras"
    from kclassify.errors import ConfigError, ModelLoadError

    with pytest.raises(ModelLoadError, match="no exported .tflite"):
        load_served(tiny_run, "tflite")
    with pytest.raises(ConfigError, match="--backend tf serves"):
        load_served(run / "export" / "model.tflite", "tf")


# ---------------------------------------------------------------- batching

def test_the_batcher_groups_concurrent_requests():
    calls = []

    def slow_model(images):
        calls.append(len(images))
        time.sleep(0.05)
        return images.reshape(len(images), -1)[:, :2].astype(np.float32)

    async def scenario():
        batcher = Batcher(slow_model, max_batch=8, timeout_ms=20)
        await batcher.start()
        images = [np.full((2, 2, 3), i, np.uint8) for i in range(20)]
        for _ in images:
            batcher.expect()
        rows = await asyncio.gather(*(batcher.predict(x) for x in images))
        await batcher.stop()
        return rows

    rows = asyncio.run(scenario())
    assert [int(r[0]) for r in rows] == list(range(20))  # every request gets its own row
    assert max(calls) == 8 and sum(calls) == 20 and len(calls) <= 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live_server(served):
    """A real uvicorn on a free loopback port, in a thread; the model made slow enough for batches to form."""
    import uvicorn

    app = create_app(served, Settings(max_batch=16, batch_timeout_ms=10))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", app
    server.should_exit = True
    thread.join(10)


def test_batches_form_under_real_concurrency(live_server):
    import httpx

    url, app = live_server
    original = app.state.batcher.predict_batch

    def slow(images):  # 30 ms a call: requests arriving meanwhile must queue into the next batch
        time.sleep(0.03)
        return original(images)

    app.state.batcher.predict_batch = slow
    try:
        results = []

        def client():
            with httpx.Client() as h:
                for _ in range(4):
                    r = h.post(url + "/v1/predict", content=RED, headers={"Content-Type": "image/png"})
                    results.append((r.status_code, r.json()["predictions"][0]["label"]))

        before = app.state.batcher.batches
        threads = [threading.Thread(target=client) for _ in range(8)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        batches = app.state.batcher.batches - before
    finally:
        app.state.batcher.predict_batch = original
    assert results == [(200, "cat")] * 32
    assert batches <= 20  # 32 requests in at most 20 model calls: batches formed
    metrics = httpx.get(url + "/metrics").text
    big = [line for line in metrics.splitlines() if line.startswith('kclassify_batch_size_bucket{le="1.0"}')]
    count = [line for line in metrics.splitlines() if line.startswith("kclassify_batch_size_count")]
    assert float(big[0].split()[-1]) < float(count[0].split()[-1])  # some batches held more than one image


# ---------------------------------------------------------------- the real command: SIGTERM, browser

@pytest.mark.slow
def test_sigterm_lets_the_request_in_flight_finish(tiny_run, tmp_path):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.Popen([sys.executable, "-m", "kclassify.cli", "serve", str(tiny_run), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        _wait_ready(port, proc)
        sock = socket.create_connection(("127.0.0.1", port))
        head = (f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                f"Content-Length: {len(RED)}\r\n\r\n").encode()
        sock.sendall(head + RED[:100])  # the request is in flight: half its body sent
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        sock.sendall(RED[100:])
        answer = _read_response(sock)
        sock.close()
        assert answer.startswith("HTTP/1.1 200") and '"cat"' in answer
        # uvicorn shuts down cleanly, then re-raises SIGTERM so that the exit says what stopped it
        assert proc.wait(30) in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in proc.stdout.read().decode()
    finally:
        proc.kill()


def _read_response(sock) -> str:
    """One whole HTTP response from a raw socket (headers, then Content-Length bytes of body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += sock.recv(65536)
    return (head + b"\r\n\r\n" + body).decode()


def _wait_ready(port: int, proc) -> None:
    import httpx

    for _ in range(300):
        if proc.poll() is not None:
            raise AssertionError(proc.stdout.read().decode())
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("the server did not become ready")


def test_web_page_classifies_an_uploaded_image_in_a_browser(live_server, tmp_path):
    from cdp import Chromium

    url, _ = live_server
    image = tmp_path / "red.png"
    image.write_bytes(RED)
    with Chromium() as browser:
        browser.open(url + "/")
        browser.upload("#file", image)
        assert browser.wait_for("document.getElementById('result').dataset.top") == "cat"
        bars = browser.evaluate("document.querySelectorAll('#result .row').length")
        caption = browser.wait_for("document.getElementById('heatcaption').textContent")
        heat = browser.evaluate("document.getElementById('heat').naturalWidth")
        # the line under the title is not hidden behind the drop zone
        gap = browser.evaluate("document.getElementById('drop').getBoundingClientRect().top - "
                               "document.querySelector('.sub').getBoundingClientRect().bottom")
    assert bars == 3 and caption == "where it looks for cat" and heat == 16 and gap >= 0


def test_cli_serve_refuses_bad_settings(tiny_run, capsys):
    from kclassify.cli import main

    assert main(["serve", str(tiny_run), "--workers", "0"]) == 2
    assert "--workers must be at least 1" in capsys.readouterr().err
    assert main(["serve", str(tiny_run), "--backend", "tflite"]) == 2
    assert "no exported .tflite" in capsys.readouterr().err


def test_explain_returns_an_overlay_png_and_refuses_what_predict_refuses(client, served):
    from PIL import Image

    assert client.get("/v1/metadata").json()["explain"] is True
    response = client.post("/v1/explain", content=RED, headers={"Content-Type": "image/png"})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.headers["X-Class"] == post_image(client, RED).json()["predictions"][0]["label"]
    with Image.open(io.BytesIO(response.content)) as im:
        assert im.format == "PNG" and im.size == (16, 16)  # the model's input, the heat over it
    for data, ctype, status in [(b"hello", "image/png", 400), (bomb_png(), "image/png", 413),
                                (b"x" * (2 << 20), "image/png", 413)]:
        refused = client.post("/v1/explain", content=data, headers={"Content-Type": ctype})
        assert refused.status_code == status == post_image(client, data, ctype).status_code, refused.text
    with TestClient(create_app(served, Settings(api_key="s3cret"))) as c:
        assert c.post("/v1/explain", content=RED, headers={"Content-Type": "image/png"}).status_code == 401


def test_explain_says_what_to_serve_when_the_file_has_no_gradients(tiny_export):
    served = load_served(tiny_export.folder / "model.tflite")
    with TestClient(create_app(served)) as c:
        assert c.get("/v1/metadata").json()["explain"] is False
        refused = c.post("/v1/explain", content=RED, headers={"Content-Type": "image/png"})
    assert refused.status_code == 400 and "Serve the run folder or a .keras file" in refused.json()["error"]


@pytest.mark.parametrize("artifact", ["savedmodel", "model.tflite"])
def test_other_backends_answer_alike(tiny_export, artifact, client):
    served = load_served(tiny_export.folder / artifact)
    with TestClient(create_app(served)) as c:
        got = post_image(c, BLUE).json()["predictions"]
        meta = c.get("/v1/metadata").json()
    reference = post_image(client, BLUE).json()["predictions"]  # the run's Keras model
    assert meta["backend"] == ("savedmodel" if artifact == "savedmodel" else "tflite")
    assert [p["label"] for p in got] == [p["label"] for p in reference]
    assert [p["score"] for p in got] == pytest.approx([p["score"] for p in reference], abs=0.02)
