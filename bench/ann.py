"""Embedded engine vs raw faiss: recall@10 and queries/second, HNSW and IVF-SQ8 (prints; asserts nothing).

    PYTHONPATH=. python bench/ann.py --n 100000 --queries 200
    PYTHONPATH=. python bench/ann.py --n 1000000 --families ivf      # if you have the time and RAM

Data: random normal vectors, L2-normalised, 512-d (or --dim), squared L2. Ground truth:
exact top-10 by faiss IndexFlatL2. For each family the engine builds its table through
``EmbeddedEngine.upsert`` (SQLite + faiss), then every setting is measured twice on the
same index, alternating in blocks of 20 queries: through ``engine.search`` (a SearchPlan per query: validation, locks, SQLite
field fetch for the hits) and as a raw ``index.search`` of one query at a time, so the
ratio engine/raw is the engine's overhead at identical recall. Raw batched QPS is printed
too (faiss's best case, all queries in one call). Memory: faiss index bytes per vector
(serialized) and the SQLite file's bytes per vector (fp32 vector + attributes).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from adapter.engines.base import Document
from adapter.engines.embedded import EmbeddedEngine
from adapter.query.plan import SearchParams, SearchPlan
from adapter.schema.model import (
    FieldSpec, FieldType, HnswParams, QcParams, TableSpec, VectorIndexSpec, VectorIndexType,
)


def make_spec(name: str, kind: VectorIndexType, dim: int, m: int, ef_construction: int, nlist: int | None) -> TableSpec:
    return TableSpec(
        name=name, primary_key="id",
        fields=[FieldSpec(name="id", type=FieldType.INT64), FieldSpec(name="cate_id", type=FieldType.INT64),
                FieldSpec(name="vector", type=FieldType.FLOAT, multi_value=True)],
        vector_index=VectorIndexSpec(
            name="vector", pk_field="id", vector_field="vector", dimension=dim, index_type=kind,
            hnsw=HnswParams(max_neighbor_count=2 * m, ef_construction=ef_construction, ef_search=64)
            if kind is VectorIndexType.HNSW else None,
            qc=QcParams(centroid_count=nlist) if kind is VectorIndexType.QC else None,
            linear_build_threshold=1000),
    )


def make_data(rng, n: int, nq: int, dim: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    total = n + nq
    if kind == "clustered":
        centres = rng.standard_normal((1000, dim), dtype=np.float32)
        points = centres[rng.integers(0, 1000, total)] + 0.5 * rng.standard_normal((total, dim), dtype=np.float32)
    else:
        points = rng.standard_normal((total, dim), dtype=np.float32)
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points[:n], points[n:]


def recall_at(found: np.ndarray, truth: np.ndarray, k: int = 10) -> float:
    return float(np.mean([len(set(f[:k]) & set(t[:k])) / k for f, t in zip(found, truth)]))


def measure(engine, table, index, queries, truth, params: SearchParams, raw_params, rounds: int = 2,
            block: int = 20) -> dict:
    """Engine and raw faiss alternate in blocks of ``block`` queries, the order flipping each round, so
    machine-load drift hits both alike and neither runs a query right after the other warmed the
    CPU caches with that same query."""
    k = 10
    # The query layer builds plans; building one (pydantic, 512 floats) is not engine time.
    plans = [SearchPlan(table=table, vectors=[q.tolist()], k=k, hit=k, output_fields=[], search_params=params)
             for q in queries]
    engine_s = raw_s = 0.0
    found: dict[int, list] = {}

    def run_engine(lo: int, hi: int) -> float:
        t0 = time.perf_counter()
        for i in range(lo, hi):
            found[i] = [h.pk for h in engine.search(plans[i]).hits]  # one SearchPlan per query, as served
        return time.perf_counter() - t0

    def run_raw(lo: int, hi: int) -> float:
        t0 = time.perf_counter()
        for i in range(lo, hi):
            index.search(queries[i:i + 1], k, params=raw_params)  # the very same faiss index object
        return time.perf_counter() - t0

    for r in range(rounds):
        for lo in range(0, len(queries), block):
            hi = min(len(queries), lo + block)
            if r % 2 == 0:
                engine_s += run_engine(lo, hi)
                raw_s += run_raw(lo, hi)
            else:
                raw_s += run_raw(lo, hi)
                engine_s += run_engine(lo, hi)
    t0 = time.perf_counter()
    index.search(queries, k, params=raw_params)
    batch_s = time.perf_counter() - t0
    n = rounds * len(queries)
    return {"recall": recall_at(np.array([found[i] for i in range(len(queries))]), truth),
            "engine_qps": n / engine_s, "raw_qps": n / raw_s, "batch_qps": len(queries) / batch_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--families", default="hnsw,ivf")
    ap.add_argument("--m", type=int, default=16, help="HNSW M (proxima max_neighbor_count = 2*M)")
    ap.add_argument("--ef-construction", type=int, default=64)
    ap.add_argument("--ef", default="16,32,64,128,256")
    ap.add_argument("--nlist", type=int, default=None, help="IVF lists (default: the spec's ~4*sqrt(N))")
    ap.add_argument("--nprobes", default="1,4,16,32,64,128")
    ap.add_argument("--threads", type=int, default=1, help="faiss OpenMP threads")
    ap.add_argument("--data", choices=["normal", "clustered"], default="normal",
                    help="normal: i.i.d. random normal (worst case for ANN); clustered: a 1000-centre mixture, "
                         "closer to real image embeddings")
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()
    faiss.omp_set_num_threads(args.threads)

    rng = np.random.default_rng(0)
    data, queries = make_data(rng, args.n, args.queries, args.dim, args.data)
    t0 = time.perf_counter()
    flat = faiss.IndexFlatL2(args.dim)
    flat.add(data)
    _, truth = flat.search(queries, 10)
    print(f"data: {args.n} x {args.dim} normalised {args.data}, {args.queries} queries, exact top-10 in "
          f"{time.perf_counter() - t0:.1f} s, faiss {faiss.__version__}, {args.threads} thread(s)")

    root = Path(args.data_dir or tempfile.mkdtemp(prefix="ann-bench-"))
    engine = EmbeddedEngine(root)
    try:
        for family in args.families.split(","):
            kind = VectorIndexType.HNSW if family == "hnsw" else VectorIndexType.QC
            spec = make_spec(f"bench_{family}", kind, args.dim, args.m, args.ef_construction, args.nlist)
            engine.create_table(spec)
            t0 = time.perf_counter()
            if kind is VectorIndexType.QC:
                nlist = spec.vector_index.ivf_nlist(args.n)
                sample = data[rng.choice(args.n, size=min(args.n, max(64 * nlist, 10_000)), replace=False)]
                engine.train(spec.name, sample)
            train_s = time.perf_counter() - t0
            for start in range(0, args.n, 10_000):
                docs = [Document(pk=i, fields={"cate_id": i % 10}, vector=data[i])
                        for i in range(start, min(args.n, start + 10_000))]
                engine.upsert(spec.name, docs)
            build_s = time.perf_counter() - t0
            gen = engine._generation(spec.name)  # the bench reads the engine's own faiss index
            index = gen.index.index
            engine.checkpoint(spec.name)
            faiss_bytes = (gen.path / "index.faiss").stat().st_size
            sqlite_bytes = sum(p.stat().st_size for p in gen.path.glob("docs.sqlite*"))
            st = engine.stats(spec.name)
            print(f"\n== {family}: {st.extra} build {build_s:.1f} s (train {train_s:.1f} s) through engine.upsert "
                  f"(SQLite + faiss); index {faiss_bytes / args.n:.0f} B/vector, SQLite {sqlite_bytes / args.n:.0f} B/vector")
            print(f"{'setting':>14} {'recall@10':>9} {'engine q/s':>10} {'raw q/s':>9} {'engine/raw':>10} {'raw batch q/s':>13}")
            settings = ([("ef", int(v)) for v in args.ef.split(",")] if family == "hnsw"
                        else [("nprobes", int(v)) for v in args.nprobes.split(",")])
            for name, value in settings:
                if family == "hnsw":
                    params = SearchParams(ef_search=value)
                    raw = faiss.SearchParametersHNSW()
                    raw.efSearch = max(10, value)
                else:
                    params = SearchParams(nprobes=value)
                    raw = faiss.SearchParametersIVF()
                    raw.nprobe = min(value, st.extra["nlist"])
                r = measure(engine, spec.name, index, queries, truth, params, raw)
                print(f"{name + '=' + str(value):>14} {r['recall']:>9.3f} {r['engine_qps']:>10.0f} {r['raw_qps']:>9.0f} "
                      f"{r['engine_qps'] / r['raw_qps']:>10.2f} {r['batch_qps']:>13.0f}")
            engine.drop_table(spec.name)
    finally:
        engine.close()
        if args.data_dir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
