"""Acceptance: the OFFICIAL Alibaba SDKs, unchanged but for endpoint/protocol/credentials,
against a live uvicorn server on loopback with the tiny CLIP model."""

from __future__ import annotations

import base64
import json
from typing import NamedTuple

import httpx
import pytest

from _opensearch_support import engine_config, unique
from _server_support import ADMIN, READER, basic, live_server, make_settings, png_b64, push_body, seed_schema

ha3 = pytest.importorskip("alibabacloud_ha3engine", reason="official SDK alibabacloud-ha3engine not installed")
ha3v = pytest.importorskip("alibabacloud_ha3engine_vector", reason="official SDK alibabacloud-ha3engine-vector not installed")
from alibabacloud_ha3engine import client as ha_client, models as ha_models  # noqa: E402
from alibabacloud_ha3engine_vector import client as vec_client, models as vec_models  # noqa: E402
from Tea.exceptions import TeaException  # noqa: E402

INSTANCE = "ha3-adapter"


class Live(NamedTuple):
    endpoint: str  # host:port, as the SDKs take it
    table: str


@pytest.fixture(scope="module", params=["embedded", pytest.param("opensearch", marks=pytest.mark.opensearch)])
def server(request, tmp_path_factory):
    """The service on each engine; the SDK calls are the same for both."""
    from adapter.embed.testing import make_tiny_clip
    from adapter.runtime import Runtime

    extra, table = {}, "image_search"
    if request.param == "opensearch":
        extra, table = {"engine": engine_config()}, unique("image_search")  # the node outlives runs
    tmp = tmp_path_factory.mktemp("sdk")
    clip = make_tiny_clip(tmp / "clip", dim=512)
    runtime = Runtime.from_settings(make_settings(tmp, clip, instance_id=INSTANCE, **extra))
    with live_server(runtime) as base:
        assert httpx.get(f"{base}/health").status_code == 200
        # Table from the seed's HA3 schema, exactly as uploaded.
        r = httpx.post(f"{base}/openapi/ha3/instances/{INSTANCE}/tables", headers=basic(ADMIN),
                       json={"name": table, "schema": seed_schema("image_index")})
        assert r.status_code == 200, r.text
        yield Live(base.removeprefix("http://"), table)
        httpx.delete(f"{base}/openapi/ha3/instances/{INSTANCE}/tables/{table}", headers=basic(ADMIN))
    runtime.close()


def ha_sdk(endpoint: str, user=ADMIN):
    config = ha_models.Config(endpoint=endpoint, instance_id="", protocol="http",
                              access_user_name=user[0], access_pass_word=user[1])
    return ha_client.Client(config)


def vec_sdk(endpoint: str, user=ADMIN):
    config = vec_models.Config(endpoint=endpoint, instance_id=INSTANCE, protocol="http",
                               access_user_name=user[0], access_pass_word=user[1])
    return vec_client.Client(config)


@pytest.fixture(scope="module")
def pushed(server):
    client = ha_sdk(server.endpoint)
    request = ha_models.PushDocumentsRequestModel({}, push_body(6))
    response = client.push_documents(server.table, "id", request)
    body = json.loads(response.body)
    assert body["status"] == "OK" and body["written"] == 6
    return server


def test_push_documents_add_and_delete(pushed):
    client = ha_sdk(pushed.endpoint)
    request = ha_models.PushDocumentsRequestModel({}, [{"cmd": "add", "fields": {"id": 99, "cate_id": 3,
                                                         "vector_source_image": png_b64((9, 9, 9))}},
                                                        {"cmd": "delete", "fields": {"id": 99}}])
    body = json.loads(client.push_documents(pushed.table, "id", request).body)
    assert body["status"] == "OK"
    got = json.loads(vec_sdk(pushed.endpoint).fetch(vec_models.FetchRequest(table_name=pushed.table, ids=["99"])).body)
    assert got["result"] == []


def test_seed_sample_search_with_query_string(pushed):
    # The seed's Python sample, with Base64 text as the HA syntax asks for.
    text = base64.b64encode("a red picture".encode()).decode()
    query_str = ("config=hit:4,format:json,fetch_summary_type:pk,qrs_chain:search&&query=image_index: "
                 f"'{text}&modal=text&n=10&search_params={{}}'&&cluster=general")
    request = ha_models.SearchRequestModel({}, ha_models.SearchQuery(query=query_str))
    response = ha_sdk(pushed.endpoint).search(request)
    body = json.loads(response.body)
    assert body["errors"] == []
    assert body["result"]["numHits"] == 4 and body["result"]["totalHits"] == 6
    assert len(body["result"]["items"]) == 4


def test_search_by_image_vector_and_post_method(pushed):
    img = png_b64((0, 0, 255))
    query_str = (f"config=hit:3,format:json&&query=image_index:'{img}&modal=image&n=3'"
                 "&&kvpairs=formula:proxima_score(vector)&&sort=+RANK&&cluster=general")
    request = ha_models.SearchRequestModel({}, ha_models.SearchQuery(query=query_str))
    request.method = "POST"
    body = json.loads(ha_sdk(pushed.endpoint).search(request).body)
    items = body["result"]["items"]
    assert str(items[0]["fields"]["id"]) == "3"  # the blue square pushed with id 3


def test_sdk_default_get_search_with_a_large_base64_image(pushed):
    # The SDK's default method is GET: the whole query, image included, travels in the URL.
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(1)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=90)
    img = base64.b64encode(buf.getvalue()).decode()
    assert len(img) > 30_000
    query_str = (f"config=hit:2,format:json&&query=image_index:'{img}&modal=image&n=2'"
                 "&&kvpairs=formula:proxima_score(vector)&&sort=+RANK&&cluster=general")
    body = json.loads(ha_sdk(pushed.endpoint).search(ha_models.SearchRequestModel({}, ha_models.SearchQuery(query=query_str))).body)
    assert body["errors"] == [] and body["result"]["numHits"] == 2


def test_vector_service_query_inference_and_fetch(pushed):
    client = vec_sdk(pushed.endpoint)
    # inference_query with an image: the same picture is its own nearest neighbour.
    r = client.inference_query(vec_models.QueryRequest(table_name=pushed.table, content=png_b64((0, 255, 0)),
                                                       modal="image", top_k=2, output_fields=["cate_id"]))
    body = json.loads(r.body)
    assert body["errorCode"] == 0
    assert str(body["result"][0]["id"]) == "2" and body["result"][0]["score"] == pytest.approx(0.0, abs=1e-3)
    assert str(body["result"][0]["fields"]["cate_id"]) == "2"

    # inference_query with text.
    r = client.inference_query(vec_models.QueryRequest(table_name=pushed.table, content="a green square",
                                                       modal="text", top_k=5))
    assert len(json.loads(r.body)["result"]) == 5

    # query with a raw vector, taken from a fetch with includeVector... the embedding is not
    # saved in this schema, so query with the text embedding's neighbour order instead.
    r = client.query(vec_models.QueryRequest(table_name=pushed.table, vector=[0.01] * 512, top_k=3,
                                             output_fields=["cate_id"], filter="cate_id=1"))
    body = json.loads(r.body)
    assert body["result"] and all(str(h["fields"]["cate_id"]) == "1" for h in body["result"])

    r = client.fetch(vec_models.FetchRequest(table_name=pushed.table, ids=["1", "2"], output_fields=["cate_id"]))
    body = json.loads(r.body)
    assert sorted(str(h["id"]) for h in body["result"]) == ["1", "2"]

    stats = json.loads(client.stats(pushed.table).body)
    assert stats["errorCode"] == 0


def test_vector_sdk_table_management_and_active(pushed):
    client = vec_sdk(pushed.endpoint)
    names = [t.name for t in client.list_tables().body.result]
    assert pushed.table in names
    table = client.get_table(pushed.table).body.result
    assert table.primary_key == "id" and table.field_schema["vector"] == "MULTI_FLOAT"
    assert json.loads(client.active().body)["status"] == "OK"
    other = vec_client.Client(vec_models.Config(endpoint=pushed.endpoint, instance_id="ha-cn-other", protocol="http",
                                                access_user_name=ADMIN[0], access_pass_word=ADMIN[1]))
    with pytest.raises(TeaException) as info:  # this server is configured as instance INSTANCE
        other.list_tables()
    assert info.value.code == 404


def test_sdk_errors_raise_tea_exception(pushed):
    with pytest.raises(TeaException) as info:
        vec_sdk(pushed.endpoint, user=(ADMIN[0], "wrong")).query(
            vec_models.QueryRequest(table_name=pushed.table, vector=[0.0] * 512))
    assert info.value.code == 401
    with pytest.raises(TeaException) as info:
        vec_sdk(pushed.endpoint).query(vec_models.QueryRequest(table_name="nosuch", vector=[0.0] * 512))
    assert info.value.code == 404
    with pytest.raises(TeaException) as info:
        ha_sdk(pushed.endpoint, user=READER).push_documents(pushed.table, "id",
                                                   ha_models.PushDocumentsRequestModel({}, push_body(1)))
    assert info.value.code == 403
