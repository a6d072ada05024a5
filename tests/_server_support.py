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
