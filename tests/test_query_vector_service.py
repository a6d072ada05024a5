"""Vector-service requests (bodies exactly as the official SDK serialises them) on the
embedded engine, checked against numpy brute force."""

from __future__ import annotations

import base64
import json
from types import SimpleNamespace

import numpy as np
import pytest
from alibabacloud_ha3engine_vector import models as sdk

from adapter.errors import NotFoundError, QueryError
from adapter.query.vector_service import format_vector_error, fuse_rrf, handle, text_of_query_string
from query_data import DIM, N, Data, HashEmbedder, schema

from adapter.engines.embedded import EmbeddedEngine
from adapter.schema import parse_schema


def sdk_body(model) -> dict:
    """What the SDK puts on the wire: ``UtilClient.to_jsonstring(request)`` of the TeaModel."""
    from alibabacloud_tea_util.client import Client as UtilClient
    return json.loads(UtilClient.to_jsonstring(model))


@pytest.fixture(scope="module", params=["L2", "IP"])
def env(request, tmp_path_factory):
    distance = {"L2": "SquaredEuclidean", "IP": "InnerProduct"}[request.param]
    engine = EmbeddedEngine(tmp_path_factory.mktemp(f"vs_{request.param}"))
    spec = parse_schema(schema(distance), f"vs_{request.param.lower()}")
    engine.create_table(spec)
    d = Data(engine, spec.name, request.param)
    assert engine.upsert(spec.name, d.docs()).written == N
    d.runtime = SimpleNamespace(engine=engine, embedder=HashEmbedder())
    yield d
    engine.close()


def ids(body):
    return [r["id"] for r in body["result"]]


def test_query_as_the_sdk_sends_it(env):
    q = env.rng.normal(size=DIM)
    req = sdk.QueryRequest(table_name=env.table, vector=[float(x) for x in q], top_k=7,
                           output_fields=["price", "brand"], include_vector=True,
                           filter="cate_id != 3 AND price > 10", search_params='{"proxima.hnsw.searcher.ef":50}')
    body = sdk_body(req)
    assert body["sorts"] == [] and isinstance(body["searchParams"], str)  # what the SDK really sends
    out = handle("query", body, env.runtime)
    order, s = env.topn(q, 7, (env.cate != 3) & (env.price > 10))
    assert ids(out) == [int(env.ids[i]) for i in order]
    np.testing.assert_allclose([r["score"] for r in out["result"]], s[order], rtol=1e-4, atol=1e-4)
    first = out["result"][0]
    assert set(first) == {"id", "score", "fields", "vector"}
    assert first["fields"] == {"price": env.price[order[0]], "brand": env.brand[order[0]]}
    np.testing.assert_allclose(first["vector"], env.vecs[order[0]], rtol=1e-6)
    assert out["errorCode"] == 0 and out["errorMsg"] == "" and out["totalCount"] == 7
    assert isinstance(out["totalTime"], float)


def test_query_defaults_return_id_and_score_only(env):
    q = env.rng.normal(size=DIM)
    out = handle("query", {"tableName": env.table, "vector": list(map(float, q)), "topK": 3}, env.runtime)
    assert [set(r) for r in out["result"]] == [{"id", "score"}] * 3


def test_query_order_and_threshold(env):
    q = env.rng.normal(size=DIM)
    order, s = env.topn(q, 20)
    thr = float(s[order[9]])
    out = handle("query", {"tableName": env.table, "vector": list(map(float, q)), "topK": 20,
                           "scoreThreshold": thr, "order": "ASC"}, env.runtime)
    kept = [i for i in order if (s[i] >= thr if env.ip else s[i] <= thr)]
    expected = sorted(kept, key=lambda i: s[i])  # literal ascending score
    assert ids(out) == [int(env.ids[i]) for i in expected]


def test_multi_query_sum(env):
    qs = [env.rng.normal(size=DIM) for _ in range(2)]
    req = sdk.MultiQueryRequest(table_name=env.table, top_k=N, mode="sum",
                                queries=[sdk.QueryRequest(table_name=env.table, vector=list(map(float, q))) for q in qs])
    out = handle("multi-query", sdk_body(req), env.runtime)
    total = env.scores(qs[0]) + env.scores(qs[1])
    best = np.argsort(-total if env.ip else total, kind="stable")
    assert ids(out)[:10] == [int(env.ids[i]) for i in best[:10]]
    np.testing.assert_allclose([r["score"] for r in out["result"][:10]], total[best[:10]], rtol=1e-4, atol=1e-4)


def test_several_vectors_with_vector_count(env):
    qs = [env.rng.normal(size=DIM) for _ in range(2)]
    out = handle("query", {"tableName": env.table, "vector": [float(x) for q in qs for x in q],
                           "vectorCount": 2, "topK": N}, env.runtime)
    assert len(out["result"]) == N


def test_inference_query_text_and_image(env):
    emb = env.runtime.embedder
    out = handle("inference-query", sdk_body(sdk.QueryRequest(table_name=env.table, content="red shoes",
                                                               modal="text", top_k=5)), env.runtime)
    assert emb.calls[-1] == ("clip", "text", "red shoes")
    order, s = env.topn(emb._vec(b"red shoes"), 5)
    assert ids(out) == [int(env.ids[i]) for i in order]
    img = b"\x89PNG..\xfb\xff"
    out = handle("inference-query", {"tableName": env.table, "content": base64.b64encode(img).decode(),
                                     "modal": "image", "topK": 5}, env.runtime)
    assert emb.calls[-1] == ("clip", "image", img)
    assert ids(out) == [int(env.ids[i]) for i in env.topn(emb._vec(img), 5)[0]]


def test_fetch_by_ids_and_by_filter(env):
    out = handle("fetch", sdk_body(sdk.FetchRequest(table_name=env.table, ids=["5", "2", "999"],
                                                    output_fields=["cate_id"])), env.runtime)
    assert out["result"] == [{"id": 5, "fields": {"cate_id": int(env.cate[4])}},
                             {"id": 2, "fields": {"cate_id": int(env.cate[1])}}]
    out = handle("fetch", {"tableName": env.table, "filter": "cate_id=1", "sort": "-price",
                           "limit": 4, "offset": 1, "outputFields": ["price"]}, env.runtime)
    idx = [i for i in np.argsort(-env.price, kind="stable") if env.cate[i] == 1]
    assert ids(out) == [int(env.ids[i]) for i in idx[1:5]]
    assert out["totalCount"] == len(idx)


def test_aggregate(env):
    req = sdk.AggregateRequest(table_name=env.table, group_keys=["cate_id"], filter="price > 20",
                               agg_funcs=[sdk.AggFuncDesc(func="count", args=[]),
                                          sdk.AggFuncDesc(func="sum", args=["price"], name="total")],
                               order_by=[sdk.OrderByDesc(field="total", direction="DESC")])
    out = handle("aggregate", sdk_body(req), env.runtime)
    rows = out["result"]
    mask = env.price > 20
    expected = {int(c): env.price[mask & (env.cate == c)].sum() for c in set(env.cate[mask])}
    assert {r["cate_id"]: r["total"] for r in rows} == pytest.approx(expected)
    assert [r["total"] for r in rows] == pytest.approx(sorted(expected.values(), reverse=True))
    assert all(r["count()"] == int((mask & (env.cate == r["cate_id"])).sum()) for r in rows)


def test_stats_and_batch(env):
    out = handle("stats", {"tableName": env.table}, env.runtime)
    assert out["result"]["totalDocCount"] == N and out["result"]["tableName"] == env.table
    q = list(map(float, env.rng.normal(size=DIM)))
    req = sdk.BatchRequest(queries=[sdk.QueryRequest(table_name=env.table, vector=q, top_k=k) for k in (2, 3)])
    out = handle("batch-query", sdk_body(req), env.runtime)
    assert [len(r["result"]) for r in out["result"]] == [2, 3]
    # the SDK's query_async posts a single QueryRequest to /batch-query
    out = handle("batch-query", {"tableName": env.table, "vector": q, "topK": 4}, env.runtime)
    assert len(out["result"][0]["result"]) == 4


def test_hybrid_search_weighted_and_rrf(env):
    q = env.rng.normal(size=DIM)
    emb = env.runtime.embedder
    text_vec = emb._vec(b"leather boots")
    knn = sdk.QueryRequest(table_name=env.table, vector=list(map(float, q)), top_k=N)
    req = sdk.SearchRequest(table_name=env.table, size=5, knn=knn,
                            text=sdk.TextQuery(query_string="title:'leather boots'", weight=0.5))
    out = handle("search", sdk_body(req), env.runtime)
    fused = env.scores(q) + 0.5 * env.scores(text_vec)  # every doc is in both legs (topK = N)
    best = np.argsort(-fused if env.ip else fused, kind="stable")[:5]
    assert ids(out) == [int(env.ids[i]) for i in best]
    np.testing.assert_allclose([r["score"] for r in out["result"]], fused[best], rtol=1e-4, atol=1e-4)

    req.rank = sdk.RankQuery(rrf={"rankConstant": "10"})
    out = handle("search", sdk_body(req), env.runtime)
    r1 = {int(i): r for r, i in enumerate(env.topn(q, N)[0], start=1)}
    r2 = {int(i): r for r, i in enumerate(env.topn(text_vec, N)[0], start=1)}
    rrf = {i: 1 / (10 + r1[i]) + (1 / (10 + r2[i]) if i in r2 else 0) for i in r1}
    top = sorted(rrf, key=lambda i: -rrf[i])[:5]
    assert ids(out) == [int(env.ids[i]) for i in top]


def test_hybrid_knn_leg_without_table_name_and_with_content(env):
    emb = env.runtime.embedder
    out = handle("search", {"tableName": env.table, "size": 3,
                            "knn": {"content": "blue bag", "modal": "text", "topK": N}}, env.runtime)
    order, s = env.topn(emb._vec(b"blue bag"), 3)
    assert ids(out) == [int(env.ids[i]) for i in order]


def test_text_of_query_string():
    assert text_of_query_string("title:'red shoes' AND desc:'leather'") == "red shoes leather"
    assert text_of_query_string("plain words") == "plain words"


def test_rrf_helper():
    from adapter.plan.records import Hit
    fused = fuse_rrf([[Hit(1, 0.1), Hit(2, 0.2)], [Hit(2, 0.5)]], k=1)
    assert {h.pk: h.score for h in fused} == pytest.approx({1: 0.5, 2: 1 / 3 + 0.5})


@pytest.mark.parametrize("endpoint,body,location,fragment", [
    ("query", {"tableName": "{t}", "vector": [0.1, 0.2]}, "$.vector", "dimension"),
    ("query", {"tableName": "{t}", "vector": "V", "topK": 0}, "$.topK", "topK"),
    ("query", {"tableName": "{t}", "vector": "V", "filter": "price >"}, "$.filter (offset 7)", "filter"),
    ("query", {"tableName": "{t}", "vector": "V", "filter": "color=1"}, "$.filter", "unknown filter field"),
    ("query", {"tableName": "{t}", "vector": "V", "outputFields": ["color"]}, "$.outputFields", "unknown output"),
    ("query", {"tableName": "{t}", "vector": "V", "searchParams": "{bad"}, "$.searchParams (offset 1)", "JSON"),
    ("query", {"tableName": "{t}", "vector": "V", "indexName": "other"}, "$.indexName", "unknown index"),
    ("query", {"tableName": "{t}", "vector": "V", "sort": "-color"}, "$.sort", "unknown sort field"),
    ("query", {"tableName": "{t}"}, "$.vector", "vector"),
    ("query", {"vector": "V"}, "$.tableName", "Field required"),
    ("query", {"tableName": "{t}", "vector": ["x"]}, "$.vector[0]", "number"),
    ("inference-query", {"tableName": "{t}", "content": "@@@", "modal": "image"}, "$.content (offset 0)", "Base64"),
    ("fetch", {"tableName": "{t}", "ids": ["abc"]}, "$.ids[0]", "not an integer"),
    ("fetch", {"tableName": "{t}", "limit": -1}, "$.limit", "greater than"),
    ("aggregate", {"tableName": "{t}", "aggFuncs": [{"func": "median", "args": ["price"]}]}, "$.aggFuncs[0].func", "Input"),
    ("aggregate", {"tableName": "{t}", "aggFuncs": [{"func": "sum", "args": []}]}, "$.aggFuncs[0].args", "one field"),
    ("search", {"tableName": "{t}"}, "$", "knn, text"),
    ("multi-query", {"tableName": "{t}", "queries": []}, "$.queries", "empty"),
    ("nope", {}, "path", "unknown vector-service endpoint"),
])
def test_bad_requests(env, endpoint, body, location, fragment):
    body = {k: (env.table if v == "{t}" else [0.0] * DIM if v == "V" else v) for k, v in body.items()}
    with pytest.raises(QueryError) as info:
        handle(endpoint, body, env.runtime)
    assert info.value.location == location, str(info.value)
    assert fragment in str(info.value)
    err = format_vector_error(info.value)
    assert err["errorCode"] == 2001 and fragment in err["errorMsg"] and err["result"] == []


def test_unknown_table_is_not_found(env):
    with pytest.raises(NotFoundError):
        handle("query", {"tableName": "missing", "vector": [0.0] * DIM}, env.runtime)


def test_random_bodies_never_crash(env):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from adapter.query.vector_service import HANDLERS, answer

    keys = ["tableName", "vector", "vectorCount", "topK", "indexName", "content", "contents", "modal",
            "includeVector", "outputFields", "order", "searchParams", "filter", "scoreThreshold", "sort",
            "sorts", "ids", "limit", "offset", "queries", "mode", "knn", "text", "rank", "size", "from",
            "groupKeys", "aggFuncs", "orderBy"]
    scalar = st.one_of(st.none(), st.booleans(), st.integers(-5, 200), st.floats(allow_nan=True),
                       st.text(max_size=8), st.sampled_from([env.table, "price", "cate_id", "RANK", "DESC",
                                                             "image", "price > 3", "{\"ef\":3}", "sum"]))
    value = st.recursive(scalar, lambda inner: st.lists(inner, max_size=DIM + 1) |
                         st.dictionaries(st.sampled_from(keys + ["func", "args", "queryString"]), inner, max_size=3),
                         max_leaves=12)

    @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(sorted(HANDLERS)), st.dictionaries(st.sampled_from(keys), value, max_size=6),
           st.booleans())
    def check(endpoint, body, with_table):
        if with_table:
            body["tableName"] = env.table
        out, status = answer(endpoint, body, env.runtime)
        assert status < 500, out
        assert "errorCode" in out

    check()
