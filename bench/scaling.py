"""One node against three: ingest and query on the same data, and memory per vector for each
HA3 index type as the adapter maps it. The figures behind docs/scaling.md.

    scripts/opensearch.sh start                                                  # one node, 9200
    OPENSEARCH_STATE=.opensearch/cluster3 scripts/opensearch.sh start --nodes 3 --port 9210 --heap 512m
    PYTHONPATH=. python bench/scaling.py --single http://127.0.0.1:9200 \\
        --cluster http://127.0.0.1:9210,http://127.0.0.1:9211,http://127.0.0.1:9212 --docs 20000

1. Ingest and query on each target, the same ``--docs`` clustered 512-d vectors (no model):
   one node (1 shard, 0 replicas), three nodes (3 shards, 0 replicas) and three nodes (3
   shards, 1 replica). HNSW with HA3's default graph (m 50, ef_construction 500, ef 500), as a
   Lucene graph on these nodes (their k-NN plugin has no native faiss code). Ingest: one
   writer, bulk batches of ``--batch``, until searchable (refresh); then one client's
   latency over ``--queries`` k-NN queries (top 10) and four clients' QPS.
2. Memory per vector: the faiss index types the adapter maps HA3 to on a full distribution
   (HNSW for HNSW/QGraph, IVF with fp16 scalar quantization for Qc, a flat scan for Linear),
   built with faiss-cpu (the library the k-NN plugin's native code wraps) on ``--memory-docs``
   vectors and measured as the serialized index's bytes per vector; and the on-disk bytes
   per vector of the node's own indexes (Lucene HNSW and exact), after a force merge.

Prints figures; asserts nothing. Every figure is for this machine: all nodes share its cores.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.opensearch import clustered, documents, hnsw_spec  # noqa: E402
from bench.query import cpu_model, pct  # noqa: E402


def run_target(label: str, url: str, shards: int, replicas: int, vecs: np.ndarray, queries: np.ndarray,
               batch: int, n_queries: int) -> dict:
    from adapter.engines.opensearch import OpenSearchEngine
    from adapter.plan.tree import SearchPlan

    table = f"scale_{os.getpid()}_{shards}_{replicas}"
    engine = OpenSearchEngine(url=url, table_shards={table: (shards, replicas)})
    spec = hnsw_spec(table)
    engine.create_table(spec)
    try:
        t0 = time.perf_counter()
        for start in range(0, len(vecs), batch):
            result = engine.upsert(table, documents(vecs[start:start + batch], start))
            if result.failures:
                raise SystemExit(f"{label}: {len(result.failures)} rejected: {result.failures[0].reason}")
        concrete = engine._live(table)[0]
        engine._call("POST", f"/{concrete}/_refresh")
        ingest_s = time.perf_counter() - t0
        assert engine.count(table) == len(vecs)
        plans = [SearchPlan(table=table, vectors=[q.tolist()], k=10, hit=10, output_fields=[]) for q in queries]
        for plan in plans[:20]:  # warm-up
            engine.search(plan)
        lat = []
        for i in range(n_queries):
            t = time.perf_counter()
            engine.search(plans[i % len(plans)])
            lat.append((time.perf_counter() - t) * 1000)
        done, lock = [0], threading.Lock()

        def client(worker: int) -> None:
            for i in range(worker, n_queries, 4):
                engine.search(plans[i % len(plans)])
                with lock:
                    done[0] += 1

        t = time.perf_counter()
        threads = [threading.Thread(target=client, args=(w,)) for w in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        qps4 = done[0] / (time.perf_counter() - t)
        return {"label": label, "ingest": len(vecs) / ingest_s, "p50": pct(lat, 50), "p99": pct(lat, 99),
                "qps4": qps4}
    finally:
        engine.drop_table(table)
        engine.close()


def faiss_bytes_per_vector(vecs: np.ndarray) -> list[tuple[str, str, float, float]]:
    """(HA3 type, faiss index, build seconds, serialized bytes per vector)."""
    import faiss

    d = vecs.shape[1]
    n = len(vecs)
    nlist = max(1, int(round(4 * np.sqrt(n))))
    rows = []
    for ha3, make in [
        ("HNSW (m 16)", lambda: faiss.IndexHNSWFlat(d, 16)),
        ("HNSW (HA3 default: m 50)", lambda: faiss.IndexHNSWFlat(d, 50)),
        (f"Qc: IVF{nlist}, SQ fp16", lambda: faiss.IndexIVFScalarQuantizer(
            faiss.IndexFlatL2(d), d, nlist, faiss.ScalarQuantizer.QT_fp16)),
        (f"Qc, int8 (the embedded engine): IVF{nlist}, SQ8", lambda: faiss.IndexIVFScalarQuantizer(
            faiss.IndexFlatL2(d), d, nlist, faiss.ScalarQuantizer.QT_8bit)),
        ("Linear: flat", lambda: faiss.IndexFlatL2(d)),
    ]:
        index = make()
        t = time.perf_counter()
        if not index.is_trained:
            index.train(vecs[: min(n, 100 * nlist)])
        if isinstance(index, faiss.IndexHNSWFlat):
            index.hnsw.efConstruction = 100
        index.add(vecs)
        build = time.perf_counter() - t
        rows.append((ha3, type(index).__name__, build, faiss.serialize_index(index).nbytes / n))
    return rows


def node_bytes_per_vector(url: str, vecs: np.ndarray, batch: int) -> list[tuple[str, dict[str, float]]]:
    """The node's own indexes after a force merge, bytes per vector by Lucene file kind: vectors
    (.vec), graph (.vex), the doc-values copy exact scoring reads (.dvd) and stored fields
    (.fdt: ``_recovery_source``, the full JSON source OpenSearch keeps for peer recovery while
    retention leases cover it, even with the vector excluded from ``_source``)."""
    from adapter.engines.opensearch import OpenSearchEngine

    kinds = {"vec": "vectors", "vex": "graph", "dvd": "doc values", "fdt": "stored fields"}
    out = []
    engine = OpenSearchEngine(url=url)
    for index_type in ("HNSW", "Linear"):
        table = f"size_{os.getpid()}_{index_type.lower()}"
        spec = hnsw_spec(table)
        vi = spec.vector_index.model_copy(update={"index_type": type(spec.vector_index.index_type)(index_type)})
        spec = spec.model_copy(update={"vector_index": vi})
        engine.create_table(spec)
        try:
            for start in range(0, len(vecs), batch):
                engine.upsert(table, documents(vecs[start:start + batch], start))
            concrete = engine._live(table)[0]
            # merging rebuilds the graph: minutes for HA3's m 50 / ef_construction 500
            engine._call("POST", f"/{concrete}/_forcemerge", params={"max_num_segments": "1", "request_timeout": 1800})
            engine._call("POST", f"/{concrete}/_refresh")  # readers move to the merged segment,
            engine._call("POST", f"/{concrete}/_flush")    # and the commit drops the old ones
            stats = engine._call("GET", f"/{concrete}/_stats/segments", params={"include_segment_file_sizes": "true"})
            files = stats["indices"][concrete]["primaries"]["segments"]["file_sizes"]
            sizes = {label: files.get(ext, {}).get("size_in_bytes", 0) / len(vecs) for ext, label in kinds.items()}
            sizes["all files"] = sum(f["size_in_bytes"] for f in files.values()) / len(vecs)
            out.append(("Lucene HNSW (m 50)" if index_type == "HNSW" else "exact (index.knn false)", sizes))
        finally:
            engine.drop_table(table)
    engine.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--single", required=True, help="one node's URL")
    ap.add_argument("--cluster", required=True, help="three nodes' URLs, comma separated")
    ap.add_argument("--docs", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--memory-docs", type=int, default=20000)
    args = ap.parse_args()

    vecs = clustered(args.docs, 512)
    queries = clustered(64, 512, seed=1)
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores (shared by every node); {args.docs} x 512-d vectors, "
          f"HNSW m 50 / ef_construction 500 / ef 500 as Lucene graphs")
    targets = [("1 node, 1 shard", args.single, 1, 0), ("3 nodes, 3 shards", args.cluster, 3, 0),
               ("3 nodes, 3 shards + 1 replica", args.cluster, 3, 1)]
    rows = [run_target(label, url, s, r, vecs, queries, args.batch, args.queries) for label, url, s, r in targets]
    print(f"\n{'target':32} {'ingest vec/s':>12} {'query p50 ms':>12} {'p99 ms':>8} {'QPS, 4 clients':>15}")
    for r in rows:
        print(f"{r['label']:32} {r['ingest']:>12.0f} {r['p50']:>12.2f} {r['p99']:>8.2f} {r['qps4']:>15.1f}")

    mem = clustered(args.memory_docs, 512, seed=2)
    print(f"\nmemory per vector, {args.memory_docs} x 512-d (faiss-cpu {__import__('faiss').__version__}; "
          "serialized size, which is what the k-NN plugin loads off-heap):")
    print(f"{'HA3 index type: faiss index':48} {'build s':>8} {'bytes/vector':>13} {'GB per 1M':>10}")
    for ha3, kind, build, per in faiss_bytes_per_vector(mem):
        print(f"{ha3 + ': ' + kind:48} {build:>8.1f} {per:>13.0f} {per * 1e6 / 1e9:>10.2f}")
    print("\non the node, on disk after a force merge, bytes per vector (vector excluded from _source):")
    node = node_bytes_per_vector(args.single, mem[: min(len(mem), 10000)], args.batch)
    columns = list(node[0][1])
    print(f"{'index':28}" + "".join(f"{c:>15}" for c in columns))
    for label, sizes in node:
        print(f"{label:28}" + "".join(f"{sizes[c]:>15.0f}" for c in columns))


if __name__ == "__main__":
    main()
