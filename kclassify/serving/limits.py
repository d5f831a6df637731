"""The request-body limit, enforced while the body arrives: a body over it is refused (413) before it
is read whole, by its Content-Length header when it declares one, else by counting chunks as they come.
"""

from __future__ import annotations

import json


class BodyTooLarge(Exception):
    """Raised into the endpoint reading a chunked body that outgrew the limit (answered 413)."""


class BodyLimit:
    """Pure ASGI middleware (no buffering of its own)."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = int(max_bytes)

    def _message(self) -> str:
        return f"request body over the limit of {self.max_bytes / 1024 / 1024:g} MB (--max-body-mb)"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            body = json.dumps({"error": self._message()}).encode()
            await send({"type": "http.response.start", "status": 413,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                    (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": body})
            return
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self._message())
            return message

        await self.app(scope, counted, send)
