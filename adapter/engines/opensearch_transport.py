"""One request to OpenSearch, with the adapter's retry policy and its error mapping.

Retries (backoff doubling from ``backoff_s``, at most ``max_retries`` more tries and never past
``deadline_s``):
- 429 and 503 answers: OpenSearch refused the request (queue full, shards not ready, cluster
  blocked), so nothing was applied and any request may be sent again;
- a connection that could not be opened: the request never left; with several hosts,
  opensearch-py marks the node dead and the next try goes to another one;
- anything else that may have been applied (a read timeout, a dropped connection, 500, 502,
  504): only idempotent requests. Searches, reads, refreshes, bulk adds and deletes by primary
  key are; creating an index, moving an alias or training a model are not.

What stays unavailable after the retries raises ``EngineUnavailableError`` (503); what OpenSearch
rejects raises ``EngineError`` with its first root cause, never a URL or a credential.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import orjson

from adapter.errors import EngineError, EngineUnavailableError

try:
    from opensearchpy.exceptions import ConnectionError as OSConnectionError
    from opensearchpy.exceptions import TransportError
    from urllib3.exceptions import ConnectTimeoutError
except ImportError:  # pragma: no cover - opensearch-py is a dependency
    OSConnectionError = TransportError = ConnectTimeoutError = None  # type: ignore[assignment,misc]

REFUSED = (429, 503)  # OpenSearch applied nothing


class FastJSONSerializer:
    """opensearch-py's serializer on orjson: a query carries a 512-d vector and a bulk request
    hundreds of them; the standard json module spends about 0.65 ms formatting one vector's
    floats, orjson a few microseconds. Float32 arrays go out as float32 (their shortest
    decimal form), which is what the node parses them into anyway."""

    mimetype = "application/json"

    def dumps(self, data: Any) -> Any:
        if isinstance(data, (str, bytes)):
            return data
        return orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)

    def loads(self, s: str | bytes) -> Any:
        return orjson.loads(s)


def ndjson(lines: list[dict]) -> bytes:
    """A _bulk body: one JSON document a line."""
    dump = orjson.dumps
    option = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE
    return b"".join(dump(line, option=option) for line in lines)


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 4
    backoff_s: float = 0.5
    deadline_s: float = 60.0


class Transport:
    def __init__(self, client: Any, policy: RetryPolicy, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic):
        self.client, self.policy, self._sleep, self._clock = client, policy, sleep, clock

    def call(self, method: str, path: str, body: Any = None, params: dict | None = None, *,
             idempotent: bool = True, not_found: type[Exception] | None = None, what: str = "") -> Any:
        deadline = self._clock() + self.policy.deadline_s
        last: Exception | None = None
        unavailable = False
        for attempt in range(self.policy.max_retries + 1):
            try:
                return self.client.transport.perform_request(method, path, params=params, body=body)
            except OSConnectionError as exc:
                last, unavailable = exc, True
                never_sent = isinstance(getattr(exc, "info", None), ConnectTimeoutError)
                if not (never_sent or idempotent):
                    break
            except TransportError as exc:
                status = exc.status_code if isinstance(exc.status_code, int) else 0
                if status == 404 and not_found is not None:
                    raise not_found(what or f"{path} not found") from None
                if status in REFUSED or (status >= 500 and idempotent):
                    last, unavailable = exc, status in REFUSED
                elif status >= 500:
                    raise EngineError(f"OpenSearch failed {method} {path}, which may have been applied; "
                                      f"not retried: {reason(exc)}") from None
                else:
                    raise EngineError(f"OpenSearch rejected {method} {path}: {reason(exc)}") from None
            pause = self.policy.backoff_s * (2 ** attempt)
            if attempt == self.policy.max_retries or self._clock() + pause > deadline:
                break
            self._sleep(pause)
        error = EngineUnavailableError if unavailable else EngineError
        raise error(f"OpenSearch unavailable for {method} {path} after {attempt + 1} tries: {reason(last)}")


def reason(exc: Exception | None) -> str:
    """An error's type and reason, without URLs or credentials."""
    if exc is None:
        return "unknown error"
    info = getattr(exc, "info", None)
    if isinstance(info, dict) and isinstance(info.get("error"), dict):
        err = info["error"]
        # "all shards failed" says nothing; the first root cause says what was wrong.
        causes = err.get("root_cause") or []
        if causes and isinstance(causes[0], dict) and causes[0].get("reason"):
            err = causes[0]
        while not err.get("reason") and isinstance(err.get("caused_by"), dict):  # e.g. missing shards
            err = err["caused_by"]
        return f"{err.get('type', 'error')}: {err.get('reason', '')}".strip()
    error = getattr(exc, "error", None)
    if isinstance(error, str):
        return error
    return type(exc).__name__


def require_all_shards(resp: dict, what: str) -> dict:
    """A search or count answered by only some shards would silently miss documents: refuse it."""
    shards = resp.get("_shards") or {}
    failed = int(shards.get("failed") or 0)
    if failed or resp.get("timed_out"):
        first = next(iter(shards.get("failures") or []), {})
        cause = (first.get("reason") or {}) if isinstance(first, dict) else {}
        detail = f"; first: {cause.get('type', 'error')}: {cause.get('reason', '')}" if cause else ""
        state = f"{failed} of {shards.get('total', '?')} shards failed" if failed else "the search timed out"
        raise EngineUnavailableError(f"{what}: {state}, so the answer would be incomplete{detail}")
    return resp
