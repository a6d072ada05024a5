"""A legitimate client's throughput during a wrong-password flood from another address.

    PYTHONPATH=. python bench/login_flood.py --seconds 4 --rounds 3 --flood-connections 8

Builds a small table (bench/query.py's build_table: HNSW, random unit vectors), then for the
failed-login throttle off (``limits.max_failed_logins: 0``) and on (the default) starts
``ha3-adapter serve`` in a subprocess and measures, side by side in the same run:

- alone: one keep-alive client from 127.0.0.1 posting vector-service queries (a 512-d
  vector: no embedding, so the figure is about serving, not the model) for ``--seconds``;
- flooded: the same client while another process floods wrong passwords from 127.0.0.2
  (``--flood-connections`` keep-alive connections, each sending the next request as soon as
  the answer arrives, as HTTP clients do; a closed connection is reopened at once).

Each setting runs ``--rounds`` alone/flooded pairs (drift in the load of shared cores then
hits both sides of each ratio alike) and prints the median queries/s alone and flooded, the
median ratio (the issue's target: >= 0.5 with the throttle on), each round's ratio, and the
flood's own answers per second by status. The load generators share
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
import statistics
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


def measure(tmp: Path, models: Path, *, throttle: bool, seconds: float, connections: int, rounds: int) -> dict:
    """``rounds`` pairs of phases, alone then flooded, so drift in the machine's load (other
    work on shared cores) hits both sides of each ratio alike."""
    import yaml

    limits = {} if throttle else {"max_failed_logins": 0}
    cfg = tmp / "config.yaml"
    cfg.write_text(yaml.safe_dump({"engine": {"kind": "embedded", "data_dir": str(tmp / "data")},
                                   "models": str(models), "users": [{"username": "bench", "password": "bench"}],
                                   "limits": limits}))
    alone, flooded, flood_rates = [], [], Counter()
    with serving(cfg, log_level="error") as port:
        legit_qps(port, 1.0)  # warm-up
        for _ in range(rounds):
            alone.append(legit_qps(port, seconds))
            stop, results = multiprocessing.Event(), multiprocessing.Queue()
            flooder = multiprocessing.Process(target=flood, args=(port, connections, stop, results))
            flooder.start()
            time.sleep(1.0)  # the flood is under way (and, with the throttle on, has tripped it)
            flooded.append(legit_qps(port, seconds))
            stop.set()
            statuses, wall = results.get(timeout=60)
            flooder.join(timeout=30)
            flood_rates.update({k: v / wall / rounds for k, v in statuses.items()})
    return {"alone": alone, "flooded": flooded, "flood": dict(flood_rates)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0, help="length of each measured phase")
    ap.add_argument("--flood-connections", type=int, default=8)
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3, help="alone/flooded pairs per setting (median ratio printed)")
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
              f"{args.rounds} x ({args.seconds:g} s alone, {args.seconds:g} s flooded) per setting")
        header = (f"{'throttle':8} {'alone q/s (median)':>18} {'flooded q/s (median)':>20} {'ratio':>6}  "
                  "ratio per round; flood answers/s by status")
        print(header)
        print("-" * len(header))
        for throttle in (False, True):
            row = measure(tmp, models, throttle=throttle, seconds=args.seconds, connections=args.flood_connections,
                          rounds=args.rounds)
            ratios = [f / a for a, f in zip(row["alone"], row["flooded"])]
            mix = ", ".join(f"{k}: {v:.1f}" for k, v in sorted(row["flood"].items(), key=str))
            print(f"{'on' if throttle else 'off':8} {statistics.median(row['alone']):>18.1f} "
                  f"{statistics.median(row['flooded']):>20.1f} {statistics.median(ratios):>6.2f}  "
                  f"{' '.join(f'{r:.2f}' for r in ratios)}; {mix}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
