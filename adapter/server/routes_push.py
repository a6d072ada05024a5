"""Push: ``POST /update/{data_source}/actions/bulk`` with ``[{"cmd":"add"|"delete","fields":{...}}]``.

Data source → table rule (HA3 names API-push data sources after the table, sometimes with
the instance id in front): the first of these that names an existing table wins —
1. ``{data_source}`` itself;  2. without a ``_datasource`` / ``-datasource`` suffix;
3. the part after the first ``_`` (``{instance}_{table}``), then after each later ``_``.
Unknown → 404. The SDK's ``X-Opensearch-Swift-PK-Field`` header, when sent, must name the
table's primary key.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from adapter.errors import NotFoundError, PayloadTooLargeError, QueryError
from adapter.server import docs
from adapter.ingest.push import PushReport, apply_push
from adapter.plan.engine import Engine
from adapter.runtime import Runtime
from adapter.server.auth import writer
from adapter.server.common import ServedRuntime, json_body, offload

router = APIRouter(tags=["push"])


def table_for_data_source(engine: Engine, data_source: str) -> str:
    """HA3 pushes name a data source (``<instance>_<table>_datasource`` and the like): the
    table it feeds is the first of its suffixes that names a table."""
    tables = set(engine.list_tables())
    candidates = [data_source]
    for suffix in ("_datasource", "-datasource", "_data_source"):
        if data_source.endswith(suffix):
            candidates.append(data_source[: -len(suffix)])
    for base in list(candidates):
        pos = base.find("_")
        while pos != -1:
            candidates.append(base[pos + 1:])
            pos = base.find("_", pos + 1)
    for name in candidates:
        if name in tables:
            return name
    raise NotFoundError(f"no table for data source '{data_source}' (tables: "
                        f"{', '.join(sorted(tables)) or 'none'})", "path data_source")


def _failure_items(report: PushReport) -> list[dict]:
    items = []
    for f in report.failures:
        d = f.to_dict()
        where = f" (command {d['offset']})" if d.get("offset") is not None else ""
        items.append({"code": 4020, "message": f"document {d.get('pk')!r}{where}: {d.get('reason')}: "
                                               f"{d.get('message', '')}".rstrip(": "), **d})
    return items


def do_push(runtime: Runtime, data_source: str, pk_header: str | None, commands: list) -> tuple[int, dict]:
    table = table_for_data_source(runtime.engine, data_source)
    spec = runtime.engine.get_spec(table)
    if pk_header and pk_header != spec.primary_key:
        raise QueryError(f"X-Opensearch-Swift-PK-Field '{pk_header}' is not the primary key of table "
                         f"'{table}' ('{spec.primary_key}')", "header X-Opensearch-Swift-PK-Field")
    report = apply_push(runtime.ingest_parts(), table, commands)
    written, failures = int(report.written), _failure_items(report)
    if runtime.metrics is not None:
        runtime.metrics.pushed.labels(table, "ok").inc(written)
        runtime.metrics.pushed.labels(table, "failed").inc(len(failures))
    if failures:
        # Good documents are written; the client still learns (and raises on) the bad ones.
        return 400, {"status": "FAIL", "result": False, "written": written, "errors": failures}
    return 200, {"status": "OK", "result": True, "written": written, "errors": []}


@router.post("/update/{data_source}/actions/bulk", summary="push documents (add / delete)",
             openapi_extra=docs.body(array_of=docs.PushCommand))
async def push_bulk(data_source: str, request: Request, runtime: ServedRuntime, _=Depends(writer)) -> JSONResponse:
    commands = await json_body(request, expect=list)
    limit = request.app.state.settings.limits.max_push_documents
    if len(commands) > limit:
        raise PayloadTooLargeError(f"{len(commands)} commands in one push; the limit is {limit} per request",
                                   "$")
    status, body = await offload(do_push, runtime, data_source,
                                 request.headers.get("x-opensearch-swift-pk-field"), commands)
    body["request_id"] = request.state.request_id
    return JSONResponse(body, status_code=status)
