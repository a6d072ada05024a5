"""HTTP service behaviour through FastAPI's TestClient: auth, errors, table → push → query."""

from __future__ import annotations

import base64
import json

import pytest
from fastapi.testclient import TestClient

from _server_support import ADMIN, READER, basic, make_settings, png_b64, push_body, seed_schema

INSTANCE = "ha3-adapter"
TABLES = f"/openapi/ha3/instances/{INSTANCE}/tables"


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from adapter.embed.testing import make_tiny_clip

    return make_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny", dim=512)


@pytest.fixture(scope="module")
def client(tmp_path_factory, tiny_clip):
    from adapter.runtime import Runtime
    from adapter.server.app import create_app

    tmp = tmp_path_factory.mktemp("svc")
    settings = make_settings(tmp, tiny_clip, limits={"max_body_bytes": 2 * 1024 * 1024})
    runtime = Runtime.from_settings(settings)
    with TestClient(create_app(runtime), raise_server_exceptions=False) as c:
        c.runtime = runtime
        c.tmp = tmp
        r = c.post(TABLES, headers=basic(ADMIN), json={"name": "images", "schema": seed_schema()})
        assert r.status_code == 200, r.text
        r = c.post("/update/images/actions/bulk", headers=basic(ADMIN), json=push_body(6))
        assert r.status_code == 200, r.text
        yield c
    runtime.close()


def ha(client, query: str, auth=ADMIN):
    return client.get("/query", params={"query": query}, headers=basic(auth))


def test_health_needs_no_auth_and_metrics_exposes_counters_to_users(client):
    assert client.get("/health").json()["status"] == "ok"
    ha(client, "config=hit:2,format:json&&query=image_index:'1,2'&&cluster=images")
    assert client.get("/metrics").status_code == 401  # the counters name tables: users only
    text = client.get("/metrics", headers=basic(READER)).text
    assert "ha3_adapter_requests_total" in text
    assert 'endpoint="/query"' in text


def test_unknown_cluster_gets_ha3s_cluster_error_and_general_keeps_working(client):
    text = base64.b64encode("a red square".encode()).decode()
    query = f"config=hit:3,format:json&&query=image_index:'{text}&modal=text&n=3'&&cluster="
    r = ha(client, query + "nope")
    assert r.status_code == 400
    [error] = r.json()["errors"]
    assert error["code"] == 1001 and "cluster name not exist. ClusterName:nope" in error["message"]
    for cluster in ("general", "images"):  # the SDK's default, and a table name
        r = ha(client, query + cluster)
        assert r.status_code == 200 and len(r.json()["result"]["items"]) == 3, r.text
    # /{index}/search: the path is a table or a vector index name, or the body names a cluster
    body = {"query": f"image_index:'{text}&modal=text&n=2'", "config": {"hit": 2, "format": "json"}}
    for path in ("/images/search", "/image_index/search"):
        r = client.post(path, headers=basic(ADMIN), json=body)
        assert r.status_code == 200 and len(r.json()["result"]["items"]) == 2, (path, r.text)
    r = client.post("/images/search", headers=basic(ADMIN), json={**body, "cluster": "nope"})
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == 1001


def test_missing_and_wrong_credentials_get_401_in_ha_format(client):
    r = client.get("/query", params={"query": "config=hit:1&&query=x:'1'"})
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Basic")
    assert r.json()["errors"][0]["code"] == 4010
    r = ha(client, "config=hit:1&&query=x:'1'", auth=(ADMIN[0], "wrong"))
    assert r.status_code == 401 and "wrong username or password" in r.json()["errors"][0]["message"]
    r = client.post("/vector-service/query", json={"tableName": "images", "vector": [0.0] * 512},
                    headers={"Authorization": "Basic !!!notbase64"})
    assert r.status_code == 401 and r.json()["errorCode"] == 4010


def test_read_only_user_can_query_but_not_write(client):
    text = base64.b64encode("a red square".encode()).decode()
    r = ha(client, f"config=hit:3,format:json&&query=image_index:'{text}&modal=text&n=3'&&cluster=images",
           auth=READER)
    assert r.status_code == 200, r.text
    r = client.post("/update/images/actions/bulk", headers=basic(READER), json=push_body(1))
    assert r.status_code == 403 and r.json()["status"] == "FAIL"
    r = client.delete(f"{TABLES}/images", headers=basic(READER))
    assert r.status_code == 403


def test_table_create_push_query_round_trip(client):
    r = client.get(f"{TABLES}/images", headers=basic(ADMIN))
    assert r.status_code == 200
    view = r.json()["result"]
    assert view["primaryKey"] == "id" and view["docCount"] == 6
    assert view["fieldSchema"]["vector"] == "MULTI_FLOAT"
    assert "images" in [t["name"] for t in client.get(TABLES, headers=basic(ADMIN)).json()["result"]]

    # Image query by Base64 through the vector service: the pushed red square ranks first.
    r = client.post("/vector-service/inference-query", headers=basic(ADMIN),
                    json={"tableName": "images", "content": png_b64((255, 0, 0)), "modal": "image",
                          "topK": 3, "outputFields": ["cate_id"]})
    assert r.status_code == 200, r.text
    result = r.json()["result"]
    assert str(result[0]["id"]) == "1" and len(result) == 3
    assert float(result[0]["score"]) == pytest.approx(0.0, abs=1e-3)
    assert float(r.headers["x-embed-time-ms"]) > 0 and float(r.headers["x-engine-time-ms"]) > 0
    parts = [float(r.headers[f"x-{k}-time-ms"]) for k in ("embed", "engine", "receive")]
    assert parts[2] > 0 and sum(parts) <= float(r.headers["x-service-time-ms"])  # parts of the whole

    # Delete by push, then fetch shows it gone.
    r = client.post("/update/images/actions/bulk", headers=basic(ADMIN),
                    json=[{"cmd": "delete", "fields": {"id": 6}}])
    assert r.status_code == 200, r.text
    r = client.post("/vector-service/fetch", headers=basic(ADMIN), json={"tableName": "images", "ids": ["5", "6"]})
    assert r.status_code == 200, r.text
    assert [str(x["id"]) for x in r.json()["result"]] == ["5"]


def test_push_data_source_name_rules(client):
    from adapter.server.routes_push import table_for_data_source

    engine = client.runtime.engine
    assert table_for_data_source(engine, "images") == "images"
    assert table_for_data_source(engine, "images_datasource") == "images"
    assert table_for_data_source(engine, "ha3-cn-abc_images") == "images"
    r = client.post("/update/nosuch/actions/bulk", headers=basic(ADMIN), json=push_body(1))
    assert r.status_code == 404 and r.json()["status"] == "FAIL"
    r = client.post("/update/images/actions/bulk", headers={**basic(ADMIN), "X-Opensearch-Swift-PK-Field": "cate_id"},
                    json=push_body(1))
    assert r.status_code == 400 and "primary key" in r.json()["errors"][0]["message"]


@pytest.mark.parametrize("method,path,kwargs,fmt", [
    ("get", "/query", {"params": {"query": "config=hit:abc&&query="}}, "ha"),
    ("get", "/query", {"params": {"query": "config=hit:2&&query=nosuchindex:'1,2'"}}, "ha"),
    ("get", "/query", {"params": {"query": ""}}, "ha"),
    ("get", "/query", {"params": {"query": "x", "type": "sql"}}, "ha"),
    ("get", "/query?query=%ff%fe", {}, "ha"),  # not UTF-8 once percent-decoded
    ("post", "/query", {"content": b"{not json", "headers": {"content-type": "application/json"}}, "ha"),
    ("post", "/query", {"json": {"assemblyQuery": 5}}, "ha"),
    ("post", "/query", {"content": b"<xml/>", "headers": {"content-type": "application/xml"}}, "ha"),
    ("post", "/vector-service/query", {"json": {"tableName": "nosuch", "vector": [0.1] * 512}}, "vec"),
    ("post", "/vector-service/query", {"json": {"tableName": "images", "vector": [0.1, 0.2]}}, "vec"),
    ("post", "/vector-service/query", {"json": [1, 2]}, "vec"),
    ("post", "/vector-service/inference-query", {"json": {"tableName": "images", "content": "@@@", "modal": "image"}}, "vec"),
    ("post", "/vector-service/fetch", {"content": b"\xff\xfe", "headers": {"content-type": "application/json"}}, "vec"),
    ("post", "/update/images/actions/bulk", {"json": {"cmd": "add"}}, "push"),
    ("post", TABLES, {"json": {"name": "bad", "schema": {"fields": []}}}, "api"),
    ("post", TABLES, {"json": {"schema": {}}}, "api"),
    ("get", f"{TABLES}/nosuch", {}, "api"),
    ("delete", f"{TABLES}/nosuch", {}, "api"),
    ("get", "/no/such/endpoint/here", {}, "ha"),
    ("put", "/query", {}, "ha"),
])
def test_bad_input_is_4xx_in_client_format(client, method, path, kwargs, fmt):
    kwargs = dict(kwargs)
    kwargs["headers"] = {**basic(ADMIN), **kwargs.get("headers", {})}
    r = getattr(client, method)(path, **kwargs)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    body = r.json()
    if fmt == "ha":
        assert body["errors"] and body["errors"][0]["message"]
    elif fmt == "vec":
        assert body["errorCode"] != 0 and body["errorMsg"]
    elif fmt == "push":
        assert body["status"] == "FAIL" and body["errors"]
    else:
        assert body["code"] and body["message"] and body["requestId"]


def test_oversized_body_gets_413_before_reading(client):
    # A 3 MB Base64 "image" over the 2 MiB limit configured for this app (30 MB in the
    # default 20 MiB configuration behaves the same).
    big = "A" * (3 * 1024 * 1024)
    r = client.post("/vector-service/inference-query", headers=basic(ADMIN),
                    json={"tableName": "images", "content": big, "modal": "image"})
    assert r.status_code == 413
    assert "limit is 2097152 bytes" in r.json()["errorMsg"]

    def chunks():  # no Content-Length: the streamed body is counted and cut off
        for _ in range(40):
            yield b"x" * 100_000

    r = client.post("/update/images/actions/bulk", headers=basic(ADMIN), content=chunks())
    assert r.status_code == 413 and r.json()["status"] == "FAIL"


def test_created_table_usable_at_once_and_delete(client):
    schema = seed_schema("vec2")
    r = client.post(TABLES, headers=basic(ADMIN), json={"name": "fresh", "schema": json.dumps(schema)})
    assert r.status_code == 200, r.text
    r = client.post(TABLES, headers=basic(ADMIN), json={"name": "fresh", "schema": schema})
    assert r.status_code == 409
    r = client.post("/update/fresh/actions/bulk", headers=basic(ADMIN), json=push_body(2))
    assert r.status_code == 200, r.text
    r = ha(client, "config=hit:5,format:json&&query=vec2:'" + ",".join(["0.01"] * 512) + "&n=5'&&cluster=fresh")
    assert r.status_code == 200, r.text
    assert r.json()["result"]["numHits"] == 2
    r = client.get(f"{TABLES}/fresh/index_versions", headers=basic(ADMIN))
    assert r.status_code == 200 and r.json()["result"]
    assert client.delete(f"{TABLES}/fresh", headers=basic(ADMIN)).status_code == 200
    assert client.get(f"{TABLES}/fresh", headers=basic(ADMIN)).status_code == 404


def test_secrets_kept_out_of_engine_and_responses(client):
    import stat

    from _server_support import MAPPINGS

    oss = json.loads((MAPPINGS / "image_search_oss.json").read_text())
    secret_values = ("oss_access_key", "oss_secret")
    r = client.post(TABLES, headers=basic(ADMIN), json={"name": "oss_table", "schema": oss})
    assert r.status_code == 200, r.text
    view = client.get(f"{TABLES}/oss_table", headers=basic(ADMIN)).text
    params = [f.get("user_defined_param", {}) for f in oss["fields"]]
    creds = [p[k] for p in params for k in secret_values if p.get(k)]
    assert creds, "the seed OSS schema carries credentials"
    for c in creds:
        assert c not in view and c not in r.text
    secrets_file = client.runtime.secrets.path
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    assert creds[0] in secrets_file.read_text()
    full = client.runtime.spec_with_secrets("oss_table")
    store = next(iter(full.object_store_fields().values()))
    assert store.access_key_secret.get_secret_value() in creds


def test_reindex_runs_a_rebuild_task_from_a_table_source(client):
    import time

    r = client.post(TABLES, headers=basic(ADMIN), json={"name": "rebuilt", "schema": seed_schema("rb_index")})
    assert r.status_code == 200, r.text
    state = client.runtime.settings.state_dir
    rows = state / "tables" / "items.jsonl"  # inside the data directory: a source the service may read
    rows.parent.mkdir(parents=True, exist_ok=True)
    rows.write_text("\n".join(json.dumps({"id": i, "cate_id": 1, "vector_source_image": png_b64((i * 40, 0, 0))})
                              for i in range(1, 6)) + "\n" + json.dumps({"id": 6, "cate_id": 1,
                                                                          "vector_source_image": "bm90IGFuIGltYWdl"}) + "\n")
    r = client.post(f"{TABLES}/rebuilt/reindex", headers=basic(ADMIN), json={"dataTimeSec": 1})
    assert r.status_code == 404 and "no stored pipeline named 'rebuilt'" in r.json()["message"]
    (state / "pipelines").mkdir(exist_ok=True)
    (state / "pipelines" / "rebuilt.json").write_text(json.dumps(
        {"source": {"table": {"path": "tables/items.jsonl"}, "image": {"kind": "base64"}}}))
    r = client.post(f"{TABLES}/rebuilt/reindex", headers=basic(ADMIN), json={"dataTimeSec": 1})  # SDK fields
    assert r.status_code == 200, r.text
    task_id = r.json()["result"]["taskId"]
    for _ in range(600):
        task = client.get(f"/openapi/ha3/instances/{INSTANCE}/tasks/{task_id}", headers=basic(ADMIN)).json()["result"]
        if task["state"] in ("succeeded", "failed"):
            break
        time.sleep(0.05)
    assert task["state"] == "succeeded", task
    assert task["read"] == 6 and task["indexed"] == 5 and task["failed"] == 1
    assert client.get(f"{TABLES}/rebuilt", headers=basic(ADMIN)).json()["result"]["docCount"] == 5
    listed = client.get(f"/openapi/ha3/instances/{INSTANCE}/tasks", headers=basic(ADMIN)).json()["result"]
    assert task_id in [t["taskId"] for t in listed]
    assert "ha3_adapter_ingest_records" in client.get("/metrics", headers=basic(ADMIN)).text


def test_modify_table_switches_empty_tables_and_refuses_full_ones(client):
    schema = seed_schema("mod_index")
    assert client.post(TABLES, headers=basic(ADMIN), json={"name": "mod", "schema": schema}).status_code == 200
    changed = seed_schema("mod_index")
    for index in changed["indexs"]:
        if index["index_type"] == "CUSTOMIZED":
            index["parameters"]["distance_type"] = "InnerProduct"
    r = client.put(f"{TABLES}/mod", headers=basic(ADMIN), json={"schema": changed})
    assert r.status_code == 200, r.text
    assert client.get(f"{TABLES}/mod", headers=basic(ADMIN)).json()["result"]["vectorIndex"][0]["distanceType"] == "InnerProduct"
    assert client.post("/update/mod/actions/bulk", headers=basic(ADMIN), json=push_body(1)).status_code == 200
    r = client.put(f"{TABLES}/mod", headers=basic(ADMIN), json={"schema": schema})
    assert r.status_code == 409 and "reindex" in r.json()["message"]


def test_warm_up_runs_each_model_and_one_query_per_table(client, monkeypatch):
    """Loading is not enough: the starter model loads its text tower on first use, torch sets
    up on the first forward pass, the engine opens a table's index files on its first search;
    serve's start-up pays all of it before it accepts queries."""
    from adapter.server.app import warm_up

    runtime, calls, searched = client.runtime, [], []
    embedder, engine = runtime.embedder, runtime.engine
    real_text, real_image, real_search = embedder.embed_text, embedder.embed_image, engine.search
    monkeypatch.setattr(embedder, "embed_text", lambda m, t: calls.append(("text", m)) or real_text(m, t))
    monkeypatch.setattr(embedder, "embed_image", lambda m, d: calls.append(("image", m)) or real_image(m, d))
    monkeypatch.setattr(engine, "search", lambda plan: searched.append(plan.table) or real_search(plan))
    assert warm_up(runtime) == ["clip"]
    assert {("text", "clip"), ("image", "clip")} <= set(calls)
    assert sorted(searched) == sorted(t for t in engine.list_tables() if engine.get_spec(t).embedding)


def test_deflated_body_as_the_vector_sdk_can_send(client):
    import zlib

    raw = json.dumps({"tableName": "images", "ids": ["1"]}).encode()
    r = client.post("/vector-service/fetch", content=zlib.compress(raw),
                    headers={**basic(ADMIN), "content-type": "application/json", "content-encoding": "deflate"})
    assert r.status_code == 200, r.text
    assert [str(h["id"]) for h in r.json()["result"]] == ["1"]
    r = client.post("/vector-service/fetch", content=b"not deflate",
                    headers={**basic(ADMIN), "content-type": "application/json", "content-encoding": "deflate"})
    assert r.status_code == 400 and "deflate" in r.json()["errorMsg"]



def test_native_ha3_get_url_with_literal_clauses_is_answered(client):
    """HA3's own URL form /query?config=...&&query=...&&sort=+RANK, without a ?query= wrapper:
    the '+' of +RANK and Base64 must survive (decoded once), and it must equal the SDK form."""
    b64 = png_b64((255, 0, 0)).replace("+", "%2B").replace("/", "%2F").replace("=", "%3D")
    native = (f"/query?config=hit:3,format:json&&query=image_index:'{b64}%26modal=image%26n=3'"
              "&&kvpairs=formula:proxima_score(vector)&&sort=+RANK&&cluster=images")
    r = client.get(native, headers=basic(ADMIN))
    assert r.status_code == 200, r.text
    items = r.json()["result"]["items"]
    assert [item["fields"]["id"] for item in items][0] == "1"
    sdk = ha(client, f"config=hit:3,format:json&&query=image_index:'{png_b64((255, 0, 0))}&modal=image&n=3'"
                     "&&kvpairs=formula:proxima_score(vector)&&sort=+RANK&&cluster=images")
    assert sdk.status_code == 200 and sdk.json()["result"]["items"] == items


def test_sql_queries_are_refused_by_name_on_get_and_post(client):
    query = f"config=hit:2,format:json&&query=image_index:'{png_b64((255, 0, 0))}&modal=image&n=2'&&cluster=images"
    assert ha(client, query).status_code == 200  # the same query without type=sql is answered
    for r in (client.get("/query", params={"query": query, "type": "SQL"}, headers=basic(ADMIN)),
              client.post("/query?type=sql", json={"assemblyQuery": query}, headers=basic(ADMIN))):
        assert r.status_code == 400
        assert "SQL queries are not supported" in r.json()["errors"][0]["message"]


def test_unknown_paths_and_methods_answer_in_ha_format(client):
    # Routes sit flat on the app (common.add_routes): a wrong method on a known path must
    # still be told from an unknown path.
    r = client.get("/vector-service/query", headers=basic(ADMIN))
    assert r.status_code == 405 and "not allowed" in r.json()["errorMsg"], r.text
    r = client.post("/vector-service/nosuch", headers=basic(ADMIN), json={})
    assert r.status_code == 404 and "no such endpoint" in r.json()["errorMsg"], r.text
    r = client.delete("/query", headers=basic(ADMIN))
    assert r.status_code == 405 and "not allowed" in r.json()["errors"][0]["message"], r.text
    r = client.get(f"{TABLES}/images", headers=basic(ADMIN))  # a prefixed router's route keeps its prefix
    assert r.status_code == 200 and "images" in r.text, r.text


def test_url_query_pairs_decode_as_starlette_decodes_them():
    """UrlQueryRoute's C decoder (yarl) must give exactly the pairs Starlette's parse_qsl
    gives, for any query: escapes cut short, bad UTF-8, '+', blank and repeated keys."""
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from starlette.datastructures import QueryParams

    from adapter.server.url_query import decode_query

    pieces = st.sampled_from(["a", "query", "=", "&", ";", "+", "%", "%2", "%2B", "%2b", "%3D", "%26", "%25",
                              "%C3", "%A9", "%E4%BD%A0", "%F0%9F", "%ED%A0%80", "%FF", "%zz", "%00", " ", "#",
                              "\xe9", "\x80", "'", "/"])

    @settings(max_examples=800, deadline=None)
    @given(st.lists(pieces, max_size=16))
    def check(parts):
        raw = "".join(parts).encode("latin-1")
        assert decode_query(raw) == QueryParams(raw).multi_items()

    check()


def test_get_query_decodes_its_url_without_starlettes_parse_qsl(client, monkeypatch):
    """The SDK's GET image search carries a 50 KB Base64 image in the URL; Starlette's
    Python decoder must stay off that path (it is what UrlQueryRoute replaces)."""
    import starlette.datastructures

    query = f"config=hit:2,format:json&&query=image_index:'{png_b64((255, 0, 0))}&modal=image&n=2'&&cluster=images"
    expected = ha(client, query)
    assert expected.status_code == 200, expected.text

    def refuse(*args, **kwargs):
        raise AssertionError("Starlette's parse_qsl decoded a GET /query URL")

    monkeypatch.setattr(starlette.datastructures, "parse_qsl", refuse)
    r = ha(client, query)
    assert r.status_code == 200, r.text
    assert r.json()["result"]["items"] == expected.json()["result"]["items"]
