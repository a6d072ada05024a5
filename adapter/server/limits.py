"""Request size limits, enforced before any handler reads a byte.

A declared Content-Length over the limit is answered 413 at once; a body without one
(chunked) is counted while it streams and cut off with the same 413 as soon as it passes
the limit, so nothing ever buffers more than ``max_body_bytes``.
"""

from __future__ import annotations

import json
import time

from adapter.errors import PayloadTooLargeError
from adapter.server.errors import error_body
from adapter.server.observe import add_timing


def _too_large(limit: int, size: int | None) -> PayloadTooLargeError:
    got = f"{size} bytes" if size is not None else "more than that"
    return PayloadTooLargeError(
        f"request body too large: {got}, limit is {limit} bytes ({limit / 1048576:.0f} MiB); "
        "send smaller images or fewer documents per request", "body")


class BodyLimitMiddleware:
    def __init__(self, app, max_body_bytes: int):
        self.app = app
        self.limit = max_body_bytes

    async def _reject(self, scope, send, err: PayloadTooLargeError):
        rid = scope.get("state", {}).get("request_id", "")
        body = json.dumps(error_body(scope.get("path", ""), err, rid)).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = None
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = None
        if length is not None and length > self.limit:
            return await self._reject(scope, send, _too_large(self.limit, length))
        # Read the whole (bounded) body first, then replay it: handlers need it all anyway
        # and this way an over-long chunked body gets a clean 413 instead of a broken stream.
        t0 = time.perf_counter()
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.limit:
                return await self._reject(scope, send, _too_large(self.limit, None))
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        add_timing("receive", time.perf_counter() - t0)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
