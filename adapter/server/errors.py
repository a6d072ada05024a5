"""Error responses in the shape each client expects, chosen by the request path.

- HA query (``/query``, ``/{index}/search``) and anything else: ``{"errors":[{"code","message"}],
  "result":{...empty...},"tracer":"", "request_id"}``.
- vector service (``/vector-service/...``, ``/network/active``): ``{"errorCode","errorMsg",
  "result":[],"totalCount":0,"totalTime":0}``.
- push (``/update/.../actions/bulk``): ``{"status":"FAIL","errors":[{"code","message"}],"request_id"}``.
- table management (``/openapi/...``): Alibaba OpenAPI style ``{"requestId","code","message"}``.

Every AdapterError keeps its own http_status; anything unexpected is logged (without the
request body) and answered 500 in the same shape so clients still parse it.
"""

from __future__ import annotations

import logging
import uuid

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from adapter.errors import AdapterError, AuthError, QueryError
from adapter.storage import storage_failure

log = logging.getLogger("adapter.server")

def request_id(request: Request | None) -> str:
    rid = getattr(request.state, "request_id", None) if request is not None else None
    return rid or uuid.uuid4().hex


def error_body(path: str, err: AdapterError, rid: str) -> dict:
    item = err.to_dict()
    if path.startswith("/vector-service") or path.startswith("/network"):
        from adapter.query.vector_service import format_vector_error

        return {**format_vector_error(err), "requestId": rid}
    if path.startswith("/update/"):
        return {"status": "FAIL", "errors": [item], "request_id": rid}
    if path.startswith("/openapi/"):
        return {"requestId": rid, "code": str(item["code"]), "message": item["message"],
                "httpCode": err.http_status}
    from adapter.query.format import format_ha_error

    body = format_ha_error(err)
    body["request_id"] = rid
    return body


def error_response(path: str, err: AdapterError, rid: str, *, challenge: bool = True) -> JSONResponse:
    headers = {"X-Request-Id": rid}
    # No challenge for the search page's own fetches (X-Requested-With): a browser would
    # answer WWW-Authenticate with its modal prompt instead of letting the page's form sign in.
    if isinstance(err, AuthError) and challenge:
        headers["WWW-Authenticate"] = 'Basic realm="ha3-adapter", charset="UTF-8"'
    retry_after = getattr(err, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return JSONResponse(error_body(path, err, rid), status_code=err.http_status, headers=headers)


class HttpStatusError(AdapterError):
    """Framework-level 4xx (unknown route, wrong method) in our error family."""

    def __init__(self, status: int, message: str):
        super().__init__(message, code=4000 + status if status < 1000 else status)
        self.http_status = status


def install(app) -> None:
    @app.exception_handler(AdapterError)
    async def _adapter_error(request: Request, exc: AdapterError):
        return error_response(request.url.path, exc, request_id(request),
                              challenge="x-requested-with" not in request.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errs = exc.errors()
        first = errs[0] if errs else {"loc": (), "msg": "invalid request"}
        loc = "$." + ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        err = QueryError(f"invalid request: {first.get('msg')}", loc.rstrip("."))
        return error_response(request.url.path, err, request_id(request))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else "request rejected"
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"method {request.method} not allowed on {request.url.path}"
        return error_response(request.url.path, HttpStatusError(exc.status_code, message), request_id(request))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        rid = request_id(request)
        storage = storage_failure(exc)
        if storage is not None:  # a full or read-only disk: not a bug, and /health says so
            request.app.state.storage_health.failed(storage)
            log.warning("storage failure request_id=%s path=%s: %s", rid, request.url.path, exc)
            return error_response(request.url.path, storage, rid)
        log.exception("unhandled error request_id=%s path=%s", rid, request.url.path)
        err = HttpStatusError(500, f"internal error (request_id {rid})")
        err.code = 5000
        return error_response(request.url.path, err, rid)
