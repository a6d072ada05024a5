"""FastAPI's own per-request cost, in process: routes flat on the app vs included routers.

    PYTHONPATH=. python bench/routing.py

Builds the service app twice on one runtime (embedded engine, tiny CLIP): as shipped, with
every module's routes registered on the app (``common.add_routes``), and with FastAPI's
``include_router`` instead. Drives both ASGI apps directly (no socket, uvloop) with a few
cheap requests and prints the median of 5 rounds per app and their ratio. Figures only.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

USER = ("bench", "bench-pass")
CASES = [
    ("GET", "/health", b""),
    ("GET", "/network/active", b""),
    ("POST", "/vector-service/stats", json.dumps({"tableName": "nope"}).encode()),
    ("POST", "/query", json.dumps({"assemblyQuery": "config=hit:1&&query=id:1&&cluster=nope"}).encode()),
]


def build_apps():
    import adapter.server.app as app_module
    import adapter.server.routes_ui as ui_module
    from adapter.config import Settings
    from adapter.embed.testing import make_tiny_clip, tiny_clip_registry_config
    from adapter.runtime import Runtime

    tmp = Path(tempfile.mkdtemp(prefix="ha3-bench-routing-"))
    models = tmp / "models.yaml"
    models.write_text(yaml.safe_dump(tiny_clip_registry_config(make_tiny_clip(tmp / "clip", dim=512))))
    cfg = tmp / "config.yaml"
    cfg.write_text(yaml.safe_dump({"engine": {"kind": "embedded", "data_dir": str(tmp / "data")},
                                   "models": str(models), "users": [{"username": USER[0], "password": USER[1]}]}))
    runtime = Runtime.from_settings(Settings.load(cfg, env={}))
    flat = app_module.create_app(runtime)
    shipped = app_module.add_routes
    app_module.add_routes = ui_module.add_routes = lambda app, router: app.include_router(router)
    try:
        nested = app_module.create_app(runtime)
    finally:
        app_module.add_routes = ui_module.add_routes = shipped
    return flat, nested


async def call(app, method: str, path: str, body: bytes, auth: bytes) -> None:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"bench"), (b"authorization", auth), (b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 1), "server": ("bench", 80)}
    sent = False

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # no disconnect while the request runs

    async def send(message):
        pass

    await app(scope, receive, send)


async def per_request_us(app, case, auth: bytes, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        await call(app, *case, auth)
    return (time.perf_counter() - t0) / n * 1e6


async def run(flat, nested) -> None:
    auth = b"Basic " + base64.b64encode(f"{USER[0]}:{USER[1]}".encode())
    async with flat.router.lifespan_context(flat), nested.router.lifespan_context(nested):
        print(f"{'request':32} {'included us':>11} {'flat us':>8} {'flat/included':>13}")
        for case in CASES:
            await per_request_us(flat, case, auth, 200)  # warm-up (first auth check runs scrypt)
            await per_request_us(nested, case, auth, 200)
            f, n = [], []
            for _ in range(5):  # interleaved rounds: machine noise hits both alike
                f.append(await per_request_us(flat, case, auth, 400))
                n.append(await per_request_us(nested, case, auth, 400))
            f_med, n_med = sorted(f)[2], sorted(n)[2]
            print(f"{case[0] + ' ' + case[1]:32} {n_med:>11.0f} {f_med:>8.0f} {f_med / n_med:>13.2f}")


def main() -> None:
    flat, nested = build_apps()
    try:
        from uvloop import run as run_loop  # the loop serve uses where installed
    except ImportError:
        run_loop = asyncio.run
    run_loop(run(flat, nested))


if __name__ == "__main__":
    main()
