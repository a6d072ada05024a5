"""One call for the HTTP layer: HA query text in, HA3 response (and HTTP status) out."""

from __future__ import annotations

import re
import time
from typing import Any

from adapter.errors import AdapterError
from adapter.query.executor import execute
from adapter.query.format import format_ha_error, format_ha_response
from adapter.query.haquery import parse_ha_query
from adapter.query.planner import plan_ha_query

_XML = re.compile(r"(?:^|&&)\s*config\s*=[^&]*format\s*:\s*xml", re.I)


def answer_ha_query(text: str, engine: Any, embedder: Any) -> tuple[dict[str, Any] | str, int]:
    """Parse, plan, execute and format. Errors come back as HA3 error bodies in the
    requested format (xml when the config clause asks for it, even if the rest is broken)
    with the error's HTTP status; nothing raises for bad input."""
    t0 = time.perf_counter()
    fmt = "xml" if isinstance(text, str) and _XML.search(text) else "json"
    try:
        q = parse_ha_query(text)
        fmt = q.config.format if q.config.format == "xml" else "json"
        plan, opts = plan_ha_query(q, engine)
        result = execute(plan, engine, embedder, None, distinct=opts.distinct, aggregates=opts.aggregates)
        return format_ha_response(result, opts, time.perf_counter() - t0), 200
    except AdapterError as err:
        return format_ha_error(err, fmt), err.http_status
