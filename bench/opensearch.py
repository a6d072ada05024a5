"""The OpenSearch engine on a live node: bulk ingest against the embedded engine, and query
latency through the adapter against the same k-NN query sent straight to the node.

    scripts/opensearch.sh start          # prints the URL
    PYTHONPATH=. python bench/opensearch.py --url http://127.0.0.1:9200 --docs 10000 --queries 400

1. Ingest: the same ``--docs`` clustered 512-d unit vectors (no model) go into a fresh HNSW
   table on each engine through ``Engine.upsert`` in batches of ``--batch``, the two engines'
   batches interleaved so that the machine's noise falls on both. "acked" is the time until
   the last batch was acknowledged; "searchable" adds the node's refresh.
2. Query, one client: a ``vector-service/query`` request (a raw vector, top 10) to
   ``ha3-adapter serve`` (a subprocess on the node) against the same k-NN body the adapter
   builds (``OpenSearchEngine.knn_body``), sent with opensearch-py to the node. Blocks of
   ``--block`` queries alternate between the two. The adapter's own ``X-Engine-Time-Ms``
   shows how much of its latency is the node's.

Prints figures and ratios; asserts nothing.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.query import basic_auth, cpu_model, free_port, healthy, pct  # noqa: E402

TABLE_SCHEMA = ROOT / "mappings" / "image_search_base64.json"


def hnsw_spec(name: str):
    """The seed's Base64 schema as an HNSW table (HA3's default graph parameters)."""
    from adapter.schema.parse import parse_schema

    schema = json.loads(TABLE_SCHEMA.read_text())
    for index in schema["indexs"]:
        if index["index_type"] == "CUSTOMIZED":
            index["parameters"]["vector_index_type"] = "HNSW"
            index["parameters"].pop("build_index_params", None)
            index["parameters"].pop("search_index_params", None)
    return parse_schema(schema, name)


def clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // 200), dim)).astype(np.float32)
    vecs = centres[rng.integers(0, len(centres), n)] + 0.5 * rng.standard_normal((n, dim)).astype(np.float32)
    return vecs / np.linalg.norm(vecs, axis=1, keepdims=True)


def documents(vecs: np.ndarray, start: int):
    from adapter.plan.records import Document

    return [Document(pk=start + i + 1, fields={"cate_id": (start + i) % 30, "vector_source_image": ""}, vector=v)
            for i, v in enumerate(vecs)]


def ingest(engines: dict, table: str, vecs: np.ndarray, batch: int) -> dict[str, float]:
    """Seconds per engine to upsert every vector, batches interleaved between the engines."""
    spent = dict.fromkeys(engines, 0.0)
    for start in range(0, len(vecs), batch):
        docs = documents(vecs[start:start + batch], start)
        for kind, engine in engines.items():
            t0 = time.perf_counter()
            result = engine.upsert(table, docs)
            spent[kind] += time.perf_counter() - t0
            if result.failures:
                raise SystemExit(f"{kind}: {len(result.failures)} rejected, first: {result.failures[0].reason}")
    return spent


def filtered_recall(engines: dict, table: str, vecs: np.ndarray, queries: np.ndarray, ef: int | None) -> None:
    """Filtered k-NN on both engines, same data: a filter inside the knn query on the node
    (OpenSearch picks exact or filtered graph search itself) and the embedded engine's own
    strategy; recall@10 against a numpy brute force over the matching documents, and q/s
    against each engine's unfiltered query, at 10%, 1% and 0.1% of the table."""
    from adapter.plan.tree import Compare, SearchParams, SearchPlan

    n = len(vecs)
    params = SearchParams(ef_search=ef)
    print("\nfiltered k-NN, the same data on both engines (id <= N x share; recall@10 against exact, one client):")
    print(f"  {'engine':12} {'filter':>8} {'matches':>8} {'recall@10':>10} {'q/s':>8} {'vs unfiltered':>14}")
    for kind, engine in engines.items():
        base_qps = None
        for share in (None, 0.1, 0.01, 0.001):
            limit = n if share is None else max(10, int(n * share))
            flt = None if share is None else Compare(field="id", op="<=", value=limit)
            hits, t0 = 0, time.perf_counter()
            for q in queries:
                res = engine.search(SearchPlan(table=table, vectors=[q.tolist()], k=10, hit=10, output_fields=[],
                                               filter=flt, search_params=params))
                exact = np.argsort(((vecs[:limit] - q) ** 2).sum(1), kind="stable")[:10] + 1  # pk = row + 1
                hits += len(set(exact.tolist()) & {int(h.pk) for h in res.hits})
            qps = len(queries) / (time.perf_counter() - t0)
            base_qps = base_qps or qps
            label = "none" if share is None else f"{share:.1%}"
            print(f"  {kind:12} {label:>8} {limit:>8} {hits / (10 * len(queries)):>10.3f} {qps:>8.1f} "
                  f"{qps / base_qps:>13.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default=os.environ.get("OPENSEARCH_URL"), help="the node (default $OPENSEARCH_URL)")
    ap.add_argument("--docs", type=int, default=10000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--queries", type=int, default=400, help="queries per side")
    ap.add_argument("--block", type=int, default=20, help="queries per block; blocks alternate sides")
    ap.add_argument("--ef", type=int, default=None,
                    help="ef_search per query (searchParams proxima.hnsw.searcher.ef); default: the table's 500")
    args = ap.parse_args()
    if not args.url:
        raise SystemExit("no node: start one with scripts/opensearch.sh start and pass --url (or OPENSEARCH_URL)")

    import yaml

    from adapter.engines.embedded import EmbeddedEngine
    from adapter.engines.opensearch import OpenSearchEngine
    from adapter.engines.opensearch_transport import FastJSONSerializer
    from adapter.plan.tree import SearchParams, SearchPlan

    tmp = Path(tempfile.mkdtemp(prefix="ha3-bench-os-"))
    table = f"bench_{os.getpid()}"
    spec = hnsw_spec(table)
    vecs = clustered(args.docs, spec.dimension)
    node = OpenSearchEngine(url=args.url)
    embedded = EmbeddedEngine(tmp / "data")
    engines = {"embedded": embedded, "opensearch": node}
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; node {args.url}, k-NN library {node.knn_library}; "
          f"{args.docs} x {spec.dimension}-d vectors, HNSW (m {spec.vector_index.hnsw_m()}, "
          f"ef_construction {spec.vector_index.hnsw.ef_construction}, ef_search {spec.vector_index.hnsw.ef_search})")
    for engine in engines.values():
        engine.create_table(spec)
    proc = None
    try:
        spent = ingest(engines, table, vecs, args.batch)
        t0 = time.perf_counter()
        concrete = node._live(table)[0]
        node._call("POST", f"/{concrete}/_refresh")
        searchable = spent["opensearch"] + time.perf_counter() - t0
        assert node.count(table) == embedded.count(table) == args.docs
        print(f"\ningest, batches of {args.batch} (vectors/s):")
        print(f"  embedded engine        {args.docs / spent['embedded']:>9.0f}")
        print(f"  OpenSearch, acked      {args.docs / spent['opensearch']:>9.0f}   "
              f"({spent['embedded'] / spent['opensearch']:.2f}x the embedded engine)")
        print(f"  OpenSearch, searchable {args.docs / searchable:>9.0f}   "
              f"({spent['embedded'] / searchable:.2f}x)")

        # -- query: the adapter over HTTP against the same body straight to the node --------
        cfg = tmp / "config.yaml"
        cfg.write_text(yaml.safe_dump({"engine": {"kind": "opensearch", "url": args.url},
                                       "data_dir": str(tmp / "state"),
                                       "users": [{"username": "bench", "password": "bench"}]}))
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "adapter.cli", "serve", "--config", str(cfg),
                                 "--port", str(port), "--log-level", "warning"],
                                env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=str(ROOT))
        deadline = time.monotonic() + 120
        while not healthy(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the adapter did not start")
            time.sleep(0.2)
        queries = clustered(64, spec.dimension, seed=1)
        _, live_spec, meta = node._live(table, fresh=True)
        url = urllib.parse.urlsplit(args.url.split(",")[0])

        def direct_body(q: np.ndarray) -> str:
            plan = SearchPlan(table=table, vectors=[q.tolist()], k=10, hit=10,
                              search_params=SearchParams(ef_search=args.ef))
            body = node.knn_body(live_spec, meta, plan, q, None)
            body["_source"] = {"includes": [live_spec.primary_key]}
            return FastJSONSerializer().dumps(body)  # the bytes the adapter itself sends

        direct_bodies = [direct_body(q) for q in queries]
        extra = {"searchParams": json.dumps({"proxima.hnsw.searcher.ef": args.ef})} if args.ef else {}
        adapter_bodies = [json.dumps({"tableName": table, "vector": q.tolist(), "topK": 10, **extra}) for q in queries]
        direct = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
        adapter = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        headers = {"Content-Type": "application/json"}
        auth = {**headers, "Authorization": basic_auth(("bench", "bench"))}
        path = f"/{concrete}/_search"

        def send_direct(i: int) -> float:
            t0 = time.perf_counter()
            direct.request("POST", path, body=direct_bodies[i % len(queries)], headers=headers)
            r = direct.getresponse()
            body = r.read()
            dt = (time.perf_counter() - t0) * 1000
            if r.status != 200 or len(json.loads(body)["hits"]["hits"]) != 10:
                raise SystemExit(f"direct query failed: {r.status} {body[:200]!r}")
            return dt

        engine_ms: list[float] = []
        service_ms: list[float] = []

        def send_adapter(i: int) -> float:
            t0 = time.perf_counter()
            adapter.request("POST", "/vector-service/query", body=adapter_bodies[i % len(queries)], headers=auth)
            r = adapter.getresponse()
            body = r.read()
            dt = (time.perf_counter() - t0) * 1000
            if r.status != 200 or len(json.loads(body)["result"]) != 10:
                raise SystemExit(f"adapter query failed: {r.status} {body[:200]!r}")
            engine_ms.append(float(r.getheader("x-engine-time-ms")))
            service_ms.append(float(r.getheader("x-service-time-ms")))
            return dt

        for i in range(40):  # warm-up: connections, JIT, caches
            send_direct(i), send_adapter(i)
        engine_ms.clear()
        service_ms.clear()
        lat: dict[str, list[float]] = {"direct": [], "adapter": []}
        for block in range(0, args.queries, args.block):
            for i in range(block, min(block + args.block, args.queries)):
                lat["direct"].append(send_direct(i))
            for i in range(block, min(block + args.block, args.queries)):
                lat["adapter"].append(send_adapter(i))
        p50 = {k: pct(v, 50) for k, v in lat.items()}
        print(f"\nquery latency, one client, top 10, ef_search {args.ef or spec.vector_index.hnsw.ef_search}, "
              f"{args.queries} queries a side in blocks of {args.block} (ms):")
        print(f"  {'':34} {'p50':>7} {'p99':>7}")
        print(f"  {'k-NN body straight to the node':34} {p50['direct']:>7.2f} {pct(lat['direct'], 99):>7.2f}")
        print(f"  {'adapter: vector-service/query':34} {p50['adapter']:>7.2f} {pct(lat['adapter'], 99):>7.2f}")
        print(f"  {'  in the service (X-Service-Time)':34} {pct(service_ms, 50):>7.2f} {pct(service_ms, 99):>7.2f}")
        print(f"  {'  of which the engine call':34} {pct(engine_ms, 50):>7.2f} {pct(engine_ms, 99):>7.2f}")
        print(f"  adapter / direct p50: {p50['adapter'] / p50['direct']:.3f} "
              f"(+{p50['adapter'] - p50['direct']:.2f} ms)")
        filtered_recall(engines, table, vecs, queries, args.ef)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=15)
        for engine in engines.values():
            try:
                engine.drop_table(table)
            except Exception:  # noqa: BLE001 - best-effort cleanup of a benchmark table
                pass
            engine.close()


if __name__ == "__main__":
    main()
