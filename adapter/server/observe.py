"""Per-request timing (embed / engine time), Prometheus metrics and structured access logs.

The engine and the embedding service are wrapped in thin proxies that add the wall time of
each call to a dict held in a ContextVar for the current request. Handlers run their
blocking work in a thread pool, which copies the context: the same dict object is shared,
so the thread's additions are visible to the middleware that writes the response headers
``X-Embed-Time-Ms``, ``X-Engine-Time-Ms``, ``X-Receive-Time-Ms`` (reading the request body
off the socket: the client's and network's pace, not the service's work) and
``X-Service-Time-Ms`` (everything from the first byte handed to the app to the response).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from contextvars import ContextVar
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

TIMINGS: ContextVar[dict | None] = ContextVar("ha3_adapter_timings", default=None)
access_log = logging.getLogger("adapter.access")

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("ha3_adapter_requests_total", "HTTP requests", ["endpoint", "method", "status"],
                                registry=self.registry)
        self.latency = Histogram("ha3_adapter_request_seconds", "HTTP request latency", ["endpoint"],
                                 buckets=_BUCKETS, registry=self.registry)
        self.embed = Histogram("ha3_adapter_embed_seconds", "Embedding time per call", ["op"],
                               buckets=_BUCKETS, registry=self.registry)
        self.engine = Histogram("ha3_adapter_engine_seconds", "Engine time per call", ["op"],
                                buckets=_BUCKETS, registry=self.registry)
        self.pushed = Counter("ha3_adapter_push_documents_total", "Documents pushed", ["table", "outcome"],
                              registry=self.registry)
        self.ready = Gauge("ha3_adapter_ready", "1 once the service is ready", registry=self.registry)

    def add_task_collector(self, tasks: Any) -> None:
        self.registry.register(_TaskCollector(tasks))


class _TaskCollector:
    """Ingest progress from the task registry, read at scrape time."""

    def __init__(self, tasks: Any):
        self.tasks = tasks

    def collect(self):
        fam = GaugeMetricFamily("ha3_adapter_ingest_records", "Ingest task progress (records)",
                                labels=["task", "table", "state", "kind"])
        lister = getattr(self.tasks, "list", None)
        try:
            items = list(lister()) if callable(lister) else []
        except Exception:  # metrics must never fail a scrape
            items = []
        for task in items:
            d = task if isinstance(task, dict) else (task.to_dict() if hasattr(task, "to_dict") else vars(task))
            tid, table, state = str(d.get("id", d.get("task_id", ""))), str(d.get("table", "")), str(d.get("state", d.get("status", "")))
            progress = d.get("progress") or d
            for kind in ("read", "indexed", "failed"):
                val = progress.get(kind) if isinstance(progress, dict) else None
                if isinstance(val, (int, float)):
                    fam.add_metric([tid, table, state, kind], float(val))
        yield fam

    def describe(self):
        return []


def add_timing(key: str, seconds: float) -> None:
    bucket = TIMINGS.get()
    if bucket is not None:
        bucket[key] = bucket.get(key, 0.0) + seconds


class _Timed:
    """Proxy that times every public method call of ``target`` into ``key``.

    The timing wrapper and its histogram child are made once per method name (queries call
    the same few methods every time; building them per call showed up in profiles).
    """

    _key = ""

    def __init__(self, target: Any, histogram: Histogram):
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_hist", histogram)
        object.__setattr__(self, "_wrappers", {})

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if name.startswith("_") or not callable(attr):
            return attr
        wrapper = self._wrappers.get(name)
        if wrapper is None or wrapper.__wrapped__ != attr:
            wrapper = self._wrappers[name] = self._wrap(name, attr)
        return wrapper

    def _wrap(self, name: str, attr: Any) -> Any:
        key, observe = self._key, self._hist.labels(name).observe

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return attr(*args, **kwargs)
            finally:
                dt = time.perf_counter() - t0
                add_timing(key, dt)
                observe(dt)

        timed.__wrapped__ = attr
        return timed

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._target, name, value)

    def unwrap(self) -> Any:
        return self._target


class TimedEngine(_Timed):
    _key = "engine"


class TimedEmbedder(_Timed):
    _key = "embed"


def endpoint_label(path: str) -> str:
    """Low-cardinality endpoint name for metrics (table names and ids removed)."""
    parts = [p for p in path.split("/") if p]
    if not parts:
        return "/"
    if parts[0] == "vector-service":
        return "/vector-service/" + (parts[1] if len(parts) > 1 else "")
    if parts[0] == "update":
        return "/update/{data_source}/actions/bulk"
    if parts[0] == "openapi":
        tail = parts[5:] if len(parts) > 5 else []
        return "/openapi/tables" + ("/{table}" if tail else "") + ("/" + tail[1] if len(tail) > 1 else "")
    if parts[0] in ("query", "health", "metrics", "network", "openapi.json", "docs"):
        return "/" + "/".join(parts[:2])
    if len(parts) == 2 and parts[1] == "search":
        return "/{index}/search"
    return "other"


class ObserveMiddleware:
    """Pure ASGI: request id, timings headers, metrics and one JSON access-log line.

    Logs method, path (never the query string: it may carry Base64 images), status, sizes,
    durations and the user name; never headers or bodies.
    """

    def __init__(self, app, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        rid = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        timings: dict = {}
        token = TIMINGS.set(timings)
        info = {"status": 500, "bytes_out": 0}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                info["status"] = message["status"]
                total = time.perf_counter() - t0
                headers = list(message.get("headers", []))
                headers += [
                    (b"x-request-id", rid.encode()),
                    (b"x-embed-time-ms", f"{timings.get('embed', 0.0) * 1000:.3f}".encode()),
                    (b"x-engine-time-ms", f"{timings.get('engine', 0.0) * 1000:.3f}".encode()),
                    (b"x-receive-time-ms", f"{timings.get('receive', 0.0) * 1000:.3f}".encode()),
                    (b"x-service-time-ms", f"{total * 1000:.3f}".encode()),
                ]
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body":
                info["bytes_out"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            TIMINGS.reset(token)
            elapsed = time.perf_counter() - t0
            label = endpoint_label(scope.get("path", ""))
            self.metrics.requests.labels(label, scope.get("method", ""), str(info["status"])).inc()
            self.metrics.latency.labels(label).observe(elapsed)
            if access_log.isEnabledFor(logging.INFO):
                state = scope.get("state", {})
                access_log.info(json.dumps({
                    "request_id": rid, "method": scope.get("method"), "path": scope.get("path"),
                    "status": info["status"], "ms": round(elapsed * 1000, 3),
                    "embed_ms": round(timings.get("embed", 0.0) * 1000, 3),
                    "engine_ms": round(timings.get("engine", 0.0) * 1000, 3),
                    "bytes_out": info["bytes_out"], "user": state.get("user"),
                }))
