"""The HTTP surface (issue 25, findings 12, 13, 10, 9): credentials only under Basic, the
SDK's long GET URLs, a throttle on failed logins, and storage failures."""

from __future__ import annotations

import base64
import io
import json
import socket
from urllib.parse import quote, urlsplit

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from _server_support import ADMIN, basic, live_server, make_settings, push_body, seed_schema, service_client

TABLES = "/openapi/ha3/instances/ha3-adapter/tables"


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from adapter.embed.testing import make_tiny_clip

    return make_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny", dim=512)


@pytest.fixture(scope="module")
def runtime(tmp_path_factory, tiny_clip):
    from adapter.ingest.push import apply_push
    from adapter.runtime import Runtime

    runtime = Runtime.from_settings(make_settings(tmp_path_factory.mktemp("http"), tiny_clip))
    runtime.create_table("images", seed_schema())
    assert apply_push(runtime, "images", push_body(6)).failed == 0
    yield runtime
    runtime.close()


def test_credentials_count_only_under_the_basic_scheme(runtime):
    """Finding 12: a verified Basic token was accepted as 'Bearer <token>' or 'xyz <token>'."""
    from adapter.server.app import create_app

    token = basic(ADMIN)["Authorization"].split(" ", 1)[1]
    with TestClient(create_app(runtime)) as client:
        assert client.get("/network/active", headers={"Authorization": f"Basic {token}"}).status_code == 200
        for scheme in ("Bearer", "xyz", "Basicx"):
            r = client.get("/network/active", headers={"Authorization": f"{scheme} {token}"})
            assert r.status_code == 401, scheme
        assert client.get("/network/active", headers={"Authorization": f"basic {token}"}).status_code == 200


def _noise_png(side: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(side).integers(0, 255, (side, side, 3), dtype=np.uint8)).save(out, "PNG")
    return out.getvalue()


def _get(base: str, target: str) -> tuple[int, dict]:
    auth = basic(ADMIN)["Authorization"]
    with socket.create_connection(("127.0.0.1", urlsplit(base).port), timeout=60) as conn:
        conn.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n".encode())
        data = b"".join(iter(lambda: conn.recv(1 << 16), b""))
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def _sdk_image_search(image: bytes) -> str:
    """The URL the HA SDK's default (GET) search sends for an image query."""
    payload = base64.b64encode(image).decode()
    query = f"config=hit:3,format:json&&query=image_index:'{payload}&modal=image&n=3'&&cluster=images"
    return "/query?query=" + quote(query, safe="")


def test_the_sdks_get_image_search_takes_urls_up_to_4_mib(runtime):
    """Finding 13: any URL over 65,535 bytes got a plain-text 400 from the HTTP parser."""
    from _server_support import png_bytes

    small = png_bytes((255, 0, 0), size=40) + b"\0" * 60_000  # trailing bytes: PNG readers ignore them
    with live_server(runtime) as base:
        target = _sdk_image_search(small)
        assert 80_000 < len(target) < 100_000
        status, body = _get(base, target)
        assert status == 200, body
        assert body["result"]["items"][0]["fields"]["id"] == "1"  # the red square
        big = _sdk_image_search(_noise_png(960))  # a 2.8 MB photo: about 4 MB of URL
        assert 3.5 * 2**20 < len(big) < 4 * 2**20
        status, body = _get(base, big)
        assert status == 200, body
        status, body = _get(base, big + "A" * (2**20))
        assert status == 414 and "request URL over" in body["errors"][0]["message"]


def test_failed_logins_from_one_address_are_throttled(runtime):
    """Finding 10: a wrong-password flood had no limit (each attempt a full scrypt check)."""
    from adapter.server.app import create_app

    app = create_app(runtime)
    app.state.login_throttle.hold_s = 0.01
    wrong = basic((ADMIN[0], "not-the-password"))
    with TestClient(app, client=("10.0.0.1", 5000)) as flood, TestClient(app, client=("10.0.0.2", 5000)) as other:
        assert flood.get("/network/active", headers=basic(ADMIN)).status_code == 200  # verified before the flood
        statuses = [flood.get("/network/active", headers=wrong).status_code for _ in range(12)]
        assert statuses == [401] * 10 + [429] * 2
        r = flood.post("/vector-service/query", headers=wrong, json={"tableName": "images"})
        assert r.status_code == 429 and r.json()["errorCode"] == 4029
        assert 0 < int(r.headers["retry-after"]) <= 60
        assert flood.get("/network/active", headers=basic(ADMIN)).status_code == 200  # cached: still served
        assert other.get("/network/active", headers=wrong).status_code == 401  # another address: checked
        assert other.get("/network/active", headers=basic(("reader", "read-only-pass"))).status_code == 200


def test_throttle_window_slides():
    from adapter.server.throttle import LoginThrottle

    now = [0.0]
    throttle = LoginThrottle(3, 10.0, clock=lambda: now[0])
    for t in (0.0, 1.0, 2.0):
        now[0] = t
        assert throttle.retry_after("a") is None
        throttle.failed("a")
    assert throttle.retry_after("a") == pytest.approx(8.0)
    assert throttle.retry_after("b") is None
    now[0] = 10.0  # the first failure left the window: one more try
    assert throttle.retry_after("a") is None
    throttle.failed("a")
    assert throttle.retry_after("a") == pytest.approx(1.0)
    assert LoginThrottle(0, 10.0).retry_after("a") is None  # 0: off


@pytest.fixture
def fresh(tmp_path):
    """A service of its own (these tests break its storage)."""
    with service_client(tmp_path) as client:
        yield client


def _vectors(*pks):
    return [{"cmd": "add", "fields": {"id": pk, "cate_id": 1, "vector": [0.01 * pk] * 512}} for pk in pks]


def test_a_full_disk_is_a_507_and_health_says_degraded(fresh):
    """Finding 9: disk full or a read-only data dir gave bare 500s, and /health still said ok."""
    push = lambda body: fresh.post("/update/images/actions/bulk", headers=basic(ADMIN), json=body)  # noqa: E731
    assert push(_vectors(1, 2, 3)).status_code == 200
    db = fresh.runtime.engine._generation("images").db  # SQLite's own size cap: a real SQLITE_FULL
    (pages,) = db.execute("PRAGMA page_count").fetchone()
    db.execute(f"PRAGMA max_page_count = {pages}")
    r = push(_vectors(*range(10, 60)))
    assert r.status_code == 507, r.text
    assert r.json()["status"] == "FAIL" and "disk is full" in r.json()["errors"][0]["message"]
    health = fresh.get("/health").json()
    assert health["status"] == "degraded" and "disk is full" in health["storage"]
    assert fresh.runtime.engine.count("images") == 3  # nothing half-written
    db.execute("PRAGMA max_page_count = 1073741823")  # space again
    assert push(_vectors(4)).status_code == 200
    fresh.app.state.storage_health.recheck_s = 0.0  # the next /health probes the disk again at once
    assert fresh.get("/health").json()["status"] == "ok"


def test_a_read_only_data_dir_is_a_503_in_the_clients_format(fresh):
    db = fresh.runtime.engine._generation("images").db
    db.execute("PRAGMA query_only = ON")  # SQLite refuses every write: SQLITE_READONLY
    r = fresh.post("/update/images/actions/bulk", headers=basic(ADMIN), json=[{"cmd": "delete", "fields": {"id": 1}}])
    assert r.status_code == 503 and "cannot be written" in r.json()["errors"][0]["message"], r.text
    assert fresh.get("/health").json()["status"] == "degraded"
    catalog = fresh.runtime.engine._catalog
    catalog.execute("PRAGMA query_only = ON")
    r = fresh.post(TABLES, headers=basic(ADMIN), json={"name": "more", "schema": seed_schema("more_index")})
    assert r.status_code == 503 and r.json()["httpCode"] == 503, r.text
    catalog.execute("PRAGMA query_only = OFF")
    db.execute("PRAGMA query_only = OFF")
    assert "more" not in fresh.runtime.engine.list_tables()


def test_health_probes_the_data_directories(tmp_path):
    from adapter.storage import StorageHealth

    assert StorageHealth([tmp_path], recheck_s=0).problem() is None
    assert list(tmp_path.iterdir()) == []  # the probe file is gone
    assert StorageHealth([tmp_path / "gone"], recheck_s=0).problem() is not None
