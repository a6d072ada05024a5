"""Settings loading, password hashing, authenticator and the access log's hygiene."""

from __future__ import annotations

import base64
import json
import logging

import pytest

from adapter.config import Settings, hash_password, verify_password
from adapter.errors import AuthError, ConfigError


def test_password_hash_round_trip_and_salt():
    h1, h2 = hash_password("pw"), hash_password("pw")
    assert h1 != h2 and h1.startswith("scrypt$")
    assert verify_password("pw", h1) and not verify_password("pW", h1)
    assert not verify_password("pw", "scrypt$garbage") and not verify_password("pw", "")


def test_settings_yaml_env_and_overrides(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("engine: {kind: embedded, data_dir: /nowhere}\n"
                   "users:\n  - {username: ro, password: pw, read_only: true}\n"
                   "limits: {max_body_bytes: 1000}\n")
    s = Settings.load(cfg, env={"HA3_ADAPTER_USERNAME": "admin", "HA3_ADAPTER_PASSWORD": "secret"},
                      overrides={"data_dir": tmp_path / "d", "port": 9999})
    assert [u.username for u in s.users] == ["admin", "ro"]
    assert verify_password("secret", s.users[0].password_hash) and s.users[1].read_only
    assert "secret" not in repr(s.users) and "scrypt" not in repr(s.users)
    assert s.engine.data_dir == tmp_path / "d" and s.port == 9999 and s.limits.max_body_bytes == 1000
    assert s.state_dir == tmp_path / "d"


@pytest.mark.parametrize("text,where", [
    ("engine: {kind: elastic}\n", "$.engine"),
    ("users: [{username: x, password_hash: md5$abc}]\n", "$.users"),
    ("limits: {max_body_bytes: -1}\n", "$.limits"),
    ("[1, 2]\n", "c.yaml"),
    ("a: [\n", "c.yaml"),
])
def test_bad_config_is_a_config_error_with_location(tmp_path, text, where):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as info:
        Settings.load(cfg, env={})
    assert where in str(info.value)


def test_half_set_env_credentials_rejected():
    with pytest.raises(ConfigError):
        Settings.load(None, env={"HA3_ADAPTER_USERNAME": "admin"})


def test_authenticator_caches_only_successes():
    from adapter.config import UserConfig
    from adapter.server.auth import Authenticator

    auth = Authenticator([UserConfig(username="u", password="p")])
    good = "Basic " + base64.b64encode(b"u:p").decode()
    assert auth.authenticate(good).username == "u"
    assert auth.authenticate(good).username == "u"  # served from the HMAC cache
    for header in (None, "Bearer x", "Basic " + base64.b64encode(b"u:x").decode(),
                   "Basic " + base64.b64encode(b"nobody:p").decode(), "Basic " + base64.b64encode(b"up").decode()):
        with pytest.raises(AuthError):
            auth.authenticate(header)
    assert len(auth._cache) == 1


def test_access_log_has_no_credentials_query_or_bodies(tmp_path, caplog):
    from fastapi.testclient import TestClient

    from adapter.runtime import Runtime
    from adapter.server.app import create_app

    s = Settings.load(None, env={"HA3_ADAPTER_USERNAME": "admin", "HA3_ADAPTER_PASSWORD": "hunter22"},
                      overrides={"data_dir": tmp_path / "d"})
    runtime = Runtime.from_settings(s)
    token = base64.b64encode(b"admin:hunter22").decode()
    with caplog.at_level(logging.INFO, logger="adapter.access"), TestClient(create_app(runtime)) as c:
        c.get("/query", params={"query": "config=hit:1&&query=v:'SECRETIMAGEDATA&modal=image'"},
              headers={"Authorization": f"Basic {token}"})
        c.post("/vector-service/inference-query", headers={"Authorization": f"Basic {token}"},
               json={"tableName": "t", "content": "SECRETIMAGEDATA", "modal": "image"})
    runtime.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "adapter.access"]
    assert len(lines) == 2
    entries = [json.loads(line) for line in lines]
    assert entries[0]["path"] == "/query" and entries[0]["user"] == "admin" and entries[1]["status"] >= 400
    for line in lines:
        assert token not in line and "hunter22" not in line and "SECRETIMAGEDATA" not in line


def test_cli_serve_with_env_credentials(tmp_path):
    """`ha3-adapter serve --data-dir --port` with the first user from the environment."""
    import os
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "HA3_ADAPTER_USERNAME": "ops", "HA3_ADAPTER_PASSWORD": "pa55"}
    proc = subprocess.Popen([sys.executable, "-m", "adapter.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
                             "--data-dir", str(tmp_path / "data"), "--log-level", "warning"], env=env, cwd=root)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert httpx.get(f"{base}/network/active").status_code == 401
        assert httpx.get(f"{base}/network/active", auth=("ops", "pa55")).status_code == 200
        assert httpx.get(f"{base}/network/active", auth=("ops", "nope")).status_code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=15)


@pytest.mark.parametrize("given,expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_cli_makes_openmp_threads_sleep_unless_told_otherwise(given, expected):
    # Busy-waiting OpenMP threads (torch's and faiss's libgomp) starve the event loop; libgomp
    # reads the policy once, when it loads, so the CLI must set it before torch is imported.
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given:
        env["OMP_WAIT_POLICY"] = given
    code = "import os, adapter.cli; print(os.environ['OMP_WAIT_POLICY'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected


def _runtime_with_limits(tmp_path, **limits):
    """A runtime over ``tmp_path`` with one user a:b and ``limits`` set on the defaults."""
    from adapter.runtime import Runtime

    s = Settings.load(None, env={"HA3_ADAPTER_USERNAME": "a", "HA3_ADAPTER_PASSWORD": "b"},
                      overrides={"data_dir": tmp_path / "d"})
    for name, value in limits.items():
        setattr(s.limits, name, value)
    return Runtime.from_settings(s)


AUTH = {"Authorization": "Basic " + base64.b64encode(b"a:b").decode()}


def _raw_exchange(base: str, request: bytes) -> bytes:
    """Send raw HTTP bytes to a live server and read until it closes the connection."""
    import socket
    from urllib.parse import urlsplit

    with socket.create_connection(("127.0.0.1", urlsplit(base).port), timeout=10) as conn:
        conn.sendall(request)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_default_limits_reject_a_30_mb_base64_image_with_413(tmp_path):
    from fastapi.testclient import TestClient

    from adapter.server.app import create_app

    runtime = _runtime_with_limits(tmp_path, max_push_documents=3)
    with TestClient(create_app(runtime)) as c:
        body = json.dumps({"tableName": "t", "content": "A" * (30 * 1024 * 1024), "modal": "image"})
        r = c.post("/vector-service/inference-query", content=body, headers={**AUTH, "content-type": "application/json"})
        assert r.status_code == 413 and "limit is 20971520 bytes" in r.json()["errorMsg"]
        r = c.post("/update/t/actions/bulk", json=[{"cmd": "delete", "fields": {"id": i}} for i in range(4)], headers=AUTH)
        assert r.status_code == 413 and "limit is 3 per request" in r.json()["errors"][0]["message"]
    runtime.close()


def test_request_head_over_the_caps_gets_414_or_431_in_the_clients_format(tmp_path):
    # httptools has no head-size limit of its own; ours: the URL at max_query_string_bytes
    # + 8 KiB of path (here 1000 → 9,192 bytes), the header block at 64 KiB.
    from _server_support import live_server

    runtime = _runtime_with_limits(tmp_path, max_query_string_bytes=1000)

    def head(path: str, url_len: int, header_len: int = 0) -> bytes:
        return (f"GET {path}?pad={'x' * url_len} HTTP/1.1\r\nHost: x\r\n"
                f"X-Pad: {'y' * header_len}\r\nConnection: close\r\n\r\n").encode()

    with live_server(runtime) as base:
        assert _raw_exchange(base, head("/health", 9_000)).startswith(b"HTTP/1.1 200")  # under the cap
        for request, status in ((head("/query", 10_000), b"414"), (head("/query", 10, header_len=70_000), b"431")):
            answer = _raw_exchange(base, request)  # the server closes the connection either way
            assert answer.startswith(b"HTTP/1.1 " + status), answer[:100]
            assert json.loads(answer.partition(b"\r\n\r\n")[2])["errors"][0]["message"]  # HA format
        answer = _raw_exchange(base, head("/vector-service/query", 10_000))
        assert json.loads(answer.partition(b"\r\n\r\n")[2])["errorCode"] == 4014  # vector-service format
    runtime.close()


def test_chunked_bodies_over_a_live_socket_are_read_and_capped(tmp_path):
    # No Content-Length: the body limit is counted while the chunks stream in (limits.py),
    # through the real HTTP parser; a body under the limit is answered as usual.
    from _server_support import live_server

    runtime = _runtime_with_limits(tmp_path, max_body_bytes=10_000)

    def post_chunked(base: str, body: bytes) -> tuple[bytes, dict]:
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 4000]), body[i:i + 4000]) for i in range(0, len(body), 4000))
        head = (f"POST /vector-service/query HTTP/1.1\r\nHost: x\r\nAuthorization: {AUTH['Authorization']}\r\n"
                "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode()
        status, _, rest = _raw_exchange(base, head + chunks + b"0\r\n\r\n").partition(b"\r\n")
        return status, json.loads(rest.partition(b"\r\n\r\n")[2] or b"{}")

    with live_server(runtime) as base:
        status, body = post_chunked(base, json.dumps({"tableName": "nosuch", "vector": [0.5] * 512}).encode())
        assert status.startswith(b"HTTP/1.1 404") and "nosuch" in body["errorMsg"]  # read whole, then answered
        status, body = post_chunked(base, json.dumps({"tableName": "t", "content": "A" * 20_000}).encode())
        assert status.startswith(b"HTTP/1.1 413") and "limit is 10000 bytes" in body["errorMsg"]
    runtime.close()
