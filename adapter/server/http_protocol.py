"""uvicorn's httptools HTTP/1.1 protocol, with a cap on the request head.

httptools (llhttp, in C) parses a request several times faster than h11, which is pure
Python and runs on the event loop that every request waits for (bench/query.py: client
latency 0.15-0.2 ms lower per query). Unlike h11 it has no limit of its own on how long a
request line or header block may grow, so a client could stream an endless URL into
memory. The cap is counted here as the parser hands over the URL and headers. Over it, the
parser stops and uvicorn answers as it does any unparsable request: a plain 400 "Invalid
HTTP request received." and a closed connection (what h11's cap answered before).
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class RequestHeadTooLarge(Exception):
    """Raised inside a parser callback; httptools turns it into HttpParserCallbackError."""


def capped_httptools(max_head_bytes: int) -> type[HttpToolsProtocol]:
    """An ``HttpToolsProtocol`` class that refuses request heads over ``max_head_bytes``."""

    class CappedHttpToolsProtocol(HttpToolsProtocol):
        head_bytes = 0

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.head_bytes = 0

        def _count(self, n: int) -> None:
            self.head_bytes += n
            if self.head_bytes > max_head_bytes:
                raise RequestHeadTooLarge(f"request line and headers over {max_head_bytes} bytes")

        def on_url(self, url: bytes) -> None:
            self._count(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count(len(name) + len(value) + 4)  # ": " and CRLF
            super().on_header(name, value)

    return CappedHttpToolsProtocol
