"""The outermost layer of the app (pure ASGI, no buffering): the API key, and every request's metrics.

Starlette's ``@app.middleware("http")`` wraps each request in extra tasks and streams; measured with
one client on a 400x300 JPEG, this plain ASGI wrapper answers sooner by a share of a request's time
that matters (docs/benchmarks.md, "kclassify serve under load").
"""

from __future__ import annotations

import hmac
import json
import time

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/"})  # no key: liveness probes, and a page that holds no data
UNAUTHORIZED = json.dumps({"error": "missing or wrong API key: send it in the X-API-Key header "
                                    "(or Authorization: Bearer KEY)"}).encode()


class Guard:
    def __init__(self, app, api_key: str | None, telemetry):
        self.app = app
        self.key = api_key.encode() if api_key else None
        self.telemetry = telemetry

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 500

        async def tracked(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if self.key is not None and scope["path"] not in OPEN_PATHS and not self._authorized(scope):
                await tracked({"type": "http.response.start", "status": 401,
                               "headers": [(b"content-type", b"application/json"),
                                           (b"www-authenticate", b"Bearer"),
                                           (b"content-length", str(len(UNAUTHORIZED)).encode())]})
                await tracked({"type": "http.response.body", "body": UNAUTHORIZED})
                return
            await self.app(scope, receive, tracked)
        finally:
            route = scope.get("route")  # set by the router on this same scope
            self.telemetry.observe(getattr(route, "path", "unmatched"), status, time.perf_counter() - started)

    def _authorized(self, scope) -> bool:
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-api-key")
        auth = headers.get(b"authorization", b"")
        if given is None and auth[:7].lower() == b"bearer ":
            given = auth[7:].strip()
        return given is not None and hmac.compare_digest(given, self.key)  # constant time
