"""Query latency over HTTP: text and image queries at 1, 4 and 16 concurrent clients.

    PYTHONPATH=. python bench/query.py --docs 10000 --requests 200

Sets up a table (the seed's Base64 schema, HNSW) in a temp data dir, fills it with
``--docs`` random unit vectors written straight to the embedded engine (the benchmark is
about serving, not ingest), starts ``ha3-adapter serve`` in a subprocess with a tiny CLIP
(default) or a registry config you pass (``--models FILE``), then drives it with one keep-alive
connection per client from a single asyncio thread: raw HTTP/1.1 requests built up front,
responses parsed by httptools. The load generator shares the machine's cores with the server,
and the lightest one leaves the most CPU to what is measured (on 2 cores: 16-client QPS 10-30%
higher than with http.client threads). ``--client threads`` drives the same load with
http.client in threads, as blocking SDK callers do. Each response carries the server's own timings
(``X-Embed-Time-Ms``, ``X-Engine-Time-Ms``, ``X-Receive-Time-Ms``, ``X-Service-Time-Ms``), so
per request:

    service overhead = X-Service-Time-Ms - embed - engine - receive   (the server's own work)
    client overhead  = client latency    - embed - engine            (adds HTTP + client stack)

receive (X-Receive-Time-Ms) is the wait for the request body to come off the socket: the
client's and the network's pace, not the service's work (the threads client sends headers and
body in two writes, so there it is 0.03–0.35 ms at one client, by VM; the asyncio client sends
one). It is printed in its own column.

``--server-cpus`` / ``--client-cpus`` (Linux) pin the server and the load generator to separate
CPUs: on two shared cores the 4- and 16-client overheads are mostly the wait for a core.

Prints p50/p99 latency, QPS and both overheads per (query kind, concurrency). Figures
only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import io
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):  # not listening yet
        return False
    finally:
        conn.close()


@contextlib.contextmanager
def serving(cfg: Path, *, log_level: str = "warning", preexec_fn=None):
    """``ha3-adapter serve --config cfg`` in a subprocess on a free port; yields the port once
    /health answers, and stops the server on the way out."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "adapter.cli", "serve", "--config", str(cfg), "--port", str(port),
                             "--log-level", log_level], env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=str(ROOT),
                            preexec_fn=preexec_fn)
    try:
        deadline = time.monotonic() + 120
        while not healthy(port):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("server did not start")
            time.sleep(0.2)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def cpu_set(spec: str | None) -> set[int] | None:
    """``"0-3,6"`` -> {0, 1, 2, 3, 6}; None stays None (no pinning)."""
    if not spec:
        return None
    cpus: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.strip().partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def cpu_model() -> str:
    """The processor's name: figures from different VMs of one size differ several-fold."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def build_table(tmp: Path, docs: int, index_type: str) -> None:
    from adapter.plan.records import Document
    from adapter.engines.embedded import EmbeddedEngine

    schema = json.loads((ROOT / "mappings" / "image_search_base64.json").read_text())
    for index in schema["indexs"]:
        if index["index_type"] == "CUSTOMIZED":
            index["index_name"] = "image_index"
            params = index["parameters"]
            params["vector_index_type"] = index_type
            params.pop("build_index_params", None)
            params.pop("search_index_params", None)
    (tmp / "schema.json").write_text(json.dumps(schema))
    from adapter.schema.parse import parse_schema

    spec = parse_schema(schema, "bench")
    engine = EmbeddedEngine(tmp / "data")
    engine.create_table(spec)
    rng = np.random.default_rng(0)
    batch = 1000
    for start in range(0, docs, batch):
        vecs = rng.standard_normal((min(batch, docs - start), spec.dimension)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        engine.upsert("bench", [Document(pk=start + i + 1, fields={"cate_id": (start + i) % 30, "vector_source_image": ""},
                                         vector=v) for i, v in enumerate(vecs)])
    engine.close()


def image_b64(seed: int, size: int) -> str:
    from PIL import Image

    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return base64.b64encode(buf.getvalue()).decode()


TEXTS = ["a red dress", "a dog on the beach", "two people riding bicycles", "a black leather shoe"]


def make_request(kind: str, i: int, images: list[str]) -> tuple[str, str, bytes | None]:
    """Method, path and JSON body (None for GET) of request ``i`` of a kind, for either client."""
    method, path, payload = _request_parts(kind, i, images)
    return method, path, json.dumps(payload).encode() if payload is not None else None


def _request_parts(kind: str, i: int, images: list[str]) -> tuple[str, str, dict | None]:
    if kind == "text":
        return "POST", "/vector-service/inference-query", {"tableName": "bench", "content": TEXTS[i % len(TEXTS)],
                                                           "modal": "text", "topK": 10}
    if kind == "image":
        return "POST", "/vector-service/inference-query", {"tableName": "bench", "content": images[i % len(images)],
                                                           "modal": "image", "topK": 10}
    if kind == "ha-image":  # the SDK's default search: GET, the whole HA string (image included) in the URL
        ha = (f"config=hit:10,format:json&&query=image_index:'{images[i % len(images)]}&modal=image&n=10'"
              "&&cluster=bench")
        return "GET", "/query?" + urllib.parse.urlencode({"query": ha}), None
    text = base64.b64encode(TEXTS[i % len(TEXTS)].encode()).decode()
    return "POST", "/query", {"assemblyQuery": f"config=hit:10,format:json&&query=image_index:'{text}&modal=text&n=10'"
                                                "&&cluster=bench"}


def basic_auth(auth: tuple[str, str]) -> str:
    return "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()


def timing_row(latency_ms: float, header) -> tuple[float, float, float, float, float]:
    """(client latency, embed, engine, service, receive) from a response's timing headers;
    ``header(name)`` reads one."""
    return (latency_ms, float(header("x-embed-time-ms")), float(header("x-engine-time-ms")),
            float(header("x-service-time-ms")), float(header("x-receive-time-ms") or 0))


def run_level(base: str, auth: tuple[str, str], kind: str, concurrency: int, total: int, images: list[str]):
    """One (kind, concurrency) row from http.client connections, one thread per client."""
    results: list[tuple[float, float, float, float, float]] = []
    lock = threading.Lock()
    counter = iter(range(total))
    errors = []

    # http.client, not httpx: of the blocking clients it leaves the most CPU to the server
    # (client overhead p50 0.9-1.0 ms against httpx's 1.2 at one client)
    url = urllib.parse.urlsplit(base)
    headers = {"Authorization": basic_auth(auth), "Content-Type": "application/json"}

    def connect() -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
        conn.connect()  # before the first request, so no request's latency includes the handshake
        return conn

    def send(conn: http.client.HTTPConnection, i: int) -> tuple[float, http.client.HTTPResponse, bytes]:
        method, path, body = make_request(kind, i, images)
        t0 = time.perf_counter()
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        text = r.read()
        return (time.perf_counter() - t0) * 1000, r, text

    def worker():
        with contextlib.closing(connect()) as conn:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                dt, r, text = send(conn, i)
                if r.status != 200:
                    errors.append(text[:200].decode("utf-8", "replace"))
                    continue
                with lock:
                    results.append(timing_row(dt, r.getheader))

    # warm-up (model load, first-request paths), not measured
    with contextlib.closing(connect()) as conn:
        for i in range(10):
            send(conn, i)
    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return results, wall, errors


def run_level_async(base: str, auth: tuple[str, str], kind: str, concurrency: int, total: int, images: list[str]):
    """The same load from one asyncio thread (uvloop where installed), raw HTTP/1.1 requests
    prepared up front and responses parsed by httptools: a lighter load generator than
    http.client threads, leaving more of the shared cores to the server."""
    import asyncio

    import httptools

    url = urllib.parse.urlsplit(base)

    def raw(i: int) -> bytes:
        method, path, body = make_request(kind, i, images)
        body = body or b""
        head = (f"{method} {path} HTTP/1.1\r\nHost: {url.hostname}:{url.port}\r\nAuthorization: {basic_auth(auth)}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        return head.encode() + body

    prepared = [raw(i) for i in range(max(len(images), len(TEXTS)))]
    results: list[tuple] = []
    errors: list[str] = []
    counter = iter(range(total))

    class Response:
        def __init__(self):
            self.headers: dict[bytes, bytes] = {}
            self.body = b""
            self.complete = False

        def on_header(self, name: bytes, value: bytes) -> None:
            self.headers[name.lower()] = value

        def on_body(self, chunk: bytes) -> None:
            self.body += chunk

        def on_message_complete(self) -> None:
            self.complete = True

    async def send(reader, writer, i: int) -> tuple[float, int, Response]:
        t0 = time.perf_counter()
        writer.write(prepared[i % len(prepared)])
        resp = Response()
        parser = httptools.HttpResponseParser(resp)
        while not resp.complete:
            chunk = await reader.read(262144)
            if not chunk:
                raise ConnectionError("server closed the connection")
            parser.feed_data(chunk)
        return (time.perf_counter() - t0) * 1000, parser.get_status_code(), resp

    async def worker(reader, writer):
        while (i := next(counter, None)) is not None:
            dt, status, resp = await send(reader, writer, i)
            if status != 200:
                errors.append(resp.body[:200].decode("utf-8", "replace"))
                continue
            results.append(timing_row(dt, lambda name: resp.headers.get(name.encode())))

    async def level() -> float:
        conns = [await asyncio.open_connection(url.hostname, url.port) for _ in range(concurrency)]
        for i in range(10):  # warm-up, not measured
            await send(*conns[0], i)
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(r, w) for r, w in conns))
        wall = time.perf_counter() - t0
        for _, w in conns:
            w.close()
        return wall

    try:
        import uvloop
        wall = uvloop.run(level())
    except ImportError:
        wall = asyncio.run(level())
    return results, wall, errors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=10000)
    ap.add_argument("--requests", type=int, default=200, help="requests per (kind, concurrency)")
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--kinds", default="text,image,ha-text,ha-image",
                    help="text / image: vector-service inference-query; ha-text: POST /query; "
                         "ha-image: GET /query with the image in the URL (the HA SDK's default)")
    ap.add_argument("--index-type", default="HNSW", choices=["HNSW", "Linear", "Qc"])
    ap.add_argument("--image-size", type=int, default=224, help="query image side (JPEG)")
    ap.add_argument("--client", default="asyncio", choices=["asyncio", "threads"],
                    help="asyncio: one thread, raw HTTP (lightest); threads: http.client in threads")
    ap.add_argument("--models", type=Path, default=None, help="model registry config (default: tiny CLIP)")
    ap.add_argument("--server-cpus", default=None, help="pin the server to these CPUs, e.g. 0-3 (Linux)")
    ap.add_argument("--client-cpus", default=None, help="pin the load generator to these CPUs, e.g. 4-7 (Linux)")
    args = ap.parse_args()
    server_cpus, client_cpus = cpu_set(args.server_cpus), cpu_set(args.client_cpus)

    import yaml

    tmp = Path(tempfile.mkdtemp(prefix="ha3-bench-"))
    t0 = time.perf_counter()
    build_table(tmp, args.docs, args.index_type)
    print(f"table: {args.docs} docs, {args.index_type}, built in {time.perf_counter() - t0:.1f}s ({tmp})")
    models = args.models
    if models is None:
        from adapter.embed.testing import make_tiny_clip, tiny_clip_registry_config

        clip = make_tiny_clip(tmp / "clip", dim=512)
        models = tmp / "models.yaml"
        models.write_text(yaml.safe_dump(tiny_clip_registry_config(clip)))
    from adapter.runtime import Runtime  # noqa: F401  (import check before spawning)

    cfg = tmp / "config.yaml"
    cfg.write_text(yaml.safe_dump({"engine": {"kind": "embedded", "data_dir": str(tmp / "data")},
                                   "models": str(models), "users": [{"username": "bench", "password": "bench"}]}))
    # Pinned before the server starts, so its torch, faiss and worker threads size themselves to it.
    pin_server = (lambda: os.sched_setaffinity(0, server_cpus)) if server_cpus else None
    try:
        with serving(cfg, preexec_fn=pin_server) as port:
            if client_cpus:
                os.sched_setaffinity(0, client_cpus)
            base = f"http://127.0.0.1:{port}"
            images = [image_b64(i, args.image_size) for i in range(8)]
            print(f"query image: {args.image_size}px JPEG, {len(images[0]) * 3 // 4 // 1024} KiB; "
                  f"{args.requests} requests per row; CPU: {cpu_model()}, {os.cpu_count()} cores; "
                  f"server on CPUs {args.server_cpus or 'all'}, load generator on {args.client_cpus or 'all'}")
            header = (f"{'kind':8} {'conc':>4} {'QPS':>7} {'p50 ms':>8} {'p99 ms':>8} {'embed p50':>9} {'engine p50':>10} "
                      f"{'recv p50':>8} {'svc ovh p50':>11} {'svc ovh p99':>11} {'cli ovh p50':>11} {'cli ovh p99':>11}")
            print(header)
            print("-" * len(header))
            run = run_level_async if args.client == "asyncio" else run_level
            for kind in args.kinds.split(","):
                for conc in (int(c) for c in args.concurrency.split(",")):
                    res, wall, errors = run(base, ("bench", "bench"), kind, conc, args.requests, images)
                    if errors:
                        print(f"{kind} x{conc}: {len(errors)} errors, first: {errors[0]}")
                    if not res:
                        continue
                    lat = [r[0] for r in res]
                    emb = [r[1] for r in res]
                    eng = [r[2] for r in res]
                    svc_ovh = [r[3] - r[1] - r[2] - r[4] for r in res]
                    recv = [r[4] for r in res]
                    cli_ovh = [r[0] - r[1] - r[2] for r in res]
                    print(f"{kind:8} {conc:>4} {len(res) / wall:>7.1f} {pct(lat, 50):>8.2f} {pct(lat, 99):>8.2f} "
                          f"{pct(emb, 50):>9.2f} {pct(eng, 50):>10.2f} {pct(recv, 50):>8.3f} {pct(svc_ovh, 50):>11.3f} {pct(svc_ovh, 99):>11.3f} "
                          f"{pct(cli_ovh, 50):>11.3f} {pct(cli_ovh, 99):>11.3f}")
            print("svc ovh = X-Service-Time-Ms - embed - engine - recv (the server's own work; recv is the wait for "
                  "the request body); cli ovh = client latency - embed - engine (adds HTTP and the Python client).")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
