"""One call for the HTTP layer: HA query text in, HA3 response (and HTTP status) out."""

from __future__ import annotations

import re
import time
from typing import Any

from adapter.embed.base import Embedder
from adapter.errors import AdapterError
from adapter.plan.engine import Engine
from adapter.query.executor import execute
from adapter.query.format import format_ha_error, format_ha_response
from adapter.query.haquery import parse_ha_query
from adapter.query.planner import plan_ha_query

_XML = re.compile(r"(?:^|&&)\s*config\s*=[^&]*format\s*:\s*xml", re.I)


def answer_ha_query(text: str, engine: Engine, embedder: Embedder | None) -> tuple[dict[str, Any] | str, int]:
    """Parse, plan, execute and format. Errors come back as HA3 error bodies in the
    requested format (xml when the config clause asks for it, even if the rest is broken)
    with the error's HTTP status; nothing raises for bad input."""
    t0 = time.perf_counter()
    q = None
    try:
        q = parse_ha_query(text)
        plan, opts = plan_ha_query(q, engine)
        result = execute(plan, engine, embedder)
        return format_ha_response(result, opts, time.perf_counter() - t0), 200
    except AdapterError as err:
        return format_ha_error(err, _error_format(text, q)), err.http_status


def _error_format(text: Any, q: Any) -> str:
    """The parsed config's format; for a query that did not parse, a scan for format:xml. Only
    errors pay for the scan (0.5 ms over a query that carries a Base64 image)."""
    if q is not None:
        return "xml" if q.config.format == "xml" else "json"
    return "xml" if isinstance(text, str) and _XML.search(text) else "json"
