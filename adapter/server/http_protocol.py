"""uvicorn's httptools HTTP/1.1 protocol, with caps on the request head and long URLs.

httptools (llhttp, in C) parses a request several times faster than h11, which is pure
Python and runs on the event loop that every request waits for (bench/query.py: client
latency 0.15-0.2 ms lower per query). Two things it does not do for us:

- It has no limit of its own on how long a URL or header block may grow, so a client could
  stream an endless URL into memory. Both are counted here as the parser hands them over;
  over the cap the answer is 414 (URL) or 431 (headers) with a JSON body in the client's
  error format (HA ``errors[]``, the vector-service envelope), and the connection closes.
- uvicorn splits the URL with ``httptools.parse_url``, whose offsets are 16-bit: any URL over
  65,535 bytes failed as "Invalid HTTP request", and the HA SDK's default search is a GET
  with the whole Base64 image in the URL. Such URLs are split at the first '?' here, so
  only the path goes through parse_url.
"""

from __future__ import annotations

import json
import uuid
from http import HTTPStatus

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from adapter.errors import AdapterError, HeadersTooLargeError, UriTooLongError

PARSE_URL_MAX = 0xFFFF  # httptools.parse_url keeps offsets in 16 bits
MAX_HEADER_BYTES = 64 * 1024
LINGER_S = 2.0  # how long a refused request's remaining bytes are read and dropped


class RequestHeadTooLarge(Exception):
    """Raised inside a parser callback; httptools turns it into HttpParserCallbackError."""


def capped_httptools(max_url_bytes: int, max_header_bytes: int = MAX_HEADER_BYTES) -> type[HttpToolsProtocol]:
    """An ``HttpToolsProtocol`` class refusing URLs over ``max_url_bytes`` (414) and header
    blocks over ``max_header_bytes`` (431), and taking URLs longer than parse_url can."""

    class CappedHttpToolsProtocol(HttpToolsProtocol):
        url_bytes = 0
        header_bytes = 0
        refused: AdapterError | None = None
        discarding = False

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.url_bytes = self.header_bytes = 0
            self.refused = None

        def _refuse(self, err: AdapterError) -> None:
            self.refused = err
            raise RequestHeadTooLarge(str(err))

        def on_url(self, url: bytes) -> None:
            self.url_bytes += len(url)
            if self.url_bytes > max_url_bytes:
                if not self.url:
                    self.url = url[:1024]  # enough of the path to answer in the client's format
                self._refuse(UriTooLongError(f"request URL over {max_url_bytes} bytes; send the query in a "
                                             "POST body instead (POST /query with assemblyQuery)", "url"))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self.header_bytes += len(name) + len(value) + 4  # ": " and CRLF
            if self.header_bytes > max_header_bytes:
                self._refuse(HeadersTooLargeError(f"request headers over {max_header_bytes} bytes", "headers"))
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            url = self.url
            if len(url) <= PARSE_URL_MAX:
                return super().on_headers_complete()
            path, _, query = url.partition(b"?")
            if len(path) > PARSE_URL_MAX:
                self.refused = UriTooLongError(f"request path over {PARSE_URL_MAX} bytes", "url")
                self.send_400_response("path too long")
                return
            self.url = path  # parse_url sees the path only; the query string is set below
            try:
                super().on_headers_complete()
            finally:
                self.url = url
            self.scope["query_string"] = query  # before the request's task first runs

        def send_400_response(self, msg: str) -> None:
            if self.refused is None:
                return super().send_400_response(msg)
            from adapter.server.errors import error_body

            path = self.url.partition(b"?")[0].decode("latin-1")
            status = HTTPStatus(self.refused.http_status)
            body = json.dumps(error_body(path, self.refused, uuid.uuid4().hex)).encode()
            head = [f"HTTP/1.1 {status.value} {status.phrase}".encode(),
                    *(name + b": " + value for name, value in self.server_state.default_headers),
                    b"content-type: application/json", b"content-length: " + str(len(body)).encode(),
                    b"connection: close"]
            self.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
            self._linger()

        def _linger(self) -> None:
            """Close without losing the answer: the client is likely still sending the rest of
            its request, and closing with unread data makes the kernel send a reset that can
            discard the response. So: end our side, drop what still arrives, close soon."""
            self.discarding = True
            try:
                self.transport.write_eof()
            except (AttributeError, NotImplementedError, OSError, RuntimeError):
                self.transport.close()
                return
            self.loop.call_later(LINGER_S, self.transport.close)

        def data_received(self, data: bytes) -> None:
            if self.discarding:
                return  # the rest of a refused request
            super().data_received(data)

    return CappedHttpToolsProtocol
