"""Shared setup for the HTTP service tests: a tiny CLIP, settings with two users, a runtime.

Imported by tests/test_server_*.py and tests/test_sdk.py (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import yaml

ROOT = Path(__file__).resolve().parents[1]
MAPPINGS = ROOT / "mappings"
ADMIN = ("admin", "s3cret-pass")
READER = ("reader", "read-only-pass")


def basic(user_pass: tuple[str, str]) -> dict[str, str]:
    token = base64.b64encode(f"{user_pass[0]}:{user_pass[1]}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def live_server(runtime, **overrides) -> Iterator[str]:
    """Serve ``create_app(runtime)`` on a loopback port in a thread, with the uvicorn config the
    CLI uses (``overrides`` on top); yields the base URL."""
    import uvicorn

    from adapter.server.app import create_app, uvicorn_config

    port = free_port()
    options = {"host": "127.0.0.1", "port": port, "log_level": "warning", **overrides}
    server = uvicorn.Server(uvicorn_config(create_app(runtime), runtime.settings, **options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def make_settings(tmp: Path, tiny_clip_dir: Path, **extra):
    from adapter.config import Settings
    from adapter.embed.testing import tiny_clip_registry_config

    models = tmp / "models.yaml"
    models.write_text(yaml.safe_dump(tiny_clip_registry_config(tiny_clip_dir)))
    cfg = {
        "engine": {"kind": "embedded", "data_dir": str(tmp / "data")},
        "models": str(models),
        "users": [{"username": ADMIN[0], "password": ADMIN[1]},
                  {"username": READER[0], "password": READER[1], "read_only": True}],
        **extra,
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return Settings.load(path, env={})


@contextmanager
def service_client(tmp: Path, *, table: str | None = "images", docs: int = 0, **settings) -> Iterator:
    """A TestClient (server errors answered, not raised) over a fresh runtime in ``tmp``: tiny
    CLIP, the two users, ``settings`` on top; with ``table`` made from the seed schema and
    ``docs`` documents pushed. ``client.runtime`` is the runtime."""
    from fastapi.testclient import TestClient

    from adapter.embed.testing import make_tiny_clip
    from adapter.runtime import Runtime
    from adapter.server.app import create_app

    runtime = Runtime.from_settings(make_settings(tmp, make_tiny_clip(tmp / "clip", dim=512), **settings))
    try:
        with TestClient(create_app(runtime), raise_server_exceptions=False) as client:
            client.runtime = runtime
            if table is not None:
                r = client.post("/openapi/ha3/instances/ha3-adapter/tables", headers=basic(ADMIN),
                                json={"name": table, "schema": seed_schema()})
                assert r.status_code == 200, r.text
            if docs:
                r = client.post(f"/update/{table}/actions/bulk", headers=basic(ADMIN), json=push_body(docs))
                assert r.status_code == 200, r.text
            yield client
    finally:
        runtime.close()


def seed_schema(index_name: str = "image_index") -> dict:
    """The seed's Base64-image schema with its vector index named as in the seed's sample query."""
    schema = json.loads((MAPPINGS / "image_search_base64.json").read_text())
    for index in schema["indexs"]:
        if index["index_type"] == "CUSTOMIZED":
            index["index_name"] = index_name
            params = index["parameters"]
            params["vector_index_type"] = "Linear"  # tiny tables: exact search, deterministic
            params.pop("build_index_params", None)
            params.pop("search_index_params", None)
    return schema


def png_bytes(color: tuple[int, int, int], size: int = 40) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


def png_b64(color: tuple[int, int, int], size: int = 40) -> str:
    return base64.b64encode(png_bytes(color, size)).decode()


COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255)]


def push_body(n: int = 6) -> list[dict]:
    return [{"cmd": "add", "fields": {"id": i + 1, "cate_id": (i % 2) + 1,
                                      "vector_source_image": png_b64(COLORS[i % len(COLORS)])}}
            for i in range(n)]
