"""Request helpers shared by the route modules: JSON bodies, content types, thread offload."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any, Callable

from fastapi import APIRouter, Depends, FastAPI, Request

from adapter import safejson
from adapter.errors import AdapterError, PayloadTooLargeError, QueryError
from adapter.runtime import Runtime


class UnsupportedMediaTypeError(AdapterError):
    code = 4015
    http_status = 415


def served_runtime(request: Request) -> Runtime:
    """The Runtime this app serves (set once by ``create_app``)."""
    return request.app.state.runtime


# A route parameter ``runtime: ServedRuntime`` receives the app's Runtime.
ServedRuntime = Annotated[Runtime, Depends(served_runtime)]


JSON_TYPES = ("application/json", "text/json", "text/plain", "application/x-www-form-urlencoded")


async def raw_body(request: Request) -> bytes:
    body = await request.body()
    if request.headers.get("content-encoding", "").lower() == "deflate":
        # The vector SDK can deflate request bodies (runtime option Content-Encoding: deflate).
        limit = request.app.state.settings.limits.max_body_bytes
        try:
            d = zlib.decompressobj()
            body = d.decompress(body, limit + 1)
        except zlib.error:
            raise QueryError("body is not valid deflate data", "body") from None
        if len(body) > limit:
            raise PayloadTooLargeError(f"inflated request body over the {limit}-byte limit", "body")
    return body


def check_json_type(request: Request) -> None:
    """415 unless the content type is JSON (or one of the types the SDKs send JSON as)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype and ctype not in JSON_TYPES and not ctype.endswith("+json"):
        raise UnsupportedMediaTypeError(f"content type '{ctype}' not supported: send application/json",
                                        "header content-type")


async def json_bytes(request: Request) -> bytes:
    """The body of a JSON request, still unparsed: hot routes parse it in their worker thread,
    so the event loop only moves bytes."""
    check_json_type(request)
    return await raw_body(request)


def parse_json(body: bytes, *, expect: type | tuple = dict) -> Any:
    """``body`` as JSON of type ``expect``; QueryError (400) with the reason and place otherwise
    (NaN/Infinity literals and nesting over safejson.MAX_DEPTH included)."""
    if not body.strip():
        raise QueryError("request body is empty: expected a JSON document", "body")
    try:
        value = safejson.loads(body)
    except safejson.JsonError as exc:
        raise QueryError(f"malformed JSON: {exc.msg}", exc.where("body")) from None
    if not isinstance(value, expect):
        names = {dict: "an object", list: "an array"}
        want = " or ".join(names.get(t, t.__name__) for t in (expect if isinstance(expect, tuple) else (expect,)))
        raise QueryError(f"request body must be {want}, got {type(value).__name__}", "$")
    return value


async def json_body(request: Request, *, expect: type | tuple = dict) -> Any:
    """The request body as JSON of type ``expect``; 415/400 with the reason otherwise."""
    return parse_json(await json_bytes(request), expect=expect)


def add_routes(app: FastAPI, router: APIRouter) -> None:
    """Register a router's routes on the app's own route list instead of include_router.

    FastAPI 0.16x keeps an included router nested and matches every request through each
    one in turn (about 0.1 ms per request on our CI VM, in-process); APIRouter's routes
    already carry their full paths, tags and dependencies, so flat they work the same.
    """
    app.router.routes.extend(router.routes)


# One pool for every request's blocking work. A plain executor hop costs about half of
# anyio's run_in_threadpool (no capacity limiter or cancel scope to set up), and every
# query pays it once. 40 workers: the same bound Starlette's default limiter sets.
_WORKERS = ThreadPoolExecutor(max_workers=40, thread_name_prefix="ha3-adapter-work")


async def offload(fn: Callable, *args, **kwargs) -> Any:
    """Run blocking work (engine, embedding) off the event loop; context (timings) follows."""
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(_WORKERS, call)
