"""Vector-service endpoints: ``POST /vector-service/{query,inference-query,...}`` and
``GET /network/active``.

The ``alibabacloud_ha3engine_vector`` SDK posts the request model's camelCase map as JSON
(``tableName``, ``vector``, ``content``, ``modal``, ``topK``, ...), optionally deflated,
and reads the response body as a string. ``adapter.query.vector_service.handle`` does the
work and builds the envelope; errors use the same envelope (see errors.py).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from adapter.server import docs
from adapter.server.auth import reader
from adapter.runtime import Runtime
from adapter.server.common import ServedRuntime, json_bytes, offload, parse_json

router = APIRouter(tags=["vector service"])

ENDPOINTS = ("query", "inference-query", "multi-query", "fetch", "search", "aggregate", "batch-query", "stats")


def answer(endpoint: str, body: bytes, runtime: Runtime) -> JSONResponse:
    """Parse, run and render one request (blocking): the whole JSON round trip stays off the
    event loop, which other requests wait on."""
    from adapter.query.vector_service import handle

    return JSONResponse(handle(endpoint, parse_json(body), runtime))


def _make(endpoint: str):
    async def handler(request: Request, runtime: ServedRuntime, _=Depends(reader)) -> JSONResponse:
        return await offload(answer, endpoint, await json_bytes(request), runtime)

    handler.__name__ = "vector_" + endpoint.replace("-", "_")
    return handler


def _body_model(endpoint: str):
    from adapter.query import vector_service as vs

    return {"query": vs.QueryRequest, "inference-query": vs.QueryRequest, "multi-query": vs.MultiQueryRequest,
            "fetch": vs.FetchRequest, "search": vs.SearchRequest, "aggregate": vs.AggregateRequest,
            "batch-query": vs.BatchRequest, "stats": vs.StatsRequest}[endpoint]


for _ep in ENDPOINTS:
    router.add_api_route(f"/vector-service/{_ep}", _make(_ep), methods=["POST"],
                         summary=f"vector service {_ep}", openapi_extra=docs.body(_body_model(_ep)))


@router.get("/network/active", summary="connectivity and credential check (SDK active())")
async def network_active(_=Depends(reader)) -> dict:
    return {"status": "OK", "result": "active", "errorCode": 0, "errorMsg": ""}
