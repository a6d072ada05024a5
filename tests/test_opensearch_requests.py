"""Every request the OpenSearch engine sends, captured at opensearch-py's connection layer.

No cluster: a Connection subclass records method, path, params and body, and answers from
a small scripted fake, which fails the test on any request it was not scripted for. The real
opensearch-py Transport still serialises, routes and raises. What these tests cover is what
the live node (tests/test_opensearch_live.py) cannot do: faiss graphs and IVF training need
the k-NN plugin's native code, which the Maven Central artefact lacks.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable

import numpy as np
import pytest
from opensearchpy import Connection

from adapter.plan.records import Document
from adapter.engines.opensearch import OpenSearchEngine, from_proxima, to_proxima
from adapter.errors import ConflictError, EngineError, NotFoundError, QueryError
from adapter.plan.tree import (
    AggFunc, AggregatePlan, And, Compare, FetchPlan, InList, Not, Or, SearchParams, SearchPlan, SortKey,
)
from adapter.schema.model import DistanceType, TableSpec, VectorIndexType
from tests.test_engines import DIM, make_docs, make_spec

Handler = Callable[[str, str, dict, Any], tuple[int, Any]]


class Recorder:
    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.routes: list[tuple[str, re.Pattern, Handler]] = []

    def on(self, method: str, path: str, handler: Handler | tuple[int, Any]) -> None:
        fn = handler if callable(handler) else (lambda *_a, _r=handler: _r)
        self.routes.insert(0, (method, re.compile(path + "$"), fn))

    def answer(self, method: str, path: str, params: dict, body: Any) -> tuple[int, Any]:
        for m, pattern, fn in self.routes:
            if m == method and pattern.match(path):
                return fn(method, path, params, body)
        raise AssertionError(f"unscripted request {method} {path}")  # not an OpenSearch error: the test fails

    def calls(self, method: str | None = None) -> list[tuple[str, str]]:
        return [(r["method"], r["path"]) for r in self.requests if method is None or r["method"] == method]


def parse_body(body: bytes | None) -> Any:
    if body is None:
        return None
    text = body.decode() if isinstance(body, bytes) else body
    try:
        return json.loads(text)
    except ValueError:
        return [json.loads(line) for line in text.splitlines() if line.strip()]  # ndjson


def connection_class(rec: Recorder):
    class RecordingConnection(Connection):
        def perform_request(self, method, url, params=None, body=None, timeout=None, ignore=(), headers=None):
            parsed = parse_body(body)
            rec.requests.append({"method": method, "path": url, "params": dict(params or {}), "body": parsed})
            status, data = rec.answer(method, url, dict(params or {}), parsed)
            if isinstance(data, Exception):
                raise data
            raw = json.dumps(data)
            if not 200 <= status < 300 and status not in ignore:
                self._raise_error(status, raw, "application/json")
            return status, {"content-type": "application/json"}, raw

        def close(self) -> None:
            pass

    return RecordingConnection


@pytest.fixture
def rec():
    return Recorder()


@pytest.fixture
def engine(rec):
    sleeps: list[float] = []
    e = OpenSearchEngine(url="http://user:s3cret@localhost:9200", connection_class=connection_class(rec),
                         sleep=sleeps.append, poll_interval_s=0, knn_library="faiss")
    e.sleeps = sleeps
    yield e
    e.close()


def mapping_response(spec, concrete: str, meta: dict | None = None) -> dict:
    return {concrete: {"mappings": {"_meta": {"ha3_adapter": spec.public_dict(),
                                              "ha3_adapter_index": meta or {"generation": "g1", "trained": True}}}}}


def serve_table(rec: Recorder, spec, concrete: str | None = None, meta: dict | None = None) -> str:
    concrete = concrete or f"{spec.name}__g1"
    rec.on("GET", rf"/({spec.name}|{concrete})/_mapping", (200, mapping_response(spec, concrete, meta)))
    return concrete


def search_hits(*pairs) -> dict:
    return {"hits": {"total": {"value": len(pairs)}, "hits": [
        {"_id": str(pk), "_score": score, "_source": {"id": pk, "title": f"item-{pk}"}} for pk, score in pairs]}}


# -- tables ---------------------------------------------------------------------------------

ACK = (200, {"acknowledged": True})


def test_create_table_puts_translated_body_then_adds_alias(engine, rec):
    spec = make_spec("items")
    rec.on("HEAD", "/items", (404, {}))
    rec.on("PUT", "/items__g1", ACK)
    rec.on("POST", "/_aliases", ACK)
    engine.create_table(spec)
    assert rec.calls() == [("HEAD", "/items"), ("PUT", "/items__g1"), ("POST", "/_aliases")]
    body = rec.requests[1]["body"]
    meta = body["mappings"].pop("_meta")
    assert TableSpec.model_validate(meta["ha3_adapter"]) == spec
    assert meta["ha3_adapter_index"] == {"generation": "g1", "trained": True, "knn_library": "faiss"}
    # make_spec: HNSW, max_neighbor_count 32 (m 16), efconstruction 64, ef 64, 16-d, squared L2,
    # linear_build_threshold left at HA3's 5000.
    assert body == {
        "settings": {"index": {"number_of_shards": 1, "number_of_replicas": 0, "knn": True,
                               "knn.advanced.approximate_threshold": 5000}},
        "mappings": {"dynamic": "strict", "properties": {
            "id": {"type": "long"}, "cate_id": {"type": "long"}, "price": {"type": "double"},
            "title": {"type": "keyword"}, "tags": {"type": "keyword"},
            "vector": {"type": "knn_vector", "dimension": DIM, "method": {
                "name": "hnsw", "engine": "faiss", "space_type": "l2",
                "parameters": {"m": 16, "ef_construction": 64, "ef_search": 64}}}}},
    }
    assert rec.requests[2]["body"] == {"actions": [{"add": {"index": "items__g1", "alias": "items"}}]}


def test_create_existing_table_is_a_conflict(engine, rec):
    rec.on("HEAD", "/items", (200, {}))
    with pytest.raises(ConflictError):
        engine.create_table(make_spec("items"))
    assert rec.calls() == [("HEAD", "/items")]


def test_qc_table_trains_an_ivf_model_before_the_index_gets_its_mapping(engine, rec):
    spec = make_spec("qc", index_type=VectorIndexType.QC)
    rec.on("HEAD", "/qc", (404, {}))
    rec.on("PUT", "/qc__g1", ACK)
    rec.on("POST", "/_aliases", ACK)
    engine.create_table(spec)
    untrained = rec.requests[1]["body"]
    assert untrained["settings"]["index"]["knn"] is False
    assert untrained["mappings"]["properties"]["vector"] == {"type": "knn_vector", "dimension": DIM}
    serve_table(rec, spec, meta={"generation": "g1", "trained": False})
    rec.on("GET", "/qc__g1/_count", (200, {"count": 0}))
    states = iter(["training", "training", "created"])
    rec.on("GET", "/_plugins/_knn/models/qc__g1-qc-ivf", lambda *a: (200, {"state": next(states)}))
    rec.on("DELETE", "/_plugins/_knn/models/qc__g1-qc-ivf", (404, {"error": "not found"}))
    rec.on("DELETE", "/qc__g1-train", (404, {"error": {"type": "index_not_found_exception"}}))
    rec.on("HEAD", "/qc__g1/_alias/qc", (200, {}))
    rec.on("POST", "/_bulk", (200, {"errors": False, "items": []}))
    for method, path in [("PUT", "/qc__g1-train"), ("POST", "/qc__g1-train/_refresh"), ("DELETE", "/qc__g1"),
                         ("POST", "/_plugins/_knn/models/qc__g1-qc-ivf/_train")]:
        rec.on(method, path, ACK)
    rec.requests.clear()
    _, vecs = make_docs(200)
    engine.train("qc", vecs)
    calls = rec.calls()
    assert calls == [
        ("GET", "/qc/_mapping"), ("GET", "/qc__g1/_count"),
        ("DELETE", "/qc__g1-train"), ("PUT", "/qc__g1-train"), ("POST", "/_bulk"), ("POST", "/qc__g1-train/_refresh"),
        ("DELETE", "/_plugins/_knn/models/qc__g1-qc-ivf"), ("POST", "/_plugins/_knn/models/qc__g1-qc-ivf/_train"),
        ("GET", "/_plugins/_knn/models/qc__g1-qc-ivf"), ("GET", "/_plugins/_knn/models/qc__g1-qc-ivf"),
        ("GET", "/_plugins/_knn/models/qc__g1-qc-ivf"),
        ("DELETE", "/qc__g1-train"), ("HEAD", "/qc__g1/_alias/qc"), ("DELETE", "/qc__g1"), ("PUT", "/qc__g1"),
        ("POST", "/_aliases"),
    ]
    bulk = rec.requests[4]["body"]
    assert len(bulk) == 400 and bulk[0] == {"index": {"_index": "qc__g1-train"}}
    np.testing.assert_allclose(bulk[1]["vector"], vecs[0], rtol=1e-6)
    # centroid_count 4 (200 vectors allow up to 200 // 39 = 5 lists); scan_ratio 0.5 of 4 lists is
    # 2, but HA3's min_scan_doc_cnt floor (20000, capped at the 200 documents) needs all 4.
    assert rec.requests[7]["body"] == {
        "training_index": "qc__g1-train", "training_field": "vector", "dimension": DIM,
        "description": "IVF model for HA3 Qc table qc",
        "method": {"name": "ivf", "engine": "faiss", "space_type": "l2", "parameters": {
            "nlist": 4, "nprobes": 4, "encoder": {"name": "sq", "parameters": {"type": "fp16"}}}}}
    final = rec.requests[14]["body"]
    assert final["mappings"]["properties"]["vector"] == {"type": "knn_vector", "model_id": "qc__g1-qc-ivf"}
    assert final["mappings"]["_meta"]["ha3_adapter_index"]["trained"] is True


def test_qc_training_below_linear_build_threshold_sends_no_request(engine, rec):
    """19 documents under linear_build_threshold (5000): no training index, no model, the
    generation keeps its plain vector field (searched exactly); any training request would be
    unscripted and fail the test."""
    spec = make_spec("qc", index_type=VectorIndexType.QC)
    serve_table(rec, spec, meta={"generation": "g1", "trained": False})
    engine.train("qc", make_docs(19)[1], doc_count=19)
    assert rec.calls() == [("GET", "/qc/_mapping")]


def test_failed_training_raises_engine_error_with_the_reason(engine, rec):
    spec = make_spec("qc", index_type=VectorIndexType.QC)
    serve_table(rec, spec, meta={"generation": "g1", "trained": False})
    rec.on("GET", "/qc__g1/_count", (200, {"count": 0}))
    rec.on("GET", "/_plugins/_knn/models/qc__g1-qc-ivf", (200, {"state": "failed", "error": "too few vectors"}))
    rec.on("POST", "/_bulk", (200, {"errors": False, "items": []}))
    rec.on("DELETE", "/qc__g1-train", (404, {"error": {"type": "index_not_found_exception"}}))
    rec.on("DELETE", "/_plugins/_knn/models/qc__g1-qc-ivf", (404, {"error": "not found"}))
    for method, path in [("PUT", "/qc__g1-train"), ("POST", "/qc__g1-train/_refresh"),
                         ("POST", "/_plugins/_knn/models/qc__g1-qc-ivf/_train")]:
        rec.on(method, path, ACK)
    with pytest.raises(EngineError, match="too few vectors"):
        engine.train("qc", make_docs(50)[1])


def test_training_a_generation_with_documents_is_refused(engine, rec):
    spec = make_spec("qc", index_type=VectorIndexType.QC)
    serve_table(rec, spec, meta={"generation": "g1", "trained": False})
    rec.on("GET", "/qc__g1/_count", (200, {"count": 3}))
    with pytest.raises(ConflictError, match="train a Qc generation before writing"):
        engine.train("qc", make_docs(50)[1])


# -- writes ---------------------------------------------------------------------------------

def test_bulk_reports_rejected_items_and_retries_429_items_with_backoff(engine, rec):
    spec = make_spec("items")
    serve_table(rec, spec)
    answers = iter([
        {"errors": True, "items": [
            {"index": {"_id": "0", "status": 201}},
            {"index": {"_id": "1", "status": 429, "error": {"type": "es_rejected_execution_exception", "reason": "queue full"}}},
            {"index": {"_id": "2", "status": 400, "error": {"type": "mapper_parsing_exception", "reason": "bad price"}}},
        ]},
        {"errors": False, "items": [{"index": {"_id": "1", "status": 200}}]},
    ])
    rec.on("POST", "/_bulk", lambda *a: (200, next(answers)))
    docs, vecs = make_docs(3)
    bad = Document(pk=9, fields={}, vector=np.zeros(3, dtype=np.float32))
    result = engine.upsert("items", docs + [bad])
    assert result.written == 2
    assert [(f.pk, f.reason) for f in result.failures if f.pk == 2] == [(2, "mapper_parsing_exception: bad price")]
    assert any(f.pk == 9 and "needs 16" in f.reason for f in result.failures)
    bulks = [r["body"] for r in rec.requests if r["path"] == "/_bulk"]
    assert len(bulks) == 2
    assert bulks[0][0] == {"index": {"_index": "items__g1", "_id": "0"}}
    assert bulks[0][1]["title"] == "item-0" and bulks[0][1]["tags"] == ["even", "t0"]
    assert len(bulks[0][1]["vector"]) == DIM
    assert [line["index"]["_id"] for line in bulks[1][::2]] == ["1"]
    assert engine.sleeps == [0.5]


def test_delete_treats_missing_keys_as_done(engine, rec):
    spec = make_spec("items")
    serve_table(rec, spec)
    rec.on("POST", "/_bulk", (200, {"errors": False, "items": [
        {"delete": {"_id": "1", "status": 200}}, {"delete": {"_id": "7", "status": 404, "result": "not_found"}}]}))
    result = engine.delete("items", [1, 7])
    assert result.written == 2 and result.failures == []
    assert rec.requests[-1]["body"] == [{"delete": {"_index": "items__g1", "_id": "1"}},
                                        {"delete": {"_index": "items__g1", "_id": "7"}}]


def test_requests_retry_on_5xx_and_connection_errors_then_give_up(engine, rec):
    from opensearchpy.exceptions import ConnectionError as OSConnectionError

    spec = make_spec("items")
    answers = iter([(503, {"error": "unavailable"}), (200, mapping_response(spec, "items__g1"))])
    rec.on("GET", "/items/_mapping", lambda *a: next(answers))
    assert engine.get_spec("items").name == "items"
    assert engine.sleeps == [0.5]
    rec.on("POST", "/items__g1/_count", (200, OSConnectionError("N/A", "refused", None)))
    with pytest.raises(EngineError, match="after 5 tries") as info:
        engine.count("items")
    assert "s3cret" not in str(info.value)
    assert engine.sleeps == [0.5, 0.5, 1.0, 2.0, 4.0]


def test_client_errors_are_not_retried_and_missing_tables_are_not_found(engine, rec):
    rec.on("GET", "/nope/_mapping", (404, {"error": {"type": "index_not_found_exception", "reason": "no such index"}}))
    with pytest.raises(NotFoundError, match="nope"):
        engine.count("nope")
    assert rec.calls() == [("GET", "/nope/_mapping")] and engine.sleeps == []


# -- search ---------------------------------------------------------------------------------

def plan(table="items", **kw) -> SearchPlan:
    kw.setdefault("vectors", [[0.5] * DIM])
    return SearchPlan(table=table, k=3, hit=3, output_fields=["title"], **kw)


def test_knn_query_with_efficient_filter_and_ef_search_and_scores_in_proxima_terms(engine, rec):
    spec = make_spec("items")
    serve_table(rec, spec)
    rec.on("POST", "/items__g1/_search", (200, search_hits((4, 1 / (1 + 0.25)), (9, 1 / (1 + 1.5)))))
    res = engine.search(plan(filter=Compare(field="cate_id", op="=", value=2),
                             search_params=SearchParams(ef_search=128)))
    body = rec.requests[-1]["body"]
    assert body == {"size": 3, "_source": {"includes": ["id", "title"]}, "query": {"knn": {"vector": {
        "vector": [0.5] * DIM, "k": 3, "filter": {"term": {"cate_id": 2}},
        "method_parameters": {"ef_search": 128}}}}}
    assert [h.pk for h in res.hits] == [4, 9]
    assert [h.score for h in res.hits] == [pytest.approx(0.25), pytest.approx(1.5)]
    assert res.hits[0].fields == {"title": "item-4"}


def test_score_threshold_becomes_radial_search(engine, rec):
    spec = make_spec("items")
    serve_table(rec, spec)
    at_threshold = float(np.float32(1 / 1.8))  # d = 0.8 as OpenSearch's float32 score carries it
    rec.on("POST", "/items__g1/_search", (200, search_hits((1, 1 / 1.5), (2, at_threshold), (3, 1 / 1.81))))
    res = engine.search(plan(score_threshold=0.8))
    knn = rec.requests[-1]["body"]["query"]["knn"]["vector"]
    # widened by a float32 step, so that a document exactly at the threshold stays in
    assert 0.8 <= knn["max_distance"] <= 0.8 + 1e-5 and "k" not in knn
    assert [h.pk for h in res.hits] == [1, 2]
    ip = make_spec("ip", distance=DistanceType.INNER_PRODUCT)
    serve_table(rec, ip)
    rec.on("POST", "/ip__g1/_search", (200, search_hits((1, 1.9), (2, 0.5))))
    res = engine.search(plan("ip", score_threshold=-0.5))
    knn = rec.requests[-1]["body"]["query"]["knn"]["vector"]
    assert 1 / 1.5 - 1e-5 <= knn["min_score"] <= 1 / 1.5
    assert [h.score for h in res.hits] == [pytest.approx(0.9), pytest.approx(-1.0)][:1]  # -1.0 < sf dropped


def test_linear_and_exact_use_script_score_with_knn_score(engine, rec):
    spec = make_spec("lin", index_type=VectorIndexType.LINEAR, distance=DistanceType.INNER_PRODUCT)
    serve_table(rec, spec)
    rec.on("POST", "/lin__g1/_search", (200, search_hits((3, 2.0), (5, 0.8))))
    res = engine.search(plan("lin", filter=InList(field="cate_id", values=[1, 2])))
    assert rec.requests[-1]["body"]["query"] == {"script_score": {
        "query": {"bool": {"filter": [{"terms": {"cate_id": [1, 2]}}]}},
        "script": {"source": "knn_score", "lang": "knn",
                   "params": {"field": "vector", "query_value": [0.5] * DIM, "space_type": "innerproduct"}}}}
    assert [h.score for h in res.hits] == [pytest.approx(1.0), pytest.approx(-0.25)]


def test_qc_search_sends_nprobes_from_scan_ratio(engine, rec):
    spec = make_spec("qc", index_type=VectorIndexType.QC)
    serve_table(rec, spec, meta={"generation": "g1", "trained": True, "nlist": 40})
    rec.on("POST", "/qc__g1/_search", (200, search_hits()))
    engine.search(plan("qc", search_params=SearchParams(scan_ratio=0.1)))
    assert rec.requests[-1]["body"]["query"]["knn"]["vector"]["method_parameters"] == {"nprobes": 4}
    engine.search(plan("qc", search_params=SearchParams(nprobes=7)))
    assert rec.requests[-1]["body"]["query"]["knn"]["vector"]["method_parameters"] == {"nprobes": 7}


def test_several_query_vectors_are_searched_and_merged(engine, rec):
    spec = make_spec("items")
    serve_table(rec, spec)
    answers = iter([search_hits((1, 1 / 1.1), (2, 1 / 1.5)), search_hits((2, 1 / 1.2), (3, 1 / 1.3))])
    rec.on("POST", "/items__g1/_search", lambda *a: (200, next(answers)))
    res = engine.search(plan(vectors=[[0.1] * DIM, [0.2] * DIM], multi_vector_mode="min"))
    assert [(h.pk, round(h.score, 4)) for h in res.hits] == [(1, 0.1), (2, 0.2), (3, 0.3)]
    assert len(rec.calls("POST")) == 2


def test_filter_tree_compiles_to_bool_dsl(engine, rec):
    spec = make_spec("items")
    serve_table(rec, spec)
    rec.on("POST", "/items__g1/_count", (200, {"count": 5}))
    expr = Or(items=[
        And(items=[Compare(field="price", op=">=", value="2.5"), Compare(field="title", op="!=", value="x")]),
        Not(item=InList(field="tags", values=["a", "b"], negate=True)),
        Compare(field="cate_id", op="<", value=3),
    ])
    assert engine.count("items", expr) == 5
    assert rec.requests[-1]["body"] == {"query": {"bool": {"filter": [{"bool": {"should": [
        {"bool": {"filter": [
            {"range": {"price": {"gte": 2.5}}},
            {"bool": {"filter": [{"exists": {"field": "title"}}], "must_not": [{"term": {"title": "x"}}]}}]}},
        {"bool": {"must_not": [{"bool": {"filter": [{"exists": {"field": "tags"}}],
                                         "must_not": [{"terms": {"tags": ["a", "b"]}}]}}]}},
        {"range": {"cate_id": {"lt": 3}}},
    ], "minimum_should_match": 1}}]}}}
    with pytest.raises(QueryError, match="nope"):
        engine.count("items", Compare(field="nope", op="=", value=1))


def test_fetch_by_filter_sorts_and_pages_and_aggregate_uses_composite(engine, rec):
    spec = make_spec("items")
    serve_table(rec, spec)
    rec.on("POST", "/items__g1/_search", (200, {"hits": {"total": {"value": 40}, "hits": [
        {"_id": "7", "_source": {"id": 7, "title": "item-7"}}]}, "aggregations": {"groups": {"buckets": [
            {"key": {"cate_id": 1}, "doc_count": 8, "m1": {"value": 9.5}}]}}}))
    res = engine.fetch(FetchPlan(table="items", filter=Compare(field="cate_id", op="=", value=1),
                                 sort=[SortKey(field="price", descending=True)], limit=5, offset=10,
                                 output_fields=["title"]))
    body = rec.requests[-1]["body"]
    assert body["from"] == 10 and body["size"] == 5
    assert body["sort"] == [{"price": {"order": "desc", "missing": "_last"}}, {"id": {"order": "asc"}}]
    assert res.total == 40 and res.hits[0].pk == 7 and res.hits[0].score is None
    groups = engine.aggregate(AggregatePlan(table="items", group_keys=["cate_id"],
                                            funcs=[AggFunc(func="count"), AggFunc(func="max", field="price")]))
    assert rec.requests[-1]["body"]["aggs"] == {"groups": {
        "composite": {"size": 1000, "sources": [{"cate_id": {"terms": {"field": "cate_id"}}}]},
        "aggs": {"m1": {"max": {"field": "price"}}}}}
    assert groups == [{"key": {"cate_id": 1}, "values": {"count()": 8, "max(price)": 9.5}}]


def test_get_uses_mget_in_asked_order_skipping_missing(engine, rec):
    spec = make_spec("items")
    serve_table(rec, spec)
    rec.on("POST", "/items__g1/_mget", (200, {"docs": [
        {"_id": "5", "found": True, "_source": {"id": 5, "title": "five"}}, {"_id": "6", "found": False}]}))
    hits = engine.get("items", [5, 6], output_fields=["title"])
    assert [(h.pk, h.fields) for h in hits] == [(5, {"title": "five"})]
    assert rec.requests[-1]["body"] == {"ids": ["5", "6"]}
    assert rec.requests[-1]["params"] == {"_source_includes": "id,title"}


# -- generations ------------------------------------------------------------------------------

def test_generation_switch_refreshes_then_swaps_alias_in_one_request_then_drops_old(engine, rec):
    spec = make_spec("items")
    serve_table(rec, spec)
    rec.on("GET", "/items__g2/_mapping", (200, mapping_response(spec, "items__g2", {"generation": "g2", "trained": True})))
    rec.on("GET", r"/_cat/indices/items__g\*", (200, [{"index": "items__g1", "docs.count": "3"}]))
    for method, path in [("PUT", "/items__g2"), ("POST", "/items__g2/_refresh"), ("POST", "/_aliases"),
                         ("DELETE", "/items__g1")]:
        rec.on(method, path, ACK)
    gen = engine.begin_generation("items")
    assert gen == "g2" and rec.calls()[-1] == ("PUT", "/items__g2")
    rec.requests.clear()
    engine.switch_generation("items", "g2")
    assert rec.calls() == [("GET", "/items/_mapping"), ("GET", "/items__g2/_mapping"), ("POST", "/items__g2/_refresh"),
                           ("POST", "/_aliases"), ("DELETE", "/items__g1")]
    assert rec.requests[3]["body"] == {"actions": [{"remove": {"index": "items__g1", "alias": "items"}},
                                                   {"add": {"index": "items__g2", "alias": "items"}}]}


def test_scores_convert_both_ways():
    for d in (0.0, 0.3, 4.0):
        assert to_proxima(from_proxima(d, DistanceType.SQUARED_EUCLIDEAN), DistanceType.SQUARED_EUCLIDEAN) == pytest.approx(d)
    for ip in (-3.0, -0.2, 0.0, 0.7, 5.0):
        assert to_proxima(from_proxima(ip, DistanceType.INNER_PRODUCT), DistanceType.INNER_PRODUCT) == pytest.approx(ip)


# -- a k-NN plugin without native code: Lucene graphs ------------------------------------------

NODES_LUCENE = {"nodes": {"n1": {"attributes": {"knn_library": "lucene"}}}}


def lucene_engine(rec):
    return OpenSearchEngine(url="http://localhost:9200", connection_class=connection_class(rec),
                            sleep=lambda s: None, knn_library="auto")


@pytest.mark.parametrize("nodes,library", [(NODES_LUCENE, "lucene"), ({"nodes": {"n1": {}}}, "faiss"), ({}, "faiss")])
def test_auto_reads_the_library_from_the_nodes_once(rec, nodes, library):
    engine = lucene_engine(rec)
    rec.on("GET", "/_nodes", (200, nodes))
    assert engine.knn_library == library and engine.knn_library == library
    assert rec.calls() == [("GET", "/_nodes")]
    assert rec.requests[0]["params"] == {"filter_path": "nodes.*.attributes.knn_library"}


def test_lucene_hnsw_table_maps_to_a_lucene_graph_and_sends_ef_with_each_query(rec):
    engine = lucene_engine(rec)
    rec.on("GET", "/_nodes", (200, NODES_LUCENE))
    rec.on("HEAD", "/items", (404, {}))
    rec.on("PUT", "/items__g1", ACK)
    rec.on("POST", "/_aliases", ACK)
    spec = make_spec("items")
    engine.create_table(spec)
    body = rec.requests[2]["body"]
    # m = max_neighbor_count / 2, efconstruction as given; no approximate_threshold (a faiss setting)
    assert body["settings"]["index"] == {"number_of_shards": 1, "number_of_replicas": 0, "knn": True}
    assert body["mappings"]["properties"]["vector"] == {"type": "knn_vector", "dimension": DIM, "method": {
        "name": "hnsw", "engine": "lucene", "space_type": "l2", "parameters": {"m": 16, "ef_construction": 64}}}
    meta = {"generation": "g1", "trained": True, "knn_library": "lucene"}
    serve_table(rec, spec, meta=meta)
    rec.on("POST", "/items__g1/_search", (200, search_hits((4, 1 / 1.25))))
    engine.search(plan())
    assert rec.requests[-1]["body"]["query"]["knn"]["vector"]["method_parameters"] == {"ef_search": 64}
    engine.search(plan(search_params=SearchParams(ef_search=2)))  # never below k
    assert rec.requests[-1]["body"]["query"]["knn"]["vector"]["method_parameters"] == {"ef_search": 3}
    engine.search(plan(score_threshold=1.0))  # Lucene's radial search takes no ef_search
    assert "method_parameters" not in rec.requests[-1]["body"]["query"]["knn"]["vector"]


def test_lucene_qc_table_is_a_lucene_graph_that_needs_no_training(rec):
    engine = lucene_engine(rec)
    rec.on("GET", "/_nodes", (200, NODES_LUCENE))
    rec.on("HEAD", "/qc", (404, {}))
    rec.on("PUT", "/qc__g1", ACK)
    rec.on("POST", "/_aliases", ACK)
    spec = make_spec("qc", index_type=VectorIndexType.QC)
    engine.create_table(spec)
    body = rec.requests[2]["body"]
    assert body["settings"]["index"]["knn"] is True
    # Qc gives no graph parameters: OpenSearch's Lucene defaults m 16, ef_construction 100
    assert body["mappings"]["properties"]["vector"]["method"] == {
        "name": "hnsw", "engine": "lucene", "space_type": "l2", "parameters": {"m": 16, "ef_construction": 100}}
    assert body["mappings"]["_meta"]["ha3_adapter_index"] == {"generation": "g1", "trained": True, "knn_library": "lucene"}
    serve_table(rec, spec, meta={"generation": "g1", "trained": True, "knn_library": "lucene"})
    rec.requests.clear()
    engine.train("qc", make_docs(100)[1])
    assert rec.calls() == [("GET", "/qc/_mapping")]  # nothing to train
    rec.on("POST", "/qc__g1/_search", (200, search_hits()))
    engine.search(plan("qc", search_params=SearchParams(scan_ratio=0.1)))
    knn = rec.requests[-1]["body"]["query"]["knn"]["vector"]
    assert knn == {"vector": [0.5] * DIM, "k": 3}  # no nprobes: a graph has no lists to probe


# -- a cluster: shards per table, partial answers --------------------------------------------

def test_shards_and_replicas_come_from_the_table_entry_or_the_default(rec):
    engine = OpenSearchEngine(url="http://localhost:9200", connection_class=connection_class(rec),
                              knn_library="faiss", shards=2, replicas=1, table_shards={"Big": (6, 2)})
    for name in ("big", "small"):
        rec.on("HEAD", f"/{name}", (404, {}))
        rec.on("PUT", f"/{name}__g1", ACK)
    rec.on("POST", "/_aliases", ACK)
    engine.create_table(make_spec("big"))
    engine.create_table(make_spec("small"))
    created = {r["path"]: r["body"]["settings"]["index"] for r in rec.requests if r["method"] == "PUT"}
    assert (created["/big__g1"]["number_of_shards"], created["/big__g1"]["number_of_replicas"]) == (6, 2)
    assert (created["/small__g1"]["number_of_shards"], created["/small__g1"]["number_of_replicas"]) == (2, 1)


def test_stats_show_shards_replicas_and_health(engine, rec):
    serve_table(rec, make_spec("items"))
    rec.on("GET", "/items__g1/_count", (200, {"count": 7, "_shards": {"total": 3, "failed": 0}}))
    rec.on("GET", "/_cat/indices/items__g1", (200, [{"health": "yellow", "pri": "3", "rep": "1"}]))
    st = engine.stats("items")
    assert st.doc_count == 7
    assert (st.extra["shards"], st.extra["replicas"], st.extra["health"]) == (3, 1, "yellow")


def test_a_search_some_shards_did_not_answer_is_a_503_not_a_short_list(engine, rec):
    from adapter.errors import EngineUnavailableError

    serve_table(rec, make_spec("items"))
    partial = search_hits((4, 0.8))
    partial["_shards"] = {"total": 3, "successful": 2, "failed": 1, "failures": [
        {"shard": 2, "reason": {"type": "no_shard_available_action_exception", "reason": "no shard"}}]}
    rec.on("POST", "/items__g1/_search", (200, partial))
    with pytest.raises(EngineUnavailableError, match="1 of 3 shards failed") as info:
        engine.search(plan())
    assert info.value.http_status == 503
    assert rec.requests[-1]["params"] == {"allow_partial_search_results": "false"}
    rec.on("POST", "/items__g1/_mget", (200, {"docs": [
        {"_id": "5", "found": True, "_source": {"id": 5}},
        {"_id": "6", "error": {"type": "no_shard_available_action_exception", "reason": "no shard"}}]}))
    with pytest.raises(EngineUnavailableError, match="document 6"):
        engine.get("items", [5, 6])
