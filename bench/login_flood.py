"""A legitimate client's throughput during a wrong-password flood from another address.

    PYTHONPATH=. python bench/login_flood.py --seconds 5 --flood-connections 8

Builds a small table (bench/query.py's build_table: HNSW, random unit vectors), then for the
failed-login throttle off (``limits.max_failed_logins: 0``) and on (the default) starts
``ha3-adapter serve`` in a subprocess and measures, side by side in the same run:

- alone: one keep-alive client from 127.0.0.1 posting vector-service queries (a 512-d
  vector: no embedding, so the figure is about serving, not the model) for ``--seconds``;
- flooded: the same client while another process floods wrong passwords from 127.0.0.2
  (``--flood-connections`` keep-alive connections, each sending the next request as soon as
  the answer arrives, as HTTP clients do; a closed connection is reopened at once).

Prints queries/s alone and flooded, their ratio (the issue's target: >= 0.5 with the
throttle on), and the flood's own answers per second by status. The load generators share
the machine's cores with the server (the CPU is printed). Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import os
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

from query import build_table, cpu_model, serving  # bench/query.py

FLOOD_ADDRESS = "127.0.0.2"  # another loopback address: another client as the server sees it


def _request(method: str, path: str, user: str, password: str, body: bytes = b"") -> bytes:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    """Send one request, read its whole response; the status code."""
    import httptools

    done = []

    class Sink:
        def on_message_complete(self) -> None:
            done.append(True)

    parser = httptools.HttpResponseParser(Sink())
    writer.write(request)
    while not done:
        chunk = await reader.read(65536)
        if not chunk:
            raise ConnectionError("closed")
        parser.feed_data(chunk)
    return parser.get_status_code()


def legit_qps(port: int, seconds: float) -> float:
    """Queries/s of one keep-alive client from 127.0.0.1 (a verified, cached login)."""
    vector = [round(1 / 512 ** 0.5, 6)] * 512
    request = _request("POST", "/vector-service/query", "bench", "bench",
                       json.dumps({"tableName": "bench", "vector": vector, "topK": 10}).encode())

    async def run() -> float:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await _exchange(reader, writer, request) == 200  # logs in once: cached from here on
        done, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            if await _exchange(reader, writer, request) == 200:
                done += 1
        writer.close()
        return done / (time.perf_counter() - t0)

    return asyncio.run(run())


def flood(port: int, connections: int, stop, results) -> None:
    """Wrong passwords from FLOOD_ADDRESS on ``connections`` keep-alive connections until ``stop``."""
    request = _request("GET", "/network/active", "bench", "wrong-password")
    statuses: Counter = Counter()

    async def connection() -> None:
        while not stop.is_set():
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(FLOOD_ADDRESS, 0))
                while not stop.is_set():
                    statuses[await _exchange(reader, writer, request)] += 1
                writer.close()
            except (ConnectionError, OSError):
                statuses["reconnect"] += 1

    async def run() -> None:
        await asyncio.gather(*(connection() for _ in range(connections)))

    t0 = time.perf_counter()
    asyncio.run(run())
    results.put((dict(statuses), time.perf_counter() - t0))


def measure(tmp: Path, models: Path, *, throttle: bool, seconds: float, connections: int) -> dict:
    import yaml

    limits = {} if throttle else {"max_failed_logins": 0}
    cfg = tmp / "config.yaml"
    cfg.write_text(yaml.safe_dump({"engine": {"kind": "embedded", "data_dir": str(tmp / "data")},
                                   "models": str(models), "users": [{"username": "bench", "password": "bench"}],
                                   "limits": limits}))
    with serving(cfg, log_level="error") as port:
        legit_qps(port, 1.0)  # warm-up
        alone = legit_qps(port, seconds)
        stop, results = multiprocessing.Event(), multiprocessing.Queue()
        flooder = multiprocessing.Process(target=flood, args=(port, connections, stop, results))
        flooder.start()
        time.sleep(1.0)  # the flood is under way (and, with the throttle on, has tripped it)
        flooded = legit_qps(port, seconds)
        stop.set()
        statuses, wall = results.get(timeout=60)
        flooder.join(timeout=30)
    return {"alone": alone, "flooded": flooded, "flood": {k: v / wall for k, v in statuses.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0, help="length of each measured phase")
    ap.add_argument("--flood-connections", type=int, default=8)
    ap.add_argument("--docs", type=int, default=2000)
    args = ap.parse_args()

    import yaml

    from adapter.embed.testing import make_tiny_clip, tiny_clip_registry_config

    tmp = Path(tempfile.mkdtemp(prefix="ha3-flood-"))
    try:
        build_table(tmp, args.docs, "HNSW")
        models = tmp / "models.yaml"
        models.write_text(yaml.safe_dump(tiny_clip_registry_config(make_tiny_clip(tmp / "clip", dim=512))))
        print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; table: {args.docs} docs HNSW; legit: 1 connection "
              f"from 127.0.0.1; flood: {args.flood_connections} connections from {FLOOD_ADDRESS}; "
              f"{args.seconds:g} s per phase")
        header = f"{'throttle':8} {'alone q/s':>10} {'flooded q/s':>12} {'ratio':>6}  flood answers/s by status"
        print(header)
        print("-" * len(header))
        for throttle in (False, True):
            row = measure(tmp, models, throttle=throttle, seconds=args.seconds, connections=args.flood_connections)
            mix = ", ".join(f"{k}: {v:.1f}" for k, v in sorted(row["flood"].items(), key=str))
            print(f"{'on' if throttle else 'off':8} {row['alone']:>10.1f} {row['flooded']:>12.1f} "
                  f"{row['flooded'] / row['alone']:>6.2f}  {mix}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
