"""Property tests for what reads untrusted text (issue 25's fuzzing pass): the JSON guard,
the filter parser, vectors and the HTTP bodies of the hot routes. Whatever comes in, the
answer is a located 4xx error of the package's own family, never another exception."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _server_support import ADMIN, basic, service_client

JSON_TEXT = st.text(alphabet='[]{}"\\,:abc 0123456789.eE+-ntrufalsNIfy', max_size=80)
JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                           | st.text(alphabet='[]{}"\\ab\n', max_size=6),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                                        max_size=3),
                           max_leaves=30)


def _depth(value) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


@settings(max_examples=400, deadline=None)
@given(JSON_VALUES)
def test_nesting_depth_matches_the_parsed_structure(value):
    """The byte scan (brackets inside strings and escapes ignored) sees what json sees."""
    from adapter.safejson import nesting_depth

    assert nesting_depth(json.dumps(value).encode()) == _depth(value)


@settings(max_examples=600, deadline=None)
@given(JSON_TEXT)
def test_client_json_is_parsed_or_refused_with_json_error(text):
    from adapter.safejson import JsonError, loads

    try:
        value = loads(text, max_depth=4)
    except JsonError:
        return
    assert _depth(value) <= 4
    assert "NaN" not in json.dumps(value)  # no NaN/Infinity came through


FILTER_TOKENS = st.sampled_from(["(", ")", " AND ", " OR ", "NOT ", "cate_id", "=", "!=", "<", "1", "1.5", "'x'",
                                 '"a|b"', "in(", "notin(", ",", "9" * 30, "1e999", " "])


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(FILTER_TOKENS, max_size=40), st.integers(0, 200))
def test_filters_parse_or_raise_located_query_errors(tokens, depth):
    from adapter.errors import QueryError
    from adapter.query.haquery import parse_filter

    for text in ("".join(tokens), "(" * depth + "".join(tokens) + ")" * depth):
        try:
            parse_filter(text, 7)
        except QueryError as exc:
            assert exc.location.startswith("query offset ")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True) | st.integers(-10**40, 10**40), min_size=1, max_size=8))
def test_vectors_are_float32_safe_or_refused(values):
    import numpy as np

    from adapter.vectors import MAX_NORM, to_vector

    try:
        vector = to_vector(values)
    except ValueError:
        return
    assert vector.dtype == np.float32 and np.isfinite(vector).all()
    assert float(np.linalg.norm(vector.astype(np.float64))) <= MAX_NORM * 1.0001
    assert np.isfinite(np.float32(4) * np.dot(vector, vector))  # any squared distance stays finite


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with service_client(tmp_path_factory.mktemp("fuzz"), docs=3) as c:
        yield c


FIELD_VALUES = st.one_of(
    st.just("images"), st.integers(-2**70, 2**70), st.floats(), st.text(max_size=12), st.none(), st.booleans(),
    st.lists(st.floats(width=32, allow_nan=False) | st.integers(), max_size=4),
    st.just([0.1] * 512), st.just("cate_id=1"), st.just('{"proxima.hnsw.searcher.ef": 10}'),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=3))
BODY_KEYS = ["tableName", "vector", "vectorCount", "topK", "filter", "sort", "searchParams", "scoreThreshold",
             "content", "contents", "modal", "outputFields", "ids", "offset", "limit", "queries", "knn", "text",
             "size", "from", "groupKeys", "aggFuncs", "order", "includeVector", "weight", "rank"]


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(["query", "multi-query", "fetch", "search", "aggregate", "batch-query", "stats",
                        "inference-query"]),
       st.dictionaries(st.sampled_from(BODY_KEYS), FIELD_VALUES, max_size=7))
def test_vector_service_bodies_never_500(client, endpoint, body):
    r = client.post(f"/vector-service/{endpoint}", headers={**basic(ADMIN), "content-type": "application/json"},
                    content=json.dumps(body))  # NaN and Infinity literals too
    assert r.status_code < 500, (endpoint, body, r.text[:300])
    assert "errorCode" in r.json()


PUSH_FIELDS = st.dictionaries(st.sampled_from(["id", "cate_id", "vector", "vector_source_image", "x"]), FIELD_VALUES,
                              max_size=4)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.fixed_dictionaries({"cmd": st.sampled_from(["add", "delete", "ADD", "x"]), "fields": PUSH_FIELDS}),
                max_size=4))
def test_push_bodies_never_500(client, commands):
    r = client.post("/update/images/actions/bulk", headers={**basic(ADMIN), "content-type": "application/json"},
                    content=json.dumps(commands))
    assert r.status_code < 500, (commands, r.text[:300])
    assert r.json()["status"] in ("OK", "FAIL")


HA_PARTS = st.sampled_from([
    "config=hit:3,format:json", "config=start:2,hit:0", "config=hit:99999999", "config=format:xml",
    "config=fetch_summary_type:pk", "query=image_index:'" + ",".join(["0.1"] * 512) + "'",
    "query=image_index:'" + ",".join(["0.1"] * 512) + "&n=5&sf=1e39'", "query=image_index:'cmVk&modal=text'",
    "query=image_index:'" + ";".join([",".join(["1e30"] * 512)] * 2) + "'", "query=image_index:'1,2'",
    "query=image_index:'" + ",".join(["0.1"] * 512) + "&search_params={\"proxima.hnsw.searcher.ef\":0}'",
    "filter=cate_id=1", "filter=(((cate_id>1", "filter=in(cate_id,\"1|2\")", "filter=cate_id=" + "9" * 40,
    "sort=-RANK", "sort=+cate_id;-RANK", "sort=nosuch", "kvpairs=formula:proxima_score(vector)",
    "distinct=dist_key:cate_id,dist_count:1", "distinct=dist_key:nosuch", "aggregate=group_key:cate_id,agg_fun:count()",
    "aggregate=group_key:cate_id,agg_fun:sum(cate_id)#max(id)", "aggregate=group_key:cate_id,max_group:0",
    "cluster=images", "cluster=general", "cluster=nosuch", "", "&&", "x=y"])


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(HA_PARTS, max_size=6), st.booleans())
def test_ha_queries_never_500(client, parts, post):
    text = "&&".join(parts)
    if post:
        r = client.post("/query", headers=basic(ADMIN), json={"assemblyQuery": text})
    else:
        r = client.get("/query", headers=basic(ADMIN), params={"query": text})
    assert r.status_code < 500, (text[:300], r.text[:300])
