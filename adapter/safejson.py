"""JSON from clients: request bodies, searchParams strings, schemas sent as strings.

``json.loads`` alone takes ``NaN``/``Infinity`` literals (then nothing can render the
value back: JSON has no such numbers) and recurses once per nesting level (a body nested a
few thousand deep raises RecursionError, and one nested a few hundred deep still reaches
code that recurses on it). So nesting is capped at ``MAX_DEPTH`` by a scan of the raw bytes
before parsing, and the literals are refused while parsing. Every refusal is a
``JsonError`` with the reason and position, which callers turn into their own 4xx.

Overflowing literals such as ``1e999`` parse to infinity; the checks where numbers are
used (vectors, scores, field values) refuse them, so parsing stays on json's C fast path.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

MAX_DEPTH = 64  # HA3 and vector-service bodies nest about 5 deep


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def nests_deeper(raw: bytes, limit: int) -> bool:
    """Do arrays and objects in ``raw`` (JSON text) nest more than ``limit`` levels deep?"""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False  # too few brackets to go over the limit: no scan
    return nesting_depth(raw) > limit


def nesting_depth(raw: bytes) -> int:
    """How deep arrays and objects nest in ``raw`` (JSON text; brackets in strings ignored)."""
    # Escaped backslashes, then escaped quotes, so every '"' left opens or closes a string.
    text = np.frombuffer(raw.replace(b"\\\\", b"").replace(b'\\"', b""), dtype=np.uint8)
    at = np.flatnonzero((text == ord('"')) | (text == ord("[")) | (text == ord("{"))
                        | (text == ord("]")) | (text == ord("}")))
    chars = text[at]
    quote = chars == ord('"')
    outside = (np.cumsum(quote) % 2 == 0) & ~quote
    step = np.where(outside & ((chars == ord("[")) | (chars == ord("{"))), 1, 0) \
        - np.where(outside & ((chars == ord("]")) | (chars == ord("}"))), 1, 0)
    return int(np.cumsum(step).max(initial=0))


class JsonError(ValueError):
    """Refused JSON: ``msg`` and where in the text (``pos``; 1-based ``lineno``/``colno``
    when the parser knows them)."""

    def __init__(self, msg: str, pos: int = 0, lineno: int | None = None, colno: int | None = None):
        super().__init__(msg)
        self.msg, self.pos, self.lineno, self.colno = msg, pos, lineno, colno

    def where(self, base: str) -> str:
        """``base``, with the line and column when known."""
        return f"{base} line {self.lineno} column {self.colno}" if self.lineno is not None else base


def loads(data: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse client JSON; JsonError for anything json or these rules refuse."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if nests_deeper(raw, max_depth):
        raise JsonError(f"nested deeper than {max_depth} levels")
    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except UnicodeDecodeError:
        raise JsonError("not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise JsonError(exc.msg, exc.pos, exc.lineno, exc.colno) from None
    except (ValueError, RecursionError) as exc:  # NaN/Infinity, integers over 4300 digits
        raise JsonError(str(exc) or type(exc).__name__) from None
