"""Load on `kclassify serve` against a naive Flask + `model.predict` server of the same model, on loopback.

    python benchmarks/serve_load.py RUN [--clients 8] [--seconds 20] [--soak 60] [--image photo.jpg]

RUN is a run folder (export it first, e.g. `kclassify export RUN --formats tflite,tflite-int8`, so that
`--backend auto` serves LiteRT). Prints, for each server: requests/s, p50, p99, errors, and the server's
resident memory before and after; then the in-process cost of one decode + model call (the floor of a
single client's latency), and a soak of our server with 10% malformed uploads. Load only ever targets
127.0.0.1 and is bounded by --seconds per phase.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

NAIVE = textwrap.dedent('''
    # The tutorial server: Flask, Pillow resize, keras model.predict per request.
    import io, sys
    import numpy as np
    import keras
    from flask import Flask, jsonify, request
    from PIL import Image
    model = keras.models.load_model(sys.argv[1], compile=False)
    labels = open(sys.argv[2]).read().split()
    size = int(model.input_shape[1])
    app = Flask(__name__)
    @app.post("/predict")
    def predict():
        try:
            image = Image.open(io.BytesIO(request.get_data())).convert("RGB").resize((size, size))
        except Exception as e:
            return jsonify(error=str(e)), 400
        probs = model.predict(np.asarray(image, np.float32)[None], verbose=0)[0]
        top = int(probs.argmax())
        return jsonify(label=labels[top], score=float(probs[top]))
    @app.get("/healthz")
    def health():
        return "ok"
    app.run(host="127.0.0.1", port=int(sys.argv[3]), threaded=True)
''')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def wait_until(port: int, path: str, proc, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {Path(proc.log_path).read_text()[-2000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"server on {port} not ready after {timeout} s")


def load(port: int, path: str, bodies: list[tuple[bytes, bool]], clients: int, seconds: float,
         bad_share: float = 0.0, seed: int = 0) -> dict:
    """`clients` threads, each on one keep-alive connection, posting for `seconds`; latency per request."""
    latencies, statuses, lock = [], {}, threading.Lock()
    good = [b for b, ok in bodies if ok]
    bad = [b for b, ok in bodies if not ok]
    stop = time.perf_counter() + seconds

    def client(i: int):
        rng = random.Random(seed + i)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.perf_counter() < stop:
            body = rng.choice(bad) if bad and rng.random() < bad_share else rng.choice(good)
            start = time.perf_counter()
            try:
                conn.request("POST", path, body=body, headers={"Content-Type": "image/jpeg"})
                response = conn.getresponse()
                response.read()
                status = response.status
            except OSError:
                status = "connection error"
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            took = time.perf_counter() - start
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
                if status == 200:
                    latencies.append(took)
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    began = time.perf_counter()
    [t.start() for t in threads]
    [t.join() for t in threads]
    elapsed = time.perf_counter() - began
    lat = sorted(latencies)
    q = (lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000) if lat else (lambda p: float("nan"))
    return {"requests_per_s": sum(statuses.values()) / elapsed, "ok_per_s": len(lat) / elapsed,
            "p50_ms": q(0.50), "p99_ms": q(0.99), "statuses": statuses}


def photo(args, run: Path) -> bytes:
    """A 400x300 JPEG: --image, else the run's first test image resized (a real photo), else noise."""
    from PIL import Image

    if args.image:
        return Path(args.image).read_bytes()
    import csv

    root = Path(json.loads((run / "run.json").read_text())["data"]["root"])
    with open(run / "split.csv") as f:
        first = next((r["path"] for r in csv.DictReader(f) if r["split"] == "test"), None)
    image = Image.open(root / first).convert("RGB") if first else Image.effect_noise((400, 300), 64).convert("RGB")
    buf = io.BytesIO()
    image.resize((400, 300)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def malformed(jpeg: bytes) -> list[bytes]:
    """What a soak sends 10% of the time: truncated, random bytes, text, empty."""
    rng = random.Random(1)
    return [jpeg[: len(jpeg) // 3], bytes(rng.getrandbits(8) for _ in range(5000)), b"GET me a cat", b""]


def in_process_floor(run: Path, jpeg: bytes, backend: str) -> dict:
    """Median ms of decode, model call, and both, in-process through the server's own pieces."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from kclassify.serving.images import Decoder
    from kclassify.serving.model import load_served

    served = load_served(run, backend)
    decoder = Decoder(served.predictor.image_size)
    image = decoder(jpeg)
    for _ in range(20):
        served.predictor.predict_batch(decoder(jpeg)[None])

    def median_ms(fn, n=200):
        times = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return statistics.median(times) * 1000

    decode = median_ms(lambda: decoder(jpeg))
    invoke = median_ms(lambda: served.predictor.predict_batch(image[None]))
    both = median_ms(lambda: served.predictor.predict_batch(decoder(jpeg)[None]))
    return {"model": str(served.predictor.path), "decode_ms": decode, "invoke_ms": invoke, "decode_and_invoke_ms": both}


def start(cmd: list[str]) -> subprocess.Popen:
    """A server process whose output goes to a file: a pipe nobody reads fills up (64 KB) and then blocks
    the server on its next log line (libjpeg writes one to stderr for each truncated JPEG of the soak)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    log = tempfile.NamedTemporaryFile("w+b", prefix="kclassify-bench-", suffix=".log", delete=False)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    proc.log_path = log.name
    return proc


def run_ours(args, run: Path, jpeg: bytes) -> dict:
    port = free_port()
    proc = start([sys.executable, "-m", "kclassify.cli", "serve", str(run), "--port", str(port),
                  "--backend", args.backend, "--max-batch", str(args.max_batch)])
    try:
        wait_until(port, "/readyz", proc)
        before = rss_mb(proc.pid)
        one = load(port, "/v1/predict", [(jpeg, True)], 1, args.seconds / 2)
        many = load(port, "/v1/predict", [(jpeg, True)], args.clients, args.seconds)
        after = rss_mb(proc.pid)
        soak = None
        if args.soak:
            soak_before = rss_mb(proc.pid)
            soak = load(port, "/v1/predict", [(jpeg, True)] + [(b, False) for b in malformed(jpeg)],
                        args.clients, args.soak, bad_share=0.1)
            soak.update(rss_before_mb=soak_before, rss_after_mb=rss_mb(proc.pid))
        conn = http.client.HTTPConnection("127.0.0.1", port)
        conn.request("GET", "/v1/metadata")
        meta = json.loads(conn.getresponse().read())
        return {"one_client": one, "clients": many, "rss_before_mb": before, "rss_after_mb": after, "soak": soak,
                "backend": meta["backend"], "path": meta["path"]}
    finally:
        proc.terminate()
        proc.wait(60)


def run_naive(args, run: Path, jpeg: bytes) -> dict:
    port = free_port()
    script = Path(tempfile.mkdtemp()) / "naive_server.py"
    script.write_text(NAIVE)
    proc = start([sys.executable, str(script), str(run / "model.keras"), str(run / "labels.txt"), str(port)])
    try:
        wait_until(port, "/healthz", proc)
        before = rss_mb(proc.pid)
        load(port, "/predict", [(jpeg, True)], 1, 2)  # warm-up: Keras traces predict on the first call
        many = load(port, "/predict", [(jpeg, True)], args.clients, args.seconds)
        return {"clients": many, "rss_before_mb": before, "rss_after_mb": rss_mb(proc.pid)}
    finally:
        proc.terminate()
        proc.wait(60)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--soak", type=float, default=60, help="seconds of the soak with 10%% malformed uploads (0: none)")
    p.add_argument("--backend", default="auto")
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--image", help="the JPEG to send (default: the run's first test image at 400x300)")
    p.add_argument("--skip-naive", action="store_true")
    args = p.parse_args()
    jpeg = photo(args, args.run)
    print(f"image: {len(jpeg)} bytes JPEG; {args.clients} clients x {args.seconds:g} s; CPUs: {os.cpu_count()}")
    floor = in_process_floor(args.run, jpeg, args.backend)
    print(f"in-process: decode {floor['decode_ms']:.2f} ms, model {floor['invoke_ms']:.2f} ms, both "
          f"{floor['decode_and_invoke_ms']:.2f} ms ({floor['model']})")
    ours = run_ours(args, args.run, jpeg)
    rows = [("kclassify serve (" + ours["backend"] + ")", ours)]
    if not args.skip_naive:
        rows.append(("naive Flask + model.predict", run_naive(args, args.run, jpeg)))
    print(f"{'server':34} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'RSS MB before -> after':>24}")
    for name, r in rows:
        c = r["clients"]
        errors = sum(n for s, n in c["statuses"].items() if s != 200)
        print(f"{name:34} {c['requests_per_s']:8.1f} {c['p50_ms']:8.1f} {c['p99_ms']:8.1f} {errors:7d} "
              f"{r['rss_before_mb']:10.0f} -> {r['rss_after_mb']:.0f}")
    one = ours["one_client"]
    print(f"one client: {one['requests_per_s']:.1f} req/s, p50 {one['p50_ms']:.2f} ms = "
          f"{one['p50_ms'] / floor['decode_and_invoke_ms']:.2f}x decode + model in-process")
    if len(rows) == 2:
        print(f"speed-up with {args.clients} clients: {rows[0][1]['clients']['requests_per_s'] / rows[1][1]['clients']['requests_per_s']:.1f}x")
    if ours["soak"]:
        s = ours["soak"]
        growth = 100 * (s["rss_after_mb"] - s["rss_before_mb"]) / s["rss_before_mb"]
        print(f"soak {args.soak:g} s, 10% malformed: {s['requests_per_s']:.1f} req/s, statuses {s['statuses']}, "
              f"5xx {sum(n for k, n in s['statuses'].items() if isinstance(k, int) and k >= 500)}, "
              f"RSS {s['rss_before_mb']:.0f} -> {s['rss_after_mb']:.0f} MB ({growth:+.1f}%)")


if __name__ == "__main__":
    main()
