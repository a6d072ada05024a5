"""HA3 query strings executed on the REAL embedded engine, checked against numpy brute force.

Tables use the Linear index (exact search), so hits and scores must equal brute force
exactly (up to float32 rounding), for both distance types and every clause.
"""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from adapter.engines.embedded import EmbeddedEngine
from adapter.errors import QueryError
from adapter.query.executor import execute
from adapter.query.format import format_ha_error, format_ha_response
from adapter.query.haquery import parse_ha_query
from adapter.query.planner import plan_ha_query
from adapter.schema import parse_schema

from query_data import DIM, N, Data, HashEmbedder, schema


@pytest.fixture(scope="module", params=["L2", "IP"])
def data(request, tmp_path_factory):
    distance = {"L2": "SquaredEuclidean", "IP": "InnerProduct"}[request.param]
    engine = EmbeddedEngine(tmp_path_factory.mktemp(f"engine_{request.param}"))
    spec = parse_schema(schema(distance), f"products_{request.param.lower()}")
    engine.create_table(spec)
    d = Data(engine, spec.name, request.param)
    result = engine.upsert(spec.name, d.docs())
    assert result.written == N and not result.failures
    yield d
    engine.close()


def vec_text(q) -> str:
    return ",".join(f"{x:.7g}" for x in q)


def run(d: Data, query: str, embedder=None):
    q = parse_ha_query(query)
    plan, opts = plan_ha_query(q, d.engine)
    result = execute(plan, d.engine, embedder)
    return result, opts


def ids_scores(result):
    return [h.pk for h in result.hits], np.array([h.score for h in result.hits])


def assert_hits(result, d: Data, order, s):
    pks, scores = ids_scores(result)
    assert pks == [int(d.ids[i]) for i in order]
    np.testing.assert_allclose(scores, s[order], rtol=1e-4, atol=1e-4)


def test_plain_vector_query_matches_brute_force(data):
    q = data.rng.normal(size=DIM)
    result, opts = run(data, f"config=hit:10,format:json&&query=vec_index:'{vec_text(q)}&n=10'")
    order, s = data.topn(q, 10)
    assert_hits(result, data, order, s)
    assert result.total == 10
    body = format_ha_response(result, opts, 0.002)
    assert body["errors"] == [] and body["result"]["numHits"] == 10 and body["result"]["totalHits"] == 10
    item = body["result"]["items"][0]
    assert item["fields"]["id"] == str(data.ids[order[0]])
    assert set(item["fields"]) == {"id", "cate_id", "price", "brand", "vector_source_image"}
    assert float(item["sortExprValues"][0]) == pytest.approx(float(s[order[0]]), rel=1e-5, abs=1e-5)
    assert {"property", "attribute", "variableValue"} <= set(item)


def test_rank_sort_is_literal_ha3_order(data):
    """+RANK sorts proxima_score ascending, -RANK descending (best first: L2 +, IP -)."""
    q = data.rng.normal(size=DIM)
    order, s = data.topn(q, 8)
    up, _ = run(data, f"query=vec_index:'{vec_text(q)}&n=8'&&sort=+RANK")
    down, _ = run(data, f"query=vec_index:'{vec_text(q)}&n=8'&&sort=-RANK")
    expected_up = sorted(order, key=lambda i: s[i])
    assert ids_scores(up)[0] == [int(data.ids[i]) for i in expected_up]
    assert ids_scores(down)[0] == [int(data.ids[i]) for i in reversed(expected_up)]


def test_filter_clause(data):
    q = data.rng.normal(size=DIM)
    mask = ((data.cate == 2) | (data.price < 30)) & np.array([b != "bolt" for b in data.brand])
    result, _ = run(data, f"query=vec_index:'{vec_text(q)}&n=12'&&config=hit:12"
                          "&&filter=(cate_id=2 OR price<30) AND brand!=\"bolt\"")
    order, s = data.topn(q, 12, mask)
    assert_hits(result, data, order, s)
    result, _ = run(data, f"query=vec_index:'{vec_text(q)}&n=12'&&config=hit:12"
                          "&&filter=in(cate_id, \"1|3\") AND notin(brand, \"acme\")")
    order, s = data.topn(q, 12, np.isin(data.cate, [1, 3]) & np.array([b != "acme" for b in data.brand]))
    assert_hits(result, data, order, s)


def test_score_threshold_sf(data):
    q = data.rng.normal(size=DIM)
    order, s = data.topn(q, 40)
    sf = float(s[order[15]])
    result, _ = run(data, f"query=vec_index:'{vec_text(q)}&n=40&sf={sf!r}'&&config=hit:40")
    keep = [i for i in order if (s[i] >= sf if data.ip else s[i] <= sf)]
    assert 10 <= len(keep) < 40
    assert_hits(result, data, keep, s)


def test_paging_start_hit(data):
    q = data.rng.normal(size=DIM)
    order, s = data.topn(q, 20)
    result, _ = run(data, f"config=start:5,hit:7&&query=vec_index:'{vec_text(q)}&n=20'")
    assert_hits(result, data, order[5:12], s)
    assert result.total == 20


def test_attribute_sort(data):
    q = data.rng.normal(size=DIM)
    order, s = data.topn(q, 15)
    result, opts = run(data, f"query=vec_index:'{vec_text(q)}&n=15'&&config=hit:15&&sort=-price;+RANK")
    expected = sorted(order, key=lambda i: -data.price[i])
    assert ids_scores(result)[0] == [int(data.ids[i]) for i in expected]
    body = format_ha_response(result, opts, 0.0)
    assert [float(v) for v in body["result"]["items"][0]["sortExprValues"]] == pytest.approx(
        [data.price[expected[0]], s[expected[0]]], rel=1e-5)


def test_several_query_vectors(data):
    q1, q2 = data.rng.normal(size=DIM), data.rng.normal(size=DIM)
    result, _ = run(data, f"query=vec_index:'{vec_text(q1)};{vec_text(q2)}&n=6'&&config=hit:20")
    merged: dict[int, float] = {}
    for q in (q1, q2):
        order, s = data.topn(q, 6)
        for i in order:
            merged[int(i)] = max(merged.get(int(i), -np.inf), float(s[i]))  # plan default mode: max
    best = sorted(merged, key=lambda i: -merged[i] if data.ip else merged[i])
    pks, scores = ids_scores(result)
    assert pks == [int(data.ids[i]) for i in best]
    np.testing.assert_allclose(scores, [merged[i] for i in best], rtol=1e-4, atol=1e-4)


def test_distinct(data):
    q = data.rng.normal(size=DIM)
    order, s = data.topn(q, 30)
    result, _ = run(data, f"query=vec_index:'{vec_text(q)}&n=30'&&config=hit:30"
                          "&&distinct=dist_key:cate_id,dist_count:2")
    seen: dict[int, int] = {}
    keep = []
    for i in order:
        seen[data.cate[i]] = seen.get(data.cate[i], 0) + 1
        if seen[data.cate[i]] <= 2:
            keep.append(i)
    assert_hits(result, data, keep, s)
    assert result.total == len(keep) <= 10


def test_aggregate_facets(data):
    q = data.rng.normal(size=DIM)
    order, _ = data.topn(q, 25)
    result, opts = run(data, f"query=vec_index:'{vec_text(q)}&n=25'&&config=hit:5"
                             "&&aggregate=group_key:cate_id,agg_fun:count()#sum(price)#max(price)")
    assert len(result.hits) == 5 and result.total == 25
    facet = format_ha_response(result, opts, 0.0)["result"]["facet"][0]
    assert facet["key"] == "cate_id"
    got = {it["value"]: it for it in facet["items"]}
    for c in set(data.cate[order]):
        members = [i for i in order if data.cate[i] == c]
        item = got[str(c)]
        assert item["count"] == len(members)
        assert item["sum"] == pytest.approx(sum(data.price[members]))
        assert item["max"] == pytest.approx(max(data.price[members]))
    counts = [it["count"] for it in facet["items"]]
    assert counts == sorted(counts, reverse=True)


def test_fetch_summary_pk_and_formats(data):
    q = data.rng.normal(size=DIM)
    order, s = data.topn(q, 4)
    query = (f"config=hit:4,format:{{fmt}},fetch_summary_type:pk,qrs_chain:search&&query=vec_index: "
             f"'{vec_text(q)}&n=10&search_params={{{{}}}}'&&cluster=general"
             "&&kvpairs=formula:proxima_score(vec_index)")
    result, opts = run(data, query.format(fmt="json"))
    body = format_ha_response(result, opts, 0.0)
    assert [it["fields"] for it in body["result"]["items"]] == [{"id": str(data.ids[i])} for i in order]
    assert body["result"]["totalHits"] == 10 and body["result"]["numHits"] == 4

    result, opts = run(data, query.format(fmt="fulljson"))
    full = format_ha_response(result, opts, 0.0)
    assert full["result"]["items"][0]["clusterName"] == "general"

    result, opts = run(data, query.format(fmt="xml"))
    xml = format_ha_response(result, opts, 0.0)
    root = ET.fromstring(xml.split("\n", 1)[1])
    hits = root.find("hits")
    assert hits.get("numhits") == "4" and hits.get("totalhits") == "10"
    assert [h.find("fields/id").text for h in hits.findall("hit")] == [str(data.ids[i]) for i in order]
    assert root.find("Error/ErrorCode").text == "0"


def test_text_and_image_content_embedded_with_table_model(data):
    emb = HashEmbedder()
    b64 = "5pGp5omY6L2mJuWktOeblA=="
    result, _ = run(data, f"vec_index:'{b64}&modal=text&n=10&search_params={{}}'"
                          "&&kvpairs=formula:proxima_score(vector)&&sort=+RANK", emb)
    assert emb.calls == [("clip", "text", "摩托车&头盔")]
    q = emb._vec("摩托车&头盔".encode())
    order, s = data.topn(q, 10)
    assert sorted(ids_scores(result)[0]) == sorted(int(data.ids[i]) for i in order)

    image = b"\x89PNG fake image bytes \xff\xfe"
    result, _ = run(data, f"query=vec_index: '{base64.urlsafe_b64encode(image).decode().rstrip('=')}"
                          "&modal=image&n=5'", emb)
    assert emb.calls[-1] == ("clip", "image", image)
    order, s = data.topn(emb._vec(image), 5)
    assert_hits(result, data, order, s)


@pytest.mark.parametrize("query,fragment", [
    ("query=nope:'{v}&n=5'", "unknown index"),
    ("query=vec_index:'1,2,3&n=5'", "dimensions"),
    ("query=vec_index:'{v}&n=5'&&filter=color=1", "unknown filter field"),
    ("query=vec_index:'{v}&n=5'&&sort=-color", "unknown sort field"),
    ("query=vec_index:'{v}&n=5'&&distinct=dist_key:color", "unknown distinct field"),
    ("query=vec_index:'{v}&n=5'&&aggregate=group_key:cate_id,agg_fun:sum(color)", "unknown aggregate field"),
    ("query=vec_index:'{v}&n=5&search_params={{\"proxima.hnsw.searcher.ef\":-1}}'", "1..100000"),
    ("query=vec_index:'{v}&n=5&search_params={{\"proxima.qc.searcher.scan_ratio\":2}}'", "(0, 1]"),
    ("query=nope:'{v}&n=5'&&cluster={table}", "unknown index 'nope' in table"),
])
def test_planner_errors(data, query, fragment):
    v = vec_text(np.zeros(DIM))
    with pytest.raises(QueryError) as info:
        plan_ha_query(parse_ha_query(query.format(v=v, table=data.table)), data.engine)
    assert fragment in str(info.value)
    assert info.value.location
    body = format_ha_error(info.value)
    assert body["errors"][0]["code"] == 2001 and fragment in body["errors"][0]["message"]


def test_unknown_cluster_is_ha3s_cluster_error_and_general_is_the_whole_instance(data):
    """HA3 answers ERROR_CLUSTER_NAME_NOT_EXIST (1001) for a cluster it lacks; `general` (what
    the SDK always sends) and no cluster search every table."""
    v = vec_text(np.ones(DIM))
    unknown = f"query=vec_index:'{v}'&&cluster=my_cluster"
    with pytest.raises(QueryError) as info:
        plan_ha_query(parse_ha_query(unknown), data.engine)
    assert info.value.code == 1001
    assert "cluster name not exist" in str(info.value) and "ClusterName:my_cluster" in str(info.value)
    assert info.value.location == f"query offset {unknown.index('my_cluster')}"
    for query in (f"query=vec_index:'{v}'&&cluster=general", f"query=vec_index:'{v}'"):
        plan, _ = plan_ha_query(parse_ha_query(query), data.engine)
        assert plan.table == data.table


def test_cluster_names_table_and_search_params_translate(data):
    q = parse_ha_query(f"query=vector:'{vec_text(np.ones(DIM))}&n=3&search_params="
                       "{\"proxima.hnsw.searcher.ef\":77,\"proxima.qc.searcher.scan_ratio\":0.2,\"nprobes\":4}'"
                       f"&&cluster={data.table}")
    plan, opts = plan_ha_query(q, data.engine)
    assert plan.table == data.table and plan.k == 3
    sp = plan.search_params
    assert (sp.ef_search, sp.scan_ratio, sp.nprobes) == (77, 0.2, 4)


def test_xml_error():
    xml = format_ha_error(QueryError("bad", "query offset 3"), "xml")
    root = ET.fromstring(xml.split("\n", 1)[1])
    assert root.find("Error/ErrorCode").text == "2001"
    assert "query offset 3" in root.find("Error/ErrorDescription").text


# -- the real embedding path (tiny random CLIP) and approximate index types -----------


@pytest.fixture(scope="module")
def clip_service(tmp_path_factory):
    from adapter.embed.registry import ModelRegistry
    from adapter.embed.service import EmbeddingService
    from adapter.embed.testing import make_tiny_clip, tiny_clip_registry_config

    path = make_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny", dim=DIM)
    service = EmbeddingService(ModelRegistry.from_config(tiny_clip_registry_config(path)), workers=1)
    yield service
    service.close()


def test_seed_queries_with_tiny_clip(data, clip_service):
    """The seed's console query, embedded by the real EmbeddingService + HF CLIP loader."""
    import io

    from PIL import Image

    result, opts = run(data, "vector:'5pGp5omY6L2mJuWktOeblA==&modal=text&n=10&search_params={}'"
                             "&&kvpairs=formula:proxima_score(vector)&&sort=+RANK", clip_service)
    q = clip_service.embed_text("clip", "摩托车&头盔")
    order, s = data.topn(q, 10)
    assert sorted(ids_scores(result)[0]) == sorted(int(data.ids[i]) for i in order)
    np.testing.assert_allclose(sorted(ids_scores(result)[1]), sorted(s[order]), rtol=1e-4, atol=1e-4)

    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(buf, format="PNG")
    b64 = base64.b64encode(buf.getvalue()).decode()
    result, _ = run(data, f"config=hit:4,format:json,fetch_summary_type:pk,qrs_chain:search&&query=vec_index: "
                          f"'{b64}&modal=image&n=10&search_params={{}}'&&cluster=general", clip_service)
    order, s = data.topn(clip_service.embed_image("clip", buf.getvalue()), 10)
    assert result.total == 10 and len(result.hits) == 4
    # no sort clause: best first for both metrics
    np.testing.assert_allclose([h.score for h in result.hits], s[order][:4], rtol=1e-4, atol=1e-4)


def test_bad_image_content_is_an_error_not_a_crash(data, clip_service):
    from adapter.errors import AdapterError

    with pytest.raises(AdapterError) as info:
        run(data, f"query=vec_index:'{base64.b64encode(b'not an image').decode()}&modal=image'", clip_service)
    assert info.value.http_status < 500


@pytest.mark.parametrize("index_type,params", [
    ("HNSW", "{\"proxima.hnsw.searcher.ef\":300}"),
    ("QGraph", "{\"proxima.qgraph.searcher.ef\":300}"),
    ("Qc", "{\"proxima.qc.searcher.scan_ratio\":1.0}"),
])
def test_approximate_indexes_with_full_search_params_equal_brute_force(tmp_path, index_type, params):
    engine = EmbeddedEngine(tmp_path)
    spec = parse_schema(schema("SquaredEuclidean", index_type), "approx")
    engine.create_table(spec)
    d = Data(engine, spec.name, "L2")
    if index_type == "Qc":
        engine.train(spec.name, d.vecs)
    assert engine.upsert(spec.name, d.docs()).written == N
    q = d.rng.normal(size=DIM)
    result, _ = run(d, f"query=vec_index:'{vec_text(q)}&n=10&search_params={params}'")
    order, s = d.topn(q, 10)
    pks, scores = ids_scores(result)
    assert pks == [int(d.ids[i]) for i in order]
    # Qc stores Int8-quantised vectors (as HA3 does), so its scores are close, not exact
    np.testing.assert_allclose(scores, s[order], rtol=2e-2 if index_type == "Qc" else 1e-4, atol=1e-4)
    engine.close()


def test_answer_ha_query_end_to_end_and_errors(data):
    from adapter.query.ha_service import answer_ha_query

    q = data.rng.normal(size=DIM)
    body, status = answer_ha_query(f"config=hit:3&&query=vec_index:'{vec_text(q)}&n=5'", data.engine, None)
    order, _ = data.topn(q, 5)
    assert status == 200 and [it["fields"]["id"] for it in body["result"]["items"]] == [str(data.ids[i]) for i in order[:3]]
    body, status = answer_ha_query("config=hit:3,format:json&&query=vec_index:'1,2'", data.engine, None)
    assert status == 400 and "dimensions" in body["errors"][0]["message"] and body["result"]["numHits"] == 0
    body, status = answer_ha_query("config=format:xml,hit:x&&query=vec_index:'1,2'", data.engine, None)
    assert status == 400 and ET.fromstring(body.split("\n", 1)[1]).find("Error/ErrorCode").text == "2001"
    # parsed, then refused by the planner: the format comes from the parsed config
    body, status = answer_ha_query("config=hit:3,format:xml&&query=vec_index:'1,2'", data.engine, None)
    assert status == 400 and ET.fromstring(body.split("\n", 1)[1]).find("Error/ErrorCode") is not None
    body, status = answer_ha_query(f"query=vec_index:'{vec_text(q)}'&&cluster=nosuch_table_xx", data.engine, None)
    assert status == 400 and body["errors"][0]["code"] == 1001 and body["result"]["numHits"] == 0


def test_mutated_queries_end_to_end_never_crash(data):
    """Random edits of valid queries through parse → plan → engine → format: every outcome
    is a response, never an exception or a 5xx."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from adapter.query.ha_service import answer_ha_query

    v = vec_text(np.linspace(-1, 1, DIM))
    bases = [f"config=hit:5,format:json&&query=vec_index:'{v}&n=7&sf=9&search_params={{\"ef\":20}}'"
             "&&filter=(cate_id=1 OR price<50.5) AND brand!=\"acme\" AND in(cate_id,\"1|2\")"
             "&&sort=-price;+RANK&&distinct=dist_key:cate_id,dist_count:1"
             "&&aggregate=group_key:brand,agg_fun:count()#avg(price)&&kvpairs=formula:proxima_score(vec_index)"]
    alphabet = "&=:'\"(),;|+-#{}0123456789.xRANKbrandpricecate_id "

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(bases), st.lists(st.tuples(st.integers(0, 400), st.integers(0, 5),
                                                      st.text(alphabet=alphabet, max_size=4)), max_size=3))
    def check(base, edits):
        text = base
        for pos, cut, insert in edits:
            pos %= len(text) + 1
            text = text[:pos] + insert + text[pos + cut:]
        body, status = answer_ha_query(text, data.engine, None)
        assert status < 500, body
        assert isinstance(body, dict) and ("errors" in body)

    check()
