"""Vector-service REST API (``POST /vector-service/<endpoint>``): requests → plans → envelope.

What the official SDKs send (read from the installed packages, not guessed):

* ``alibabacloud_ha3engine_vector`` (client.py / models.py): every call is
  ``POST /vector-service/{query|inference-query|multi-query|fetch|search|aggregate|
  batch-query|stats}`` with ``authorization: Basic base64(user:pass)`` and a JSON body
  made by ``TeaModel.to_map()``: camelCase keys, unset ones omitted, except
  ``QueryRequest`` which ALWAYS sends ``"sorts": []``. Field types: ``vector`` list of
  floats (several vectors concatenated, with ``vectorCount``), ``searchParams`` a JSON
  STRING, ``filter`` and ``sort`` strings (HA3 filter / sort syntax), ``kvpairs``
  dict[str,str], ``ids`` list of strings, ``sorts`` [{order: ASC|DESC, expression}],
  ``sparseData`` {count, indices, values}. ``stats`` sends only ``{"tableName"}``.
  ``SearchRequest`` = {tableName, size, from, order, outputFields, knn: QueryRequest,
  text: {queryString, queryParams, filter, weight, terminateAfter}, rank: {rrf: {..}}};
  ``AggregateRequest`` = {tableName, filter, groupKeys, aggFuncs: [{name, func, args}],
  orderBy: [{field, direction}], timeout}; ``BatchRequest`` = {queries, timeout};
  ``MultiQueryRequest`` = {tableName, queries, topK, includeVector, outputFields, order,
  filter, sort, mode} (mode default sum). The SDK's ``query_async`` posts a single
  QueryRequest to ``/batch-query`` (an SDK bug), so batch-query also accepts a bare
  QueryRequest and answers it as a batch of one.
* The response model is ``SearchResponse{headers, body: str}``: the SDK does NOT parse the
  body, so the envelope below follows the public docs (REFERENCE §3, unverified there):
  ``{"result": [{"id", "score", "fields"?, "vector"?}], "totalCount", "totalTime" (ms),
  "errorCode": 0, "errorMsg": ""}``; ``fields`` only with outputFields, ``vector`` only
  with includeVector. 4xx/5xx bodies are parsed by the SDK as JSON into the raised
  TeaException's ``data.errors``: we send the same envelope with errorCode/errorMsg.
* ``alibabacloud_ha3engine`` (HA queries): ``search`` does ``GET /query?query=<the whole
  HA string, URL-encoded>`` or ``POST /query`` with body ``{"assemblyQuery": "<HA string>"}``
  (``POST /query?type=sql`` for SQL, out of scope). Responses are raw strings too.

Our choices where the real service's behaviour is unknown:
* hybrid ``search``: our engines have no inverted text index, so the text leg embeds the
  text (``queryString``; the quoted parts of ``index:'...'`` terms) with the table's
  built-in model and runs it as a second k-NN leg. Fusion: weighted sum of proxima scores
  (weights from knn.weight / text.weight, default 1) ordered like the distance, or RRF
  (``rank.rrf``: ``rankConstant``/``rank_constant``/``k``, default 60), descending.
* ``stats`` answers ``{"result": {"tableName", "totalDocCount", "indexType",
  "generation", ...}}``; ``aggregate`` answers rows ``{group keys..., func labels...}``;
  ``batch-query`` answers ``{"result": [<one envelope per query>]}``.
* ``sparseData``, ``namespace``, ``textQueryString``, ``video*`` are accepted and ignored.
"""

from __future__ import annotations

import json
import re
import time
from typing import Annotated, Any, Callable, Literal, Protocol

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from adapter.embed.base import Embedder
from adapter.errors import AdapterError, QueryError
from adapter.plan.engine import Engine
from adapter.plan.records import Hit, SearchResult
from adapter.plan.tree import RANK, AggFunc, AggregatePlan, FetchPlan, SearchPlan, SortKey, filter_fields
from adapter.query.embedding import embed_content
from adapter.query.executor import execute
from adapter.query.haquery import MAX_QUERY_VECTORS, decode_base64, parse_filter, parse_search_params_json, parse_sort
from adapter.query.planner import (check_dimension, check_fields, default_sort, engine_sort,
                                   translate_search_params)
from adapter.schema.model import TableSpec
from adapter.vectors import float32_score, vectors_problem


class Services(Protocol):
    """What requests run on (the service's Runtime has both)."""

    engine: Engine
    embedder: Embedder | None


MAX_TOPK = 10000
MAX_OFFSET = 2**31 - 1  # fetch paging: far beyond any table, inside every engine's integer
# Work one request may ask for, summed over all its queries: k-NN searches (MAX_QUERY_VECTORS,
# contents included) and contents to embed (the dear part: ~30 ms each on a CPU).
MAX_QUERY_CONTENTS = 16

# Scores and weights: finite and within float32 range (a NaN threshold silently matched nothing).
Score = Annotated[float, AfterValidator(float32_score)]


class _Req(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")


class SortSpec(_Req):
    order: Literal["ASC", "DESC", "asc", "desc"] | None = None
    expression: str


class QueryRequest(_Req):
    tableName: str
    vector: list[float] | None = None
    vectorCount: int | None = None
    namespace: str | None = None
    topK: int = 100
    indexName: str | None = None
    sparseData: dict[str, Any] | None = None
    weight: Score | None = None
    content: str | None = None
    contents: list[str] | None = None
    modal: Literal["text", "image"] | None = None
    includeVector: bool = False
    outputFields: list[str] | None = None
    order: Literal["ASC", "DESC", "asc", "desc"] | None = None
    searchParams: str | dict[str, Any] | None = None
    textQueryString: str | None = None
    filter: str | None = None
    scoreThreshold: Score | None = None
    sort: str | None = None
    kvpairs: dict[str, Any] | None = None
    contentType: str | None = None
    videoFrameTopK: int | None = None
    sorts: list[SortSpec] = Field(default_factory=list)


class MultiQueryRequest(_Req):
    tableName: str
    queries: list[QueryRequest] = Field(max_length=MAX_QUERY_VECTORS)
    topK: int = 100
    includeVector: bool = False
    outputFields: list[str] | None = None
    order: Literal["ASC", "DESC", "asc", "desc"] | None = None
    filter: str | None = None
    sort: str | None = None
    mode: Literal["sum", "max", "min"] = "sum"


class FetchRequest(_Req):
    tableName: str
    ids: list[str | int] | None = Field(None, max_length=MAX_TOPK)
    filter: str | None = None
    sort: str | None = None
    limit: int = Field(100, ge=0, le=MAX_TOPK)
    offset: int = Field(0, ge=0, le=MAX_OFFSET)
    includeVector: bool = False
    outputFields: list[str] | None = None
    kvpairs: dict[str, Any] | None = None


class KnnQuery(QueryRequest):
    """The knn leg of a hybrid search: its tableName defaults to the request's."""

    tableName: str | None = None  # type: ignore[assignment]


class TextQuery(_Req):
    queryString: str
    queryParams: dict[str, Any] | None = None
    filter: str | None = None
    weight: Score = 1.0
    terminateAfter: int | None = None


class RankQuery(_Req):
    rrf: dict[str, Any] | None = None


class SearchRequest(_Req):
    tableName: str
    size: int = Field(10, ge=1, le=MAX_TOPK)
    from_: int = Field(0, ge=0, le=MAX_TOPK, alias="from")
    order: Literal["ASC", "DESC", "asc", "desc"] | None = None
    outputFields: list[str] | None = None
    knn: KnnQuery | None = None
    text: TextQuery | None = None
    rank: RankQuery | None = None


class AggFuncDesc(_Req):
    name: str | None = None
    func: Literal["count", "sum", "min", "max", "avg"]
    args: list[str] = Field(default_factory=list)


class OrderByDesc(_Req):
    field: str
    direction: Literal["ASC", "DESC", "asc", "desc"] = "ASC"


class AggregateRequest(_Req):
    tableName: str
    filter: str | None = None
    groupKeys: list[str] = Field(default_factory=list)
    aggFuncs: list[AggFuncDesc]
    orderBy: list[OrderByDesc] = Field(default_factory=list)
    timeout: int | None = None


class BatchRequest(_Req):
    queries: list[QueryRequest] = Field(max_length=MAX_QUERY_VECTORS)
    timeout: int | None = None


class StatsRequest(_Req):
    tableName: str


# -- envelope ------------------------------------------------------------------------


def envelope(result: list[Any] | dict[str, Any], total: int, elapsed_s: float) -> dict[str, Any]:
    return {"result": result, "totalCount": total, "totalTime": round(elapsed_s * 1000, 3),
            "errorCode": 0, "errorMsg": ""}


def format_vector_error(err: AdapterError) -> dict[str, Any]:
    return {"result": [], "totalCount": 0, "totalTime": 0, "errorCode": err.code, "errorMsg": str(err)}


def _hit_item(hit: Hit, output_fields: list[str] | None, include_vector: bool) -> dict[str, Any]:
    item: dict[str, Any] = {"id": hit.pk, "score": hit.score}
    if output_fields:
        item["fields"] = {f: hit.fields.get(f) for f in output_fields if f in hit.fields}
    elif output_fields is None:
        item["fields"] = dict(hit.fields)
    if include_vector:
        item["vector"] = hit.vector
    return item


# -- request → plan --------------------------------------------------------------------


def _located(fn: Callable[[], Any], path: str) -> Any:
    """Re-locate a query-string style error (``query offset N``) at a JSON path."""
    try:
        return fn()
    except QueryError as exc:
        where = exc.location.replace("query offset", "offset") if exc.location else ""
        raise QueryError(exc.message, f"{path} ({where})" if where else path) from None


def _filter(spec: TableSpec, text: str | None, path: str):
    if text is None or not text.strip():
        return None
    expr = _located(lambda: parse_filter(text), path)
    check_fields(spec, filter_fields(expr), "filter", path)
    return expr


def _rank_sort(spec: TableSpec, order: str | None, sort: str | None, sorts: list[SortSpec], path: str) -> list[SortKey]:
    keys: list[SortKey] = []
    if sort and sort.strip():
        keys = _located(lambda: parse_sort(sort), f"{path}.sort")
    for i, s in enumerate(sorts):
        name = s.expression.strip()
        keys.append(SortKey(field=RANK if name.upper() == RANK else name,
                            descending=(s.order or "ASC").upper() == "DESC"))
    if order:
        rank = SortKey(field=RANK, descending=order.upper() == "DESC")
        keys = [rank if k.field == RANK else k for k in keys] or [rank]
    check_fields(spec, {k.field for k in keys}, "sort", f"{path}.sort", allow_rank=True)
    # literal score order (ASC/DESC, +/-RANK) → engine relevance order
    return engine_sort(keys, spec) if keys else default_sort()


def _search_params(raw: str | dict[str, Any] | None, path: str):
    if raw is None:
        return translate_search_params({}, path)[0]
    data = raw if isinstance(raw, dict) else _located(lambda: parse_search_params_json(raw), path)
    return translate_search_params(data, path)[0]


def _check_output(spec: TableSpec, fields: list[str] | None, path: str) -> None:
    if fields:
        check_fields(spec, set(fields), "output", path)


def _spec(runtime: Services, table: str) -> TableSpec:
    return runtime.engine.get_spec(table)


def check_work(queries: list[QueryRequest], path: str = "$", *, extra_contents: int = 0) -> None:
    """Refuse, before any embedding or search, a request asking for more than one request may."""
    vectors = contents = extra_contents
    for q in queries:
        if q.vector:
            vectors += q.vectorCount or 1
        else:
            n = len(q.contents) if q.contents else int(q.content is not None)
            vectors += n
            contents += n
    if vectors > MAX_QUERY_VECTORS:
        raise QueryError(f"{vectors} query vectors in one request; the limit is {MAX_QUERY_VECTORS} "
                         "(vectorCount, contents and queries together)", path)
    if contents > MAX_QUERY_CONTENTS:
        raise QueryError(f"{contents} contents to embed in one request; the limit is {MAX_QUERY_CONTENTS}", path)


def _query_vectors(req: QueryRequest, spec: TableSpec, runtime: Services, path: str) -> list[list[float]]:
    if req.indexName and req.indexName not in (spec.vector_index.name, spec.vector_field):
        raise QueryError(f"unknown index {req.indexName!r} in table {spec.name!r}", f"{path}.indexName")
    if req.vector:
        count = req.vectorCount or 1
        if count < 1 or len(req.vector) != count * spec.dimension:
            raise QueryError(f"vector has {len(req.vector)} values; expected vectorCount ({count}) x "
                             f"dimension ({spec.dimension})", f"{path}.vector")
        arr = np.asarray(req.vector, dtype=np.float64).reshape(count, spec.dimension)
        problem = vectors_problem(arr)
        if problem:
            raise QueryError(f"vector {problem}", f"{path}.vector")
        return arr.tolist()
    contents = req.contents or ([req.content] if req.content is not None else [])
    if not contents:
        raise QueryError("give vector, or content/contents with modal", f"{path}.vector")
    return [_embedded(spec, runtime, c, req.modal or "text", f"{path}.content") for c in contents]


def _embedded(spec: TableSpec, runtime: Services, content: str, modal: str, path: str) -> list[float]:
    """Text is plain text; an image is Base64 (adapter.base64text's rule)."""
    data = _located(lambda: decode_base64(content), path) if modal == "image" else content
    return embed_content(runtime.embedder, spec, data, modal, path).tolist()


def plan_query(req: QueryRequest, runtime: Services, path: str = "$") -> SearchPlan:
    spec = _spec(runtime, req.tableName)
    if not 1 <= req.topK <= MAX_TOPK:
        raise QueryError(f"topK must be in 1..{MAX_TOPK}, got {req.topK}", f"{path}.topK")
    _check_output(spec, req.outputFields, f"{path}.outputFields")
    vectors = _query_vectors(req, spec, runtime, path)
    return SearchPlan(
        table=spec.name, vectors=vectors, k=req.topK, multi_vector_mode="sum",
        filter=_filter(spec, req.filter, f"{path}.filter"),
        sort=_rank_sort(spec, req.order, req.sort, req.sorts, path),
        output_fields=req.outputFields or [], include_vector=req.includeVector,
        score_threshold=req.scoreThreshold,
        search_params=_search_params(req.searchParams, f"{path}.searchParams"),
        start=0, hit=req.topK,
    )


def _run(plan: SearchPlan, runtime: Services) -> SearchResult:
    return execute(plan, runtime.engine, runtime.embedder)


def _hits_envelope(result: SearchResult, output: list[str] | None, include_vector: bool, t0: float) -> dict:
    items = [_hit_item(h, output, include_vector) for h in result.hits]
    return envelope(items, result.total, time.perf_counter() - t0)


# -- endpoints -------------------------------------------------------------------------


def handle_query(body: dict, runtime: Services) -> dict:
    t0 = time.perf_counter()
    req = _model(QueryRequest, body)
    check_work([req])
    plan = plan_query(req, runtime)
    return _hits_envelope(_run(plan, runtime), req.outputFields or [], req.includeVector, t0)


def handle_multi_query(body: dict, runtime: Services) -> dict:
    """All queries' vectors in one plan; the engine merges per pk with ``mode``."""
    t0 = time.perf_counter()
    req = _model(MultiQueryRequest, body)
    if not req.queries:
        raise QueryError("queries is empty", "$.queries")
    check_work(req.queries, "$.queries")
    spec = _spec(runtime, req.tableName)
    if not 1 <= req.topK <= MAX_TOPK:
        raise QueryError(f"topK must be in 1..{MAX_TOPK}, got {req.topK}", "$.topK")
    _check_output(spec, req.outputFields, "$.outputFields")
    vectors: list[list[float]] = []
    for i, q in enumerate(req.queries):
        vectors += _query_vectors(q, spec, runtime, f"$.queries[{i}]")
    plan = SearchPlan(
        table=spec.name, vectors=vectors, k=req.topK, multi_vector_mode=req.mode,
        filter=_filter(spec, req.filter, "$.filter"), sort=_rank_sort(spec, req.order, req.sort, [], "$"),
        output_fields=req.outputFields or [], include_vector=req.includeVector, start=0, hit=req.topK,
    )
    return _hits_envelope(_run(plan, runtime), req.outputFields or [], req.includeVector, t0)


def handle_fetch(body: dict, runtime: Services) -> dict:
    t0 = time.perf_counter()
    req = _model(FetchRequest, body)
    spec = _spec(runtime, req.tableName)
    _check_output(spec, req.outputFields, "$.outputFields")
    ids = None
    if req.ids is not None:
        pk_type = spec.field(spec.primary_key).type
        ids = []
        for i, v in enumerate(req.ids):
            if pk_type.is_integer:
                try:
                    ids.append(int(v))
                except (TypeError, ValueError):
                    raise QueryError(f"id {v!r} is not an integer (primary key {spec.primary_key!r} is "
                                     f"{pk_type.value})", f"$.ids[{i}]") from None
            else:
                ids.append(str(v))
    sort = _located(lambda: parse_sort(req.sort), "$.sort") if req.sort and req.sort.strip() else []
    check_fields(spec, {k.field for k in sort}, "sort", "$.sort")
    plan = FetchPlan(table=spec.name, ids=ids, filter=_filter(spec, req.filter, "$.filter"), sort=sort,
                     limit=req.limit, offset=req.offset, output_fields=req.outputFields,
                     include_vector=req.includeVector)
    result = runtime.engine.fetch(plan)
    items = []
    for h in result.hits:
        item = _hit_item(h, req.outputFields, req.includeVector)
        item.pop("score", None)
        items.append(item)
    return envelope(items, result.total, time.perf_counter() - t0)


_QUOTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\s*:\s*'([^']*)'")


def text_of_query_string(qs: str) -> str:
    """``title:'red shoes' AND desc:'leather'`` → ``red shoes leather``; plain text as is."""
    parts = _QUOTED.findall(qs)
    return " ".join(p.strip() for p in parts if p.strip()) if parts else qs.strip()


def handle_search(body: dict, runtime: Services) -> dict:
    t0 = time.perf_counter()
    req = _model(SearchRequest, body)
    spec = _spec(runtime, req.tableName)
    if req.knn is None and req.text is None:
        raise QueryError("search needs knn, text or both", "$")
    check_work([req.knn] if req.knn is not None else [], "$", extra_contents=int(req.text is not None))
    _check_output(spec, req.outputFields, "$.outputFields")
    depth = req.from_ + req.size
    output = req.outputFields or []
    legs: list[tuple[SearchResult, float]] = []
    if req.knn is not None:
        knn = QueryRequest.model_validate({**req.knn.model_dump(), "tableName": spec.name,
                                           "topK": max(req.knn.topK, depth), "outputFields": output or None})
        plan = plan_query(knn, runtime, "$.knn")
        legs.append((_run(plan, runtime), req.knn.weight if req.knn.weight is not None else 1.0))
    if req.text is not None:
        text = text_of_query_string(req.text.queryString)
        vec = _embedded(spec, runtime, text, "text", "$.text.queryString")
        k = min(MAX_TOPK, max(depth, req.knn.topK if req.knn else 100))  # as deep as the knn leg
        plan = SearchPlan(table=spec.name, vectors=[vec], k=k,
                          filter=_filter(spec, req.text.filter, "$.text.filter"),
                          sort=default_sort(), output_fields=output, start=0, hit=k)
        legs.append((_run(plan, runtime), req.text.weight))
    if req.rank and req.rank.rrf is not None:
        k = _rank_constant(req.rank.rrf)
        fused = fuse_rrf([r.hits for r, _ in legs], k)
        descending = True
    else:
        fused = fuse_weighted([(r.hits, w) for r, w in legs])
        descending = spec.distance.higher_is_better
    if req.order:
        descending = req.order.upper() == "DESC"
    fused.sort(key=lambda h: h.score, reverse=descending)
    page = fused[req.from_: req.from_ + req.size]
    items = [_hit_item(h, output, False) for h in page]
    return envelope(items, len(fused), time.perf_counter() - t0)


def _rank_constant(rrf: dict[str, Any]) -> float:
    """RRF's k: a number >= 0 (1 / (k + rank) needs k + 1 > 0)."""
    raw = rrf.get("rankConstant", rrf.get("rank_constant", rrf.get("k", 60)))
    try:
        k = float(raw)
    except (TypeError, ValueError):
        raise QueryError(f"rank constant must be a number, got {raw!r}", "$.rank.rrf.rankConstant") from None
    if not 0 <= k <= 1e9:
        raise QueryError(f"rank constant must be in 0..1e9, got {raw!r}", "$.rank.rrf.rankConstant")
    return k


def fuse_weighted(legs: list[tuple[list[Hit], float]]) -> list[Hit]:
    merged: dict[Any, Hit] = {}
    for hits, weight in legs:
        for h in hits:
            m = merged.setdefault(h.pk, Hit(pk=h.pk, score=0.0, fields=dict(h.fields), vector=h.vector))
            m.score += weight * float(h.score)
    return list(merged.values())


def fuse_rrf(legs: list[list[Hit]], k: float = 60.0) -> list[Hit]:
    """Reciprocal rank fusion: sum over legs of 1 / (k + rank), rank from 1."""
    merged: dict[Any, Hit] = {}
    for hits in legs:
        for rank, h in enumerate(hits, start=1):
            m = merged.setdefault(h.pk, Hit(pk=h.pk, score=0.0, fields=dict(h.fields), vector=h.vector))
            m.score += 1.0 / (k + rank)
    return list(merged.values())


def handle_aggregate(body: dict, runtime: Services) -> dict:
    t0 = time.perf_counter()
    req = _model(AggregateRequest, body)
    spec = _spec(runtime, req.tableName)
    check_fields(spec, set(req.groupKeys), "group", "$.groupKeys")
    funcs = []
    for i, f in enumerate(req.aggFuncs):
        args = [a for a in f.args if a and a != "*"]
        if f.func != "count" and len(args) != 1:
            raise QueryError(f"{f.func} takes exactly one field", f"$.aggFuncs[{i}].args")
        check_fields(spec, set(args), "aggregate", f"$.aggFuncs[{i}].args")
        funcs.append(AggFunc(func=f.func, field=args[0] if args and f.func != "count" else None, name=f.name))
    if not funcs:
        raise QueryError("aggFuncs is empty", "$.aggFuncs")
    plan = AggregatePlan(table=spec.name, group_keys=req.groupKeys, funcs=funcs,
                         filter=_filter(spec, req.filter, "$.filter"))
    rows = [{**g["key"], **g["values"]} for g in runtime.engine.aggregate(plan)]
    known = set(req.groupKeys) | {f.label for f in funcs}
    for i, ob in reversed(list(enumerate(req.orderBy))):
        if ob.field not in known:
            raise QueryError(f"orderBy field {ob.field!r} is not a group key or function label "
                             f"({', '.join(sorted(known))})", f"$.orderBy[{i}].field")
        rows.sort(key=lambda r: (r.get(ob.field) is None, r.get(ob.field)), reverse=ob.direction.upper() == "DESC")
    return envelope(rows, len(rows), time.perf_counter() - t0)


def handle_batch_query(body: dict, runtime: Services) -> dict:
    t0 = time.perf_counter()
    if "queries" not in body and "tableName" in body:
        body = {"queries": [body]}  # the SDK's query_async posts one QueryRequest here
    req = _model(BatchRequest, body)
    check_work(req.queries, "$.queries")
    out = []
    for i, q in enumerate(req.queries):
        plan = plan_query(q, runtime, f"$.queries[{i}]")
        out.append(_hits_envelope(_run(plan, runtime), q.outputFields or [], q.includeVector, time.perf_counter()))
    return envelope(out, len(out), time.perf_counter() - t0)


def handle_stats(body: dict, runtime: Services) -> dict:
    t0 = time.perf_counter()
    req = _model(StatsRequest, body)
    s = runtime.engine.stats(req.tableName)
    result = {"tableName": s.table, "totalDocCount": s.doc_count, "indexType": s.index_type,
              "generation": s.generation, **s.extra}
    return envelope(result, s.doc_count, time.perf_counter() - t0)


def _model(cls: type[BaseModel], body: Any) -> Any:
    if not isinstance(body, dict):
        raise QueryError("request body must be a JSON object", "$")
    try:
        return cls.model_validate(body)
    except ValidationError as exc:
        e = exc.errors()[0]
        path = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"])
        raise QueryError(f"{e['msg']}", path) from None


HANDLERS: dict[str, Callable[[dict, Any], dict]] = {
    "query": handle_query,
    "inference-query": handle_query,  # same model; content/modal instead of vector
    "multi-query": handle_multi_query,
    "fetch": handle_fetch,
    "search": handle_search,
    "aggregate": handle_aggregate,
    "batch-query": handle_batch_query,
    "stats": handle_stats,
}


def handle(endpoint: str, body: dict, runtime: Services) -> dict:
    """Answer one vector-service request; raises AdapterError subclasses on bad input
    (render them with ``format_vector_error``)."""
    fn = HANDLERS.get(endpoint)
    if fn is None:
        raise QueryError(f"unknown vector-service endpoint {endpoint!r} "
                         f"(one of {', '.join(sorted(HANDLERS))})", "path")
    return fn(body, runtime)


def answer(endpoint: str, body: Any, runtime: Services) -> tuple[dict[str, Any], int]:
    """``handle`` for the HTTP layer: (envelope, HTTP status); bad input never raises."""
    try:
        return handle(endpoint, body, runtime), 200
    except AdapterError as err:
        return format_vector_error(err), err.http_status
