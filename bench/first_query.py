"""First and tenth query after ``ha3-adapter demo`` says it is ready.

    PYTHONPATH=. python bench/first_query.py [--port 18080] [--keep DIR]

Runs the demo twice in a subprocess (the Python that runs this script, with its PYTHONPATH,
so it measures whichever checkout that names): once on a new data directory (it ingests the
19 sample photos first) and once reusing it. Each time it waits for the login banner, the
moment a user copies the curl line, then sends 10 text queries ("a cat", HA query string,
GET /query) and 10 image queries (a sample photo, POST /query) one after another and prints
each latency. If the port does not accept connections yet when the banner is out, the wait
until it does is printed on its own ("refused for"), not hidden in the first query.

Figures only; nothing is asserted. The default starter model is what a newcomer gets.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUERIES = 10
BANNER = re.compile(r"Search page:.*\(user (\S+), password (\S+)\)")


def wait_for_banner(proc: subprocess.Popen, timeout_s: float = 900.0) -> tuple[str, str, float]:
    start = time.monotonic()
    for line in proc.stdout:
        match = BANNER.search(line)
        if match:
            return match.group(1), match.group(2), time.monotonic() - start
        if time.monotonic() - start > timeout_s:
            break
    raise SystemExit(f"the demo exited or never printed its banner (rc={proc.poll()})")


def send(port: int, auth: str, method: str, path: str, body: bytes | None = None) -> tuple[float, int]:
    """One request on a new connection, as curl sends it; (seconds, HTTP status)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"Authorization": auth}
    if body is not None:
        headers["Content-Type"] = "application/json"
    started = time.perf_counter()
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    elapsed = time.perf_counter() - started
    if resp.status != 200 or json.loads(data).get("errors"):
        raise SystemExit(f"query failed: {resp.status} {data[:300]!r}")
    return elapsed, resp.status


def wait_until_listening(port: int) -> float:
    start = time.monotonic()
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.connect()
            conn.close()
            return time.monotonic() - start
        except OSError:
            if time.monotonic() - start > 600:
                raise SystemExit("the port never accepted connections")
            time.sleep(0.02)


def text_path() -> str:
    b64 = base64.b64encode(b"a cat").decode()
    query = (f"config=start:0,hit:5,format:json&&query=vector:'{b64}&modal=text&n=5'"
             "&&kvpairs=formula:proxima_score(vector)&&sort=+RANK&&cluster=general")
    from urllib.parse import urlencode
    return "/query?" + urlencode({"query": query})


def image_body(data_dir: Path) -> bytes:
    photo = next(p for p in sorted(data_dir.rglob("*.jpg")) if "bucket" in p.parts)
    b64 = base64.b64encode(photo.read_bytes()).decode()
    query = f"config=start:0,hit:5,format:json&&query=vector:'{b64}&modal=image&n=5'&&cluster=general"
    return json.dumps({"assemblyQuery": query}).encode()


def run_once(label: str, data_dir: Path, port: int) -> None:
    cmd = [sys.executable, "-m", "adapter.cli", "demo", "--port", str(port), "--data-dir", str(data_dir)]
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="120")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        user, password, banner_s = wait_for_banner(proc)
        auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        refused_s = wait_until_listening(port)
        texts = [send(port, auth, "GET", text_path())[0] for _ in range(QUERIES)]
        body = image_body(data_dir)
        images = [send(port, auth, "POST", "/query", body)[0] for _ in range(QUERIES)]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    ms = lambda xs: " ".join(f"{x * 1000:.0f}" for x in xs)  # noqa: E731
    print(f"{label}: banner after {banner_s:.1f} s; port refused for {refused_s * 1000:.0f} ms after it")
    print(f"  text  queries 1..{QUERIES} (ms): {ms(texts)}   first {texts[0] * 1000:.0f}, tenth {texts[-1] * 1000:.0f}")
    print(f"  image queries 1..{QUERIES} (ms): {ms(images)}   first {images[0] * 1000:.0f}, tenth {images[-1] * 1000:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=18080)
    parser.add_argument("--keep", type=Path, help="use (and keep) this data directory instead of a temporary one")
    args = parser.parse_args()
    data_dir = args.keep or Path(tempfile.mkdtemp(prefix="ha3-first-query-")) / "demo"
    try:
        run_once("new data directory", data_dir, args.port)
        run_once("reused data directory", data_dir, args.port)
    finally:
        if args.keep is None:
            shutil.rmtree(data_dir.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
