"""Bad input is a fast, clear 4xx in the client's own format (issue 25, findings 6, 8, 11):
extreme images, deep JSON, deep filters and searchParams, huge offsets and keys, too much
work in one request."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from _server_support import ADMIN, basic, png_b64, service_client

TABLES = "/openapi/ha3/instances/ha3-adapter/tables"


def _png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("L", (width, height)).save(out, format="PNG", optimize=True)
    return out.getvalue()


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with service_client(tmp_path_factory.mktemp("inputs"), docs=4) as c:
        yield c


def test_a_tiny_image_with_an_extreme_aspect_ratio_is_refused_before_decoding(client):
    """Finding 6: a 99-byte 20000x1 PNG took 20 s and 6 GB to embed."""
    from adapter.embed.images import decode_image
    from adapter.errors import ImageError

    data = _png(20000, 1)
    assert len(data) < 200
    with pytest.raises(ImageError, match="aspect ratio"):
        decode_image(data)
    decode_image(_png(640, 32))  # 20:1 banners still decode
    r = client.post("/update/images/actions/bulk", headers=basic(ADMIN), json=[
        {"cmd": "add", "fields": {"id": 90, "cate_id": 1, "vector_source_image": base64.b64encode(data).decode()}},
        {"cmd": "add", "fields": {"id": 91, "cate_id": 1, "vector_source_image": png_b64((9, 9, 9))}}])
    assert r.status_code == 400, r.text
    assert [(e["pk"], e["reason"]) for e in r.json()["errors"]] == [(90, "undecodable_image")]
    assert "aspect ratio" in r.json()["errors"][0]["message"]
    r = client.post("/vector-service/inference-query", headers=basic(ADMIN), json={
        "tableName": "images", "content": base64.b64encode(data).decode(), "modal": "image"})
    assert r.status_code == 400 and "aspect ratio" in r.json()["errorMsg"]


VECTOR = json.dumps([0.1] * 512)
DEEP_FILTER = "(" * 5000 + "cate_id=1" + ")" * 5000
HA_VECTOR = ",".join(["0.1"] * 512)


def _raw(client, path, text):
    return client.post(path, headers={**basic(ADMIN), "content-type": "application/json"}, content=text)


@pytest.mark.parametrize("name, send, where", [
    ("JSON nested 5000 deep", lambda c: _raw(c, "/vector-service/query", "[" * 5000 + "]" * 5000), "nested deeper"),
    ("JSON nested 900 deep", lambda c: _raw(c, "/update/images/actions/bulk",
                                            '[{"cmd":"add","fields":{"id":1,"x":' + '{"a":' * 900 + "1" + "}" * 900 + "}}]"),
     "nested deeper"),
    ("searchParams nested deep", lambda c: c.post("/vector-service/query", headers=basic(ADMIN), json={
        "tableName": "images", "vector": [0.1] * 512, "searchParams": '{"a":' * 5000 + "1" + "}" * 5000}), "searchParams"),
    ("filter nested 5000 deep", lambda c: c.post("/vector-service/query", headers=basic(ADMIN), json={
        "tableName": "images", "vector": [0.1] * 512, "filter": DEEP_FILTER}), "nested deeper"),
    ("3000 ORs", lambda c: c.post("/vector-service/query", headers=basic(ADMIN), json={
        "tableName": "images", "vector": [0.1] * 512, "filter": " OR ".join(["cate_id=1"] * 3000)}), "conditions"),
    ("filter literal of 100 digits", lambda c: c.post("/vector-service/query", headers=basic(ADMIN), json={
        "tableName": "images", "vector": [0.1] * 512, "filter": "cate_id=" + "9" * 100}), "out of range"),
    ("fetch offset 1e19", lambda c: c.post("/vector-service/fetch", headers=basic(ADMIN), json={
        "tableName": "images", "offset": 10**19, "filter": "cate_id=1"}), "$.offset"),
    ("primary key NaN", lambda c: _raw(c, "/update/images/actions/bulk",
                                       '[{"cmd":"add","fields":{"id":NaN,"cate_id":1,"vector":' + VECTOR + "}}]"), "NaN"),
    ("primary key Infinity", lambda c: _raw(c, "/update/images/actions/bulk",
                                            '[{"cmd":"delete","fields":{"id":Infinity}}]'), "Infinity"),
    ("primary key 1e999", lambda c: _raw(c, "/update/images/actions/bulk",
                                         '[{"cmd":"delete","fields":{"id":1e999}}]'), "not an integer"),
    ("scoreThreshold NaN", lambda c: _raw(c, "/vector-service/query",
                                          '{"tableName":"images","vector":' + VECTOR + ',"scoreThreshold":NaN}'), "NaN"),
])
def test_bad_input_is_a_4xx_not_a_500(client, name, send, where):
    """Finding 8: each of these answered 500 (RecursionError, SQLite overflow, NaN in JSON)."""
    r = send(client)
    assert r.status_code == 400, (name, r.status_code, r.text[:300])
    assert where in r.text


def test_ha_query_errors_keep_the_ha_format(client):
    r = client.get("/query", headers=basic(ADMIN), params={
        "query": f"config=hit:2&&query=vector:'{HA_VECTOR}'&&filter={DEEP_FILTER}&&cluster=images"})
    assert r.status_code == 400 and "nested deeper than 32" in r.json()["errors"][0]["message"]
    r = client.get("/query", headers=basic(ADMIN), params={
        "query": f"config=hit:2&&query=vector:'{HA_VECTOR}&search_params=" + '{"a":' * 50 + "1" + "}" * 50
                 + "'&&cluster=images"})
    assert r.status_code == 400 and "search_params" in r.json()["errors"][0]["message"]


def test_keys_that_cannot_exist_are_simply_missing(client):
    """A 100-digit primary key cannot be stored; looking it up is a miss, not a 500."""
    assert client.get("/ui/thumbnail/images/" + "1" * 100, headers=basic(ADMIN)).status_code == 404
    r = client.post("/vector-service/fetch", headers=basic(ADMIN), json={"tableName": "images", "ids": ["1" * 100, "1"]})
    assert r.status_code == 200 and [h["id"] for h in r.json()["result"]] == [1]


def _query(client, **body):
    return client.post("/vector-service/query", headers=basic(ADMIN), json={"tableName": "images", **body})


def test_one_request_cannot_ask_for_unbounded_work(client):
    """Finding 11: vectorCount 100000 took 15 s, 1000 contents 27.7 s, a NaN threshold 'worked'."""
    r = _query(client, vector=[0.1] * 512 * 65, vectorCount=65)
    assert r.status_code == 400 and "limit is 64" in r.json()["errorMsg"]
    r = _query(client, vector=[0.1] * 512, vectorCount=100000)
    assert r.status_code == 400 and "limit is 64" in r.json()["errorMsg"]
    r = _query(client, contents=["a red square"] * 1000, modal="text")
    assert r.status_code == 400 and "limit is 64" in r.json()["errorMsg"]
    r = _query(client, contents=["a red square"] * 20, modal="text")
    assert r.status_code == 400 and "limit is 16" in r.json()["errorMsg"]
    r = client.post("/vector-service/batch-query", headers=basic(ADMIN), json={
        "queries": [{"tableName": "images", "contents": ["red"] * 10, "modal": "text"}] * 2})
    assert r.status_code == 400 and "limit is 16" in r.json()["errorMsg"]
    r = _raw(client, "/vector-service/query", '{"tableName":"images","vector":' + VECTOR + ',"scoreThreshold":NaN}')
    assert r.status_code == 400
    r = client.get("/query", headers=basic(ADMIN), params={
        "query": "config=hit:2&&query=vector:'" + ";".join(["0.1,0.2"] * 100) + "'&&cluster=images"})
    assert r.status_code == 400 and "limit" in r.json()["errors"][0]["message"]
    assert _query(client, contents=["red", "green"], modal="text", topK=2).status_code == 200  # within limits
