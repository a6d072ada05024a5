"""HA query endpoints: ``GET|POST /query`` and ``POST /{index}/search``.

What the official ``alibabacloud_ha3engine`` SDK sends (see app.py for the full notes):
``GET /query?query=<whole HA string>`` (``config=...&&query=...&&cluster=general``) or
``POST /query`` with ``{"assemblyQuery": "<HA string>"}``; ``/query?type=sql`` is SQL
(``{"assemblyQuery": sql}``), which we answer with a clear 400.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from adapter.errors import NotFoundError, PayloadTooLargeError, QueryError
from adapter.query.planner import GENERAL_CLUSTER
from adapter.server import docs
from adapter.server.auth import reader
from adapter.plan.engine import Engine
from adapter.runtime import Runtime
from adapter.server.common import ServedRuntime, json_bytes, offload, parse_json
from adapter.server.url_query import UrlQueryRoute

# Query parameters decoded by yarl: GET /query carries Base64 images in its URL (url_query.py).
router = APIRouter(tags=["HA query"], route_class=UrlQueryRoute)


def run_ha_query(runtime: Runtime, text: str) -> Response:
    """Parse, plan, execute and format one HA query string (blocking). Bad queries come
    back as HA3 error bodies (XML when the config clause asked for xml) with their status."""
    from adapter.query.ha_service import answer_ha_query

    body, status = answer_ha_query(text, runtime.engine, runtime.embedder)
    if isinstance(body, str):
        return Response(body, status_code=status, media_type="application/xml")
    return JSONResponse(body, status_code=status)


def _limit(request: Request) -> int:
    return request.app.state.settings.limits.max_query_string_bytes


def _check_sql(request: Request) -> None:
    if request.query_params.get("type", "").lower() == "sql":
        raise QueryError("SQL queries are not supported by this service; use the HA query syntax "
                         "(config=...&&query=...)", "query parameter type")


def _check_len(limit: int, text: str) -> str:
    if len(text.encode("utf-8", "replace")) > limit:
        raise PayloadTooLargeError(f"query string over the {limit}-byte limit", "query")
    if not text.strip():
        raise QueryError("empty query: expected config=...&&query=...", "query offset 0")
    return text


@router.get("/query", summary="HA query string (GET ?query=... or HA3's native ?config=...&&query=...)")
async def query_get(request: Request, runtime: ServedRuntime, query: str = "", _=Depends(reader)) -> Response:
    # FastAPI's dependency solver decodes request.query_params for every request (cheaply, see
    # UrlQueryRoute): reuse those pairs instead of decoding a Base64 image a second time. The
    # raw query comes straight from the scope (ASCII: httptools refuses other bytes in a URL);
    # request.url would first rebuild and re-split the whole 50 KB URL.
    _check_sql(request)
    raw = request.scope["query_string"].decode("latin-1")
    return await offload(_answer_url, raw, request.query_params.multi_items(), _limit(request), runtime)


def _answer_url(raw: str, pairs: list[tuple[str, str]], limit: int, runtime: Runtime) -> Response:
    """A URL query → HA query string → answer, in one worker-thread call."""
    from adapter.query.haquery import ha_query_from_url_query

    # The raw URL query tells the SDK's form-encoded ?query=... from HA3's native
    # ?config=...&&query=... (decoded once from the raw, where '+' stays '+').
    _check_len(limit, raw)
    return run_ha_query(runtime, _check_len(limit, ha_query_from_url_query(raw, pairs)))


@router.post("/query", summary="HA query string (POST {assemblyQuery})", openapi_extra=docs.body(docs.HAQueryBody))
async def query_post(request: Request, runtime: ServedRuntime, _=Depends(reader)) -> Response:
    _check_sql(request)
    return await offload(_answer_body, await json_bytes(request), _assembly_query, _limit(request), runtime)


def _assembly_query(body: dict) -> str:
    text = body.get("assemblyQuery", body.get("query"))
    if not isinstance(text, str):
        raise QueryError("body must carry the HA query string in 'assemblyQuery'", "$.assemblyQuery")
    return text


def _answer_body(raw: bytes, to_query: Callable[[dict], str], limit: int, runtime: Runtime) -> Response:
    """A JSON body → HA query string → answer, in one worker-thread call (JSON parsing and
    rendering stay off the event loop)."""
    return run_ha_query(runtime, _check_len(limit, to_query(parse_json(raw))))


_CLAUSES = ("config", "query", "filter", "sort", "kvpairs", "distinct", "aggregate")


def _compose(index: str, engine: Engine, body: dict) -> str:
    """A ``/{index}/search`` JSON body as an HA query string (cluster: the body's, else the
    path's index when it names a table, else HA3's default cluster)."""
    text = body.get("assemblyQuery")
    if isinstance(text, str):
        return text
    query = body.get("query")
    if isinstance(query, str) and "&&" in query and "=" in query.split("&&")[0]:
        return query  # already a whole HA query string
    parts = []
    for clause in _CLAUSES:
        value = body.get(clause)
        if value is None:
            continue
        if isinstance(value, dict):
            value = ",".join(f"{k}:{v}" for k, v in value.items())
        elif isinstance(value, list):
            value = ";".join(str(v) for v in value)
        elif not isinstance(value, (str, int, float)):
            raise QueryError(f"'{clause}' must be a string, object or list", f"$.{clause}")
        parts.append(f"{clause}={value}")
    if not any(p.startswith("query=") for p in parts):
        raise QueryError("search body needs 'query' (an HA query clause or a whole HA query string)", "$.query")
    if not any(p.startswith("config=") for p in parts):
        parts.insert(0, "config=start:0,hit:10,format:json")
    parts.append(f"cluster={body.get('cluster') or _path_cluster(engine, index)}")
    return "&&".join(parts)


def _path_cluster(engine: Engine, index: str) -> str:
    try:
        engine.get_spec(index)
    except NotFoundError:
        return GENERAL_CLUSTER  # the path names a vector index, not a table: the whole instance
    return index


@router.post("/{index}/search", summary="HA query as JSON (SDK search_rest)")
async def index_search(index: str, request: Request, runtime: ServedRuntime, _=Depends(reader)) -> Response:
    return await offload(_answer_body, await json_bytes(request), functools.partial(_compose, index, runtime.engine),
                         _limit(request), runtime)
