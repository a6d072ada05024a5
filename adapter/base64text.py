"""The one Base64 rule: standard or URL-safe alphabet, padding optional, line breaks and
other white space ignored, an optional ``data:...;base64,`` prefix.

Clients send images and text in all of these forms (the SDKs send standard Base64, browsers
data URLs, some tools URL-safe without padding); every reader — HA query payloads, vector-
service content, pushed and rebuilt images, thumbnails — decodes with this function, so
what one accepts the others accept. Callers turn ``Base64Error`` into their own error type
(QueryError with its location, ImageError for images).
"""

from __future__ import annotations

import base64
import binascii
import re

_DATA_URL = re.compile(r"^\s*data:[\w/+.\-]*(;[\w=\-]+)*;base64,", re.IGNORECASE)
_ALPHABET = re.compile(r"[A-Za-z0-9+/]*")
_URL_SAFE = str.maketrans("-_", "+/")


class Base64Error(ValueError):
    """Not Base64 under the rule above; the message says why."""


class EmptyBase64(Base64Error):
    """Nothing to decode (an empty string, or only a data: prefix or padding)."""


def is_data_url(text: str) -> bool:
    """``data:...;base64,...``: Base64 even where a field usually holds object paths."""
    return _DATA_URL.match(text) is not None


def decode_base64(text: str | bytes) -> bytes:
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("ascii")
        except UnicodeDecodeError:
            raise Base64Error("Base64 contains non-ASCII bytes") from None
    if not isinstance(text, str):
        raise Base64Error(f"Base64 must be a string, got {type(text).__name__}")
    if text:
        # Fast path for what clients almost always send, strict standard Base64: C speed,
        # where the lenient path below costs ~0.4 ms per 50 KB image in Python regexes.
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            pass
    text = "".join(_DATA_URL.sub("", text, count=1).split()).translate(_URL_SAFE)
    core = text.rstrip("=")
    if not core:
        raise EmptyBase64("empty Base64")
    if len(text) - len(core) > 2 or not _ALPHABET.fullmatch(core) or len(core) % 4 == 1:
        raise Base64Error("not valid Base64")
    try:
        return base64.b64decode(core + "=" * (-len(core) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise Base64Error(f"not valid Base64: {exc}") from None
