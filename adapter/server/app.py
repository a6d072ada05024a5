"""The HTTP service: ``create_app(runtime) -> FastAPI``.

What the official SDKs send (read from alibabacloud_ha3engine 1.3.12 and
alibabacloud_ha3engine_vector 1.1.19 client.py/models.py; our routes match these exactly)
--------------------------------------------------------------------------------------
Both clients: URL = ``{protocol}://{endpoint}{path}``; ``endpoint`` may carry ``host:port``
(a leading http:// or https:// is stripped). Every request carries
``authorization: Basic base64(user:password)`` (user/password ``strip()``-ed),
``content-type: application/json; charset=utf-8``, a ``user-agent``, and request-id
nonces (``X-Opensearch-Request-ID`` when there is a query string,
``X-Opensearch-Swift-Request-ID`` when there is a body). Bodies are compact JSON
(``ensure_ascii=False``). Any 4xx/5xx raises ``TeaException(code=status,
message=reason phrase, data={"errors": <parsed JSON body or text>})``; 2xx bodies are
returned as the raw string (``SearchResponse.body``), except the vector SDK's OpenAPI calls,
which ``json.loads`` the body and fail on non-JSON. An empty 2xx body becomes
``{"status": reason, "code": status}``. Only connection errors are retried.

alibabacloud_ha3engine (``Client.search`` etc.)
- ``search`` GET (default): ``GET /query?query=<whole HA string>`` (SearchQuery.to_map():
  key ``query``; ``sql`` for SQL). POST: ``POST /query`` body ``{"assemblyQuery": "<HA>"}``;
  SQL: ``POST /query?type=sql`` body ``{"assemblyQuery": "<sql>"}``.
  The seed sample's string: ``config=hit:4,format:json,fetch_summary_type:pk,qrs_chain:search
  &&query=image_index:'<text>&modal=text&n=10&search_params={}'&&cluster=general``.
- ``search_rest(index, body)``: ``POST /{index_name}/search`` with the caller's JSON body.
- ``active()``: ``GET /network/active``.
- ``push_documents(data_source, key_field, PushDocumentsRequestModel(headers, body=[...]))``:
  ``POST /update/{data_source}/actions/bulk`` with headers ``X-Opensearch-Swift-PK-Field:
  key_field`` and ``X-Opensearch-Validate-Data: true``; body ``[{"cmd":"add","fields":{..}},
  {"cmd":"delete","fields":{"id":..}}]``.

alibabacloud_ha3engine_vector (``Client``; instance id = config.instance_id or the first
dot-part of the endpoint)
- ``query`` / ``inference_query`` / ``multi_query`` / ``fetch`` / ``search`` / ``aggregate``
  / ``batch_query`` / ``stats``: ``POST /vector-service/{query, inference-query,
  multi-query, fetch, search, aggregate, batch-query, stats}``, body = request model
  camelCase map: QueryRequest {tableName, vector, vectorCount, namespace, topK, indexName,
  sparseData, weight, content, contents, modal, contentType, includeVector, outputFields,
  order, searchParams, filter, scoreThreshold, sort, sorts, kvpairs, textQueryString,
  videoFrameTopK}; FetchRequest {tableName, ids, filter, sort, limit, offset,
  includeVector, outputFields, kvpairs}; MultiQueryRequest {tableName, queries, topK,
  includeVector, outputFields, order, filter, sort, mode}; SearchRequest {tableName, knn,
  text, rank, size, from, outputFields, order}; AggregateRequest {tableName, filter,
  groupKeys, aggFuncs, orderBy, timeout}; BatchRequest {queries, timeout}; stats
  {tableName}. With runtime option header ``Content-Encoding: deflate`` the body is
  zlib-deflated (never for bulk). Response: raw string body.
- ``active()``: ``GET /network/active``; ``push_documents``: as above.
- OpenAPI: ``GET|POST /openapi/ha3/instances/{id}/tables`` (create: ``?dryRun=``, body
  CreateTableRequest {name, primaryKey, fieldSchema, vectorIndex[], dataSource,
  dataProcessConfig[], partitionCount, ...}); ``GET|PUT|DELETE .../tables/{t}``;
  ``POST .../tables/{t}/reindex`` {dataTimeSec, ossDataPath, partition};
  ``GET .../tables/{t}/index_versions[/{generationId}]``; ``GET .../tasks?start=&end=``;
  ``POST .../indexes/{t}/stopIndex|startIndex``. Responses ``{"requestId", "result"}``;
  errors raise ``TeaException(message=<body text>, data=<parsed body>)``.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from dataclasses import replace

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from adapter.runtime import Runtime
from adapter.storage import StorageHealth
from adapter.server import docs, errors, routes_push, routes_query, routes_tables, routes_ui, routes_vector
from adapter.server.auth import Authenticator, reader
from adapter.server.common import add_routes
from adapter.server.limits import BodyLimitMiddleware
from adapter.server.observe import Metrics, ObserveMiddleware, TimedEmbedder, TimedEngine
from adapter.server.throttle import LoginThrottle
from adapter.server.warmup import warm_up

URL_PATH_ROOM = 8192  # bytes of a URL besides its query string


def _served_runtime(runtime: Runtime, metrics: Metrics) -> Runtime:
    """A Runtime sharing ``runtime``'s parts, with engine and embedder timed per request."""
    return replace(
        runtime,
        engine=TimedEngine(runtime.engine, metrics.engine),
        embedder=TimedEmbedder(runtime.embedder, metrics.embed) if runtime.embedder is not None else None,
        metrics=metrics,
    )


def _data_dirs(settings) -> list:
    """The directories the service writes: its state, and the embedded engine's data."""
    dirs = [settings.state_dir]
    if settings.engine.kind == "embedded" and settings.engine.data_dir is not None:
        dirs.append(settings.engine.data_dir)
    return dirs


def create_app(runtime: Runtime) -> FastAPI:
    settings = runtime.settings
    metrics = Metrics()
    metrics.add_task_collector(runtime.tasks)
    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        if settings.warm_up:
            await run_in_threadpool(warm_up, runtime)
        metrics.ready.set(1)
        yield

    app = FastAPI(
        lifespan=lifespan,
        title="ha3-opensearch-adapter",
        version="0.1.0",
        description="HA3 (OpenSearch Vector Search Edition) compatible image search: HA queries, "
                    "the vector service, push and table management. HTTP Basic auth.",
    )
    app.state.runtime = _served_runtime(runtime, metrics)
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.auth = Authenticator(list(settings.users), required=settings.auth_required)
    app.state.storage_health = StorageHealth(_data_dirs(settings))
    app.state.login_throttle = LoginThrottle(settings.limits.max_failed_logins, settings.limits.failed_login_window_s)
    errors.install(app)
    docs.install(app)

    # Hot paths first (routes match in order); /{index}/search is a catch-all pattern, so
    # routes_query comes after the fixed paths.
    for module in (routes_vector, routes_push, routes_tables, routes_query):
        add_routes(app, module.router)
    routes_ui.include_ui(app)  # the search page: /, /ui/, /ui/static, /ui/thumbnail, /ui/api

    @app.get("/health", tags=["service"], summary="readiness (no auth): ok, degraded or unavailable")
    async def health() -> JSONResponse:
        # ok and degraded (some tables answer 503, or writes fail on a full or read-only disk
        # while searches work) keep the service in rotation; an engine nobody can reach takes it out.
        engine = await run_in_threadpool(app.state.runtime.engine.health)
        body = {"status": engine.pop("status"), "engine": settings.engine.kind, **engine}
        problem = await run_in_threadpool(app.state.storage_health.problem)
        if problem is not None:
            body["storage"] = problem
            if body["status"] == "ok":
                body["status"] = "degraded"
        return JSONResponse(body, status_code=503 if body["status"] == "unavailable" else 200)

    # Any user: the counters name tables and tasks (Prometheus scrapes with basic_auth).
    @app.get("/metrics", tags=["service"], summary="Prometheus metrics (any user)")
    async def prometheus(_=Depends(reader)) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # Outermost first: observe (request id, timings, logs) wraps the size limit.
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.limits.max_body_bytes)
    app.add_middleware(ObserveMiddleware, metrics=metrics)
    return app


def uvicorn_config(app: FastAPI, settings, **overrides):
    """The uvicorn config the service runs with (CLI and tests alike).

    HTTP is parsed by httptools (C) with our caps on the request head (http_protocol.py). The
    SDK's default search is a GET with the whole HA query (a Base64 image included) in the
    URL, so the URL cap follows our query-string limit, plus room for the path. The event loop is uvloop where installed (a dependency off Windows): every
    query hops to a worker thread and back, and uvloop's wake-ups cost a fraction of asyncio's.
    """
    import uvicorn

    from adapter.server.http_protocol import capped_httptools

    max_url = settings.limits.max_query_string_bytes + URL_PATH_ROOM
    options = dict(host=settings.host, port=settings.port, access_log=False, loop="auto",
                   http=capped_httptools(max_url))
    options.update(overrides)
    return uvicorn.Config(app, **options)
