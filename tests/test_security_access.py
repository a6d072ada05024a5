"""What clients can make the service touch (issue 25, findings 1, 2 and 5): reindex reads
only inside the operator's folders and writes only its own, stored keys go only to the
endpoint and bucket they were stored for, and a file:// bucket table takes pushes."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi.testclient import TestClient

from _server_support import ADMIN, READER, basic, make_settings, png_bytes, seed_schema
from ingest_fixtures import S3_KEY, S3_SECRET, s3_server  # noqa: F401

INSTANCE = "/openapi/ha3/instances/ha3-adapter"
TABLES = f"{INSTANCE}/tables"
MARKER = "TOP-SECRET-LINE-7f3a"


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from adapter.embed.testing import make_tiny_clip

    return make_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny", dim=512)


class _Recorder(BaseHTTPRequestHandler):
    """An endpoint nobody should call: records every request's Authorization header."""

    seen: list[str] = []

    def _any(self):
        type(self).seen.append(self.headers.get("Authorization", ""))
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD = do_PUT = do_POST = _any

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def recorder():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Recorder.seen
    server.shutdown()


@pytest.fixture(scope="module")
def service(tmp_path_factory, tiny_clip, s3_server, recorder):  # noqa: F811
    from adapter.runtime import Runtime
    from adapter.server.app import create_app

    tmp = tmp_path_factory.mktemp("access")
    allowed = tmp / "allowed-tables"
    allowed.mkdir()
    settings = make_settings(tmp, tiny_clip, access={"source_roots": [str(allowed)],
                                                     "object_store_endpoints": [s3_server, recorder[0]]})
    runtime = Runtime.from_settings(settings)
    with TestClient(create_app(runtime), raise_server_exceptions=False) as client:
        client.runtime, client.tmp, client.allowed = runtime, tmp, allowed
        yield client
    runtime.close()


def _create(client, name, user_defined_param=None):
    schema = seed_schema(f"{name}_index")
    if user_defined_param is not None:
        schema["fields"][1]["user_defined_param"] = {"content_type": "oss", **user_defined_param}
    return client.post(TABLES, headers=basic(ADMIN), json={"name": name, "schema": schema})


def _pipeline(client, name, definition):
    folder = client.runtime.settings.state_dir / "pipelines"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(definition))


def _wait(client, task_id):
    for _ in range(600):
        task = client.get(f"{INSTANCE}/tasks/{task_id}", headers=basic(ADMIN)).json()["result"]
        if task["state"] in ("succeeded", "failed"):
            return task
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} did not finish")


def _reindex(client, table, body):
    return client.post(f"{TABLES}/{table}/reindex", headers=basic(ADMIN), json=body)


def _everything_readers_see(client) -> str:
    tasks = client.get(f"{INSTANCE}/tasks", headers=basic(READER)).text
    return tasks + client.get("/ui/api/tables", headers=basic(READER)).text


def test_reindex_cannot_read_files_outside_the_allowed_folders(service, tmp_path):
    """Finding 1: a pipeline could read any file on the host; its lines came back in task errors."""
    assert _create(service, "confined").status_code == 200
    secret = tmp_path / "secret.csv"
    secret.write_text(f"id,cate_id\n{MARKER},1\n")
    inline = {"pipeline": {"source": {"table": {"path": str(secret)}, "image": {"kind": "base64"}}}}
    r = _reindex(service, "confined", inline)
    assert r.status_code == 400 and "name of a pipeline stored on the server" in r.json()["message"]
    _pipeline(service, "confined", {"source": {"table": {"path": str(secret)}, "image": {"kind": "base64"}}})
    r = _reindex(service, "confined", {})
    assert r.status_code == 403 and "outside the folders" in r.json()["message"]
    for escape in ("tables/../../*/secret.csv", f"{tmp_path}/*.csv"):
        _pipeline(service, "sneaky", {"source": {"table": {"path": escape}, "image": {"kind": "base64"}}})
        assert _reindex(service, "confined", {"pipeline": "sneaky"}).status_code in (403, 404)
    _pipeline(service, "sql", {"source": {"table": {"sql": {"url": f"sqlite:///{tmp_path}/x.db", "query": "SELECT 1"}},
                                          "image": {"kind": "base64"}}})
    assert _reindex(service, "confined", {"pipeline": "sql"}).status_code == 403
    assert _reindex(service, "confined", {"pipeline": "../confined"}).status_code == 404
    assert MARKER not in _everything_readers_see(service)


def test_reindex_writes_only_the_services_own_files(service, tmp_path):
    assert _create(service, "writes").status_code == 200
    rows = service.allowed / "writes.jsonl"  # an operator-allowed source root
    rows.write_text(json.dumps({"id": 1, "cate_id": 1, "vector": [0.1] * 512}) + "\n")
    for key, value in (("report", str(tmp_path / "report.jsonl")), ("checkpoint_dir", str(tmp_path / "ck")),
                       ("engine", {"kind": "embedded", "data_dir": str(tmp_path / "engine")})):
        _pipeline(service, "writes", {key: value, "source": {"table": {"path": str(rows)}, "image": {"kind": "vector"}}})
        r = _reindex(service, "writes", {})
        assert r.status_code == 400 and key in r.json()["message"], r.text
    assert list(tmp_path.iterdir()) == []
    _pipeline(service, "writes", {"source": {"table": {"path": str(rows)}, "image": {"kind": "vector"}}})
    r = _reindex(service, "writes", {"pipeline": "writes"})
    assert r.status_code == 200, r.text
    task = _wait(service, r.json()["result"]["taskId"])
    assert task["state"] == "succeeded" and task["indexed"] == 1, task
    assert (service.runtime.settings.state_dir / "ingest" / "writes.report.jsonl").is_file()


def test_reindex_file_bucket_outside_the_allowed_folders_is_refused(service, tmp_path):
    assert _create(service, "bucketed").status_code == 200
    rows = service.allowed / "bucketed.jsonl"
    rows.write_text(json.dumps({"id": 1, "cate_id": 1, "vector_source_image": "x.png"}) + "\n")
    (tmp_path / "x.png").write_bytes(png_bytes((1, 2, 3)))
    _pipeline(service, "bucketed", {"source": {"table": {"path": str(rows)}, "image": {
        "kind": "object_store", "object_store": {"url": tmp_path.as_uri()}}}})
    r = _reindex(service, "bucketed", {})
    assert r.status_code == 403 and "access.bucket_roots" in r.json()["message"]


def _oss_table(service, s3_server, name):  # noqa: F811
    import boto3

    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1", aws_access_key_id=S3_KEY,
                          aws_secret_access_key=S3_SECRET)
    client.create_bucket(Bucket=name)
    client.put_object(Bucket=name, Key="img/1.png", Body=png_bytes((200, 10, 10)))
    r = _create(service, name, {"oss_endpoint": s3_server, "oss_bucket": name, "oss_access_key": S3_KEY,
                                "oss_secret": S3_SECRET})
    assert r.status_code == 200, r.text
    rows = service.allowed / f"{name}.jsonl"
    rows.write_text(json.dumps({"id": 1, "cate_id": 1, "vector_source_image": "img/1.png"}) + "\n")
    return rows


def test_stored_keys_never_go_to_another_endpoint(service, s3_server, recorder, monkeypatch):  # noqa: F811
    """Finding 2: a pipeline naming another endpoint got the table's stored keys (key id leak, SSRF)."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    other, seen = recorder
    rows = _oss_table(service, s3_server, "keyed")
    elsewhere = {"kind": "object_store", "object_store": {"endpoint": other, "bucket": "keyed",
                                                          "addressing_style": "path", "max_attempts": 1}}
    definition = {"source": {"table": {"path": str(rows)}, "image": elsewhere}}
    inline = _reindex(service, "keyed", {"pipeline": definition})
    assert inline.status_code == 400
    _pipeline(service, "keyed_elsewhere", definition)
    r = _reindex(service, "keyed", {"pipeline": "keyed_elsewhere"})
    assert r.status_code == 403 and "stored credentials" in r.json()["message"]
    assert S3_KEY not in r.text and S3_SECRET not in r.text
    time.sleep(0.2)
    assert not [h for h in seen if S3_KEY in h]

    # The same endpoint and bucket: the stored keys are used.
    _pipeline(service, "keyed", {"source": {"table": {"path": str(rows)}, "image": {"kind": "auto"}}})
    r = _reindex(service, "keyed", {})
    assert r.status_code == 200, r.text
    assert _wait(service, r.json()["result"]["taskId"])["indexed"] == 1


def test_a_pipeline_bringing_its_own_keys_may_name_an_allowed_endpoint(service, s3_server, monkeypatch):  # noqa: F811
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    rows = _oss_table(service, s3_server, "ownkeys")
    _pipeline(service, "ownkeys", {"source": {"table": {"path": str(rows)}, "image": {
        "kind": "object_store", "object_store": {"endpoint": s3_server.replace("127.0.0.1", "localhost"),
                                                 "bucket": "ownkeys", "addressing_style": "path",
                                                 "access_key_id": S3_KEY, "access_key_secret": S3_SECRET}}}})
    r = _reindex(service, "ownkeys", {})
    assert r.status_code == 403 and "allow-list" in r.json()["message"]  # localhost is not listed
    _pipeline(service, "ownkeys", {"source": {"table": {"path": str(rows)}, "image": {
        "kind": "object_store", "object_store": {"endpoint": s3_server, "bucket": "ownkeys", "addressing_style": "path",
                                                 "access_key_id": S3_KEY, "access_key_secret": S3_SECRET}}}})
    r = _reindex(service, "ownkeys", {})
    assert r.status_code == 200, r.text
    assert _wait(service, r.json()["result"]["taskId"])["indexed"] == 1


def test_schemas_may_name_only_allowed_endpoints_and_folders(service, tmp_path):
    r = _create(service, "ssrf", {"oss_endpoint": "http://169.254.169.254", "oss_bucket": "b"})
    assert r.status_code == 403 and "allow-list" in r.json()["message"]
    r = _create(service, "outside", {"oss_endpoint": tmp_path.as_uri(), "oss_bucket": "b"})
    assert r.status_code == 403 and "access.bucket_roots" in r.json()["message"]
    assert {"ssrf", "outside"}.isdisjoint(service.runtime.engine.list_tables())


def test_push_to_a_file_bucket_table(service):
    """Finding 5: every push to a table whose bucket is a local folder answered 500."""
    bucket = service.runtime.settings.state_dir / "bucket"
    (bucket / "images").mkdir(parents=True)
    (bucket / "images" / "1.png").write_bytes(png_bytes((0, 200, 0)))
    assert _create(service, "local", {"oss_endpoint": bucket.as_uri(), "oss_bucket": "demo"}).status_code == 200
    r = service.post("/update/local/actions/bulk", headers=basic(ADMIN), json=[
        {"cmd": "add", "fields": {"id": 1, "cate_id": 1, "vector_source_image": "images/1.png"}},
        {"cmd": "add", "fields": {"id": 2, "cate_id": 1, "vector_source_image": "../../secrets.json"}}])
    assert r.status_code == 400, r.text
    assert [(e["pk"], e["reason"]) for e in r.json()["errors"]] == [(2, "access_denied")]
    assert [h.pk for h in service.runtime.engine.get("local", [1, 2])] == [1]
    assert service.get("/ui/thumbnail/local/1", headers=basic(READER)).status_code == 200


@pytest.mark.parametrize("endpoint, allowed", [
    ("https://oss-cn-hangzhou.aliyuncs.com", True),
    ("oss-cn-hangzhou.aliyuncs.com", True),  # boto's default scheme is https
    ("http://oss-cn-hangzhou.aliyuncs.com", False),  # another scheme
    ("https://oss-cn-hangzhou.aliyuncs.com:8443", False),  # another port
    ("https://oss-cn-beijing.aliyuncs.com", True),  # *.aliyuncs.com
    ("https://aliyuncs.com.evil.example", False),
    ("http://127.0.0.1:9000", True),
    ("https://127.0.0.1:9000", True),  # listed without a scheme: any scheme
    ("http://127.0.0.1:9001", False),
    ("http://169.254.169.254", False),
    ("", True),  # the provider default
])
def test_endpoint_allow_list(endpoint, allowed):
    from adapter.errors import AccessError
    from adapter.sources.access import AccessRules

    rules = AccessRules(endpoints=["127.0.0.1:9000", "https://*.aliyuncs.com"])
    if allowed:
        rules.check_endpoint(endpoint, "here")
    else:
        with pytest.raises(AccessError, match="allow-list"):
            rules.check_endpoint(endpoint, "here")
