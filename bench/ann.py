"""Embedded engine vs raw faiss, hnswlib and usearch: recall@10 and queries/second, unfiltered
and filtered (prints; asserts nothing).

    pip install -e '.[bench]'     # hnswlib, usearch (optional: a missing peer is skipped)
    PYTHONPATH=. python bench/ann.py --n 50000 --queries 300 --data clustered
    PYTHONPATH=. python bench/ann.py --n 500000 --families hnsw --ef 16,64 --peers none

Data: 512-d (or --dim) vectors, L2-normalised, squared L2; ``clustered`` is a 1000-centre
mixture (closer to image embeddings), ``normal`` i.i.d. (the worst case for ANN). Each doc i
has cate_id = i % 10 and bucket = i % 1000; a filter of selectivity s is ``bucket < 1000 s``
(0.1 -> 10 % of the rows, 0.001 -> 0.1 %), evaluated by the engine like any HA3 filter.
Ground truth: exact top-10 by faiss IndexFlatL2 (over the matching rows when filtered).

The engine builds each table through ``EmbeddedEngine.upsert`` (SQLite + faiss); "raw faiss"
searches the engine's very own faiss index object one query at a time, so engine/raw is the
engine's per-query overhead at identical recall. hnswlib and usearch build their own HNSW
with the same M and efConstruction; unfiltered, they are interleaved with raw faiss in a second
group (cells are R@10 / q/s; X/raw is X's q/s over raw faiss's in its group). Every runner answers the same queries three times, in blocks of 20
interleaved with the other runners' (never right after another runner ran the same block, so
no one inherits caches warm with its queries); a block counts its fastest round, so bursts of
other work on a shared machine drop out instead of landing on one runner. One thread for queries
(--build-threads for building). The engine receives a prebuilt
SearchPlan per query, its vector a (1, dim) float32 array as the service's embedder hands it
("engine, list plan": the same plans with the vector as Python floats, as a numeric HA query
string carries it), asking for no stored fields.

Filtered rows (HNSW at --filter-ef): the engine with its filter cache warm (the filter is
evaluated once per table version, as repeated category filters are) and cold (evaluated on
every query, as after every write); "unfiltered" is the engine without the filter in the
same interleaved run, so "x unf." is filtered q/s over unfiltered q/s. Peers: faiss HNSW with
an IDSelectorBitmap at the same efSearch (a plain restricted walk), hnswlib with its filter
callback (Python, per visited node), usearch by post-filtering its top k/s (its Python search
takes no filter).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import faiss
import numpy as np

from adapter.plan.records import Document
from adapter.engines.embedded import EmbeddedEngine
from adapter.plan.tree import Compare, SearchParams, SearchPlan
from adapter.schema.model import (
    FieldSpec, FieldType, HnswParams, QcParams, TableSpec, VectorIndexSpec, VectorIndexType,
)

K = 10


def make_spec(name: str, kind: VectorIndexType, dim: int, m: int, ef_construction: int, nlist: int | None) -> TableSpec:
    return TableSpec(
        name=name, primary_key="id",
        fields=[FieldSpec(name="id", type=FieldType.INT64), FieldSpec(name="cate_id", type=FieldType.INT64),
                FieldSpec(name="bucket", type=FieldType.INT32),
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


def exact_top(data: np.ndarray, queries: np.ndarray, rows: np.ndarray | None = None, k: int = K) -> np.ndarray:
    """Exact top-k doc ids per query, over ``rows`` (all when None)."""
    subset = data if rows is None else data[rows]
    flat = faiss.IndexFlatL2(data.shape[1])
    flat.add(subset)
    _, found = flat.search(queries, k)
    return found if rows is None else rows[found]


def recall_at(found: list, truth: np.ndarray, k: int = K) -> float:
    return float(np.mean([len(set(np.asarray(f)[:k].tolist()) & set(t[:k].tolist())) / k
                          for f, t in zip(found, truth)]))


def interleaved(runners: dict[str, Callable[[int], object]], n: int, rounds: int = 3,
                block: int = 20) -> dict[str, tuple[float, list]]:
    """Each runner answers queries 0..n-1 ``rounds`` times, in blocks of ``block`` queries. At
    each step every runner takes its turn, in an order that rotates, on a block several steps
    away from the others' (so none finds the caches warm with the very queries another just
    ran); over a round each runner has run every block. A block's time is its fastest round (other processes on a
    shared machine only ever add time). Returns name -> (queries/second, the answers)."""
    names = list(runners)
    blocks = [(lo, min(n, lo + block)) for lo in range(0, n, block)]
    best: dict[str, list[float]] = {name: [float("inf")] * len(blocks) for name in names}
    answers: dict[str, list] = {name: [None] * n for name in names}
    stride = max(1, len(blocks) // len(names))  # runners meet the same block this many steps apart
    for r in range(rounds):
        for step in range(len(blocks)):
            shift = (r + step) % len(names)
            for name in names[shift:] + names[:shift]:
                b = (step + stride * names.index(name)) % len(blocks)
                lo, hi = blocks[b]
                run, out = runners[name], answers[name]
                t0 = time.perf_counter()
                for i in range(lo, hi):
                    out[i] = run(i)
                best[name][b] = min(best[name][b], time.perf_counter() - t0)
    return {name: (n / sum(best[name]), answers[name]) for name in names}


# -- peers ----------------------------------------------------------------------------------

def build_hnswlib(data: np.ndarray, m: int, ef_construction: int, threads: int):
    import hnswlib

    index = hnswlib.Index(space="l2", dim=data.shape[1])
    index.init_index(max_elements=len(data), M=m, ef_construction=ef_construction, random_seed=1)
    index.add_items(data, np.arange(len(data)), num_threads=threads)
    return index


def build_usearch(data: np.ndarray, m: int, ef_construction: int, threads: int):
    from usearch.index import Index

    index = Index(ndim=data.shape[1], metric="l2sq", dtype="f32", connectivity=m, expansion_add=ef_construction)
    index.add(np.arange(len(data)), data, threads=threads)
    return index


def peer_runners(peers: dict, queries: np.ndarray, allowed: np.ndarray | None = None, fraction: float = 1.0,
                 k: int = K) -> dict:
    runners: dict[str, Callable[[int], object]] = {}
    if "hnswlib" in peers:
        hnsw = peers["hnswlib"]
        if allowed is None:
            runners["hnswlib"] = lambda i: hnsw.knn_query(queries[i], K, num_threads=1)[0][0]
        else:
            member = allowed.__getitem__
            runners["hnswlib (filter callback)"] = lambda i: hnsw.knn_query(queries[i], k, num_threads=1,
                                                                             filter=member)[0][0]
    if "usearch" in peers:
        usearch = peers["usearch"]
        if allowed is None:
            runners["usearch"] = lambda i: usearch.search(queries[i], K, threads=1).keys
        else:
            depth = math.ceil(2 * K / fraction)

            def post_filtered(i: int) -> np.ndarray:
                keys = usearch.search(queries[i], depth, threads=1).keys
                return keys[allowed[keys]][:k]

            runners["usearch (post-filter)"] = post_filtered
    return runners


def set_peer_ef(peers: dict, ef: int) -> None:
    if "hnswlib" in peers:
        peers["hnswlib"].set_ef(max(ef, K))
    if "usearch" in peers:
        peers["usearch"].expansion_search = max(ef, K)


# -- the engine ------------------------------------------------------------------------------

def build_engine_table(engine: EmbeddedEngine, spec: TableSpec, data: np.ndarray, rng) -> float:
    engine.create_table(spec)
    t0 = time.perf_counter()
    if spec.vector_index.index_type is VectorIndexType.QC:
        nlist = spec.vector_index.ivf_nlist(len(data))
        engine.train(spec.name, data[rng.choice(len(data), size=min(len(data), max(64 * nlist, 10_000)), replace=False)])
    for start in range(0, len(data), 10_000):
        engine.upsert(spec.name, [Document(pk=i, fields={"cate_id": i % 10, "bucket": i % 1000}, vector=data[i])
                                  for i in range(start, min(len(data), start + 10_000))])
    return time.perf_counter() - t0


def engine_runner(engine: EmbeddedEngine, plans: list[SearchPlan]) -> Callable[[int], object]:
    return lambda i: [h.pk for h in engine.search(plans[i]).hits]


def plans_for(table: str, queries: np.ndarray, params: SearchParams, flt=None, as_lists: bool = False) -> list[SearchPlan]:
    return [SearchPlan(table=table, vectors=[q.tolist()] if as_lists else queries[i:i + 1], k=K, hit=K,
                       output_fields=[], filter=flt, search_params=params) for i, q in enumerate(queries)]


def raw_runner(index, queries: np.ndarray, params) -> Callable[[int], object]:
    return lambda i: index.search(queries[i:i + 1], K, params=params)[1][0]


def bitmap_selector(allowed: np.ndarray):
    bitmap = np.packbits(allowed, bitorder="little")
    return bitmap, faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap))


def fmt(recall: float, qps: float) -> str:
    """R@10 / q/s"""
    return f"{recall:.3f} / {qps:>7,.0f}"


def hnsw_section(args, engine, table, data, queries, truth, peers) -> None:
    """Two interleaved groups per ef: the engine against the faiss index it wraps, and the peers
    against that same raw faiss. Interleaving the peers with the engine inflates the engine's
    per-query overhead by 15-20 us on this machine (their searches evict the caches its Python
    path runs in), which is not what engine/raw asks."""
    index = engine._generation(table).index.index  # the engine's own faiss object
    w = 17
    print(f"{'ef':>5} | {'engine':>{w}} | {'engine, list plan':>{w}} | {'raw faiss':>{w}} | engine/raw | list plan/raw"
          + (f" || {'raw faiss':>{w}}" if peers else "") + "".join(f" | {n:>{w}} | {n + '/raw':>11}" for n in peers))
    for ef in [int(v) for v in args.ef.split(",")]:
        params = SearchParams(ef_search=ef)
        raw = faiss.SearchParametersHNSW()
        raw.efSearch = max(ef, K)
        set_peer_ef(peers, ef)
        own = interleaved({"engine": engine_runner(engine, plans_for(table, queries, params)),
                           "engine, list plan": engine_runner(engine, plans_for(table, queries, params, as_lists=True)),
                           "raw faiss": raw_runner(index, queries, raw)}, len(queries))
        line = f"{ef:>5} | " + " | ".join(f"{fmt(recall_at(found, truth), qps):>{w}}" for qps, found in own.values())
        line += (f" | {own['engine'][0] / own['raw faiss'][0]:>10.2f}"
                 f" | {own['engine, list plan'][0] / own['raw faiss'][0]:>13.2f}")
        if peers:
            others = interleaved({"raw faiss": raw_runner(index, queries, raw), **peer_runners(peers, queries)},
                                 len(queries))
            base, base_found = others.pop("raw faiss")
            line += f" || {fmt(recall_at(base_found, truth), base):>{w}}"
            line += "".join(f" | {fmt(recall_at(found, truth), qps):>{w}} | {qps / base:>11.2f}"
                            for qps, found in others.values())
        print(line)


def filtered_section(args, engine, table, data, queries, peers, family: str) -> None:
    gen = engine._generation(table)
    index = gen.index.index
    ef = args.filter_ef
    if family == "hnsw":
        params, raw = SearchParams(ef_search=ef), faiss.SearchParametersHNSW()
        raw.efSearch = max(ef, K)
        setting = f"ef={ef}"
    else:
        params, raw = SearchParams(nprobes=args.filter_nprobes), faiss.SearchParametersIVF()
        raw.nprobe = args.filter_nprobes
        setting = f"nprobes={args.filter_nprobes}"
    set_peer_ef(peers, ef)
    unfiltered = plans_for(table, queries, params)
    bucket = np.arange(len(data)) % 1000
    print(f"\n-- filtered, {family} at {setting}: bucket < 1000 x selectivity; R@10 / q/s, "
          "x unf. = filtered q/s over the engine's unfiltered q/s in the same run")
    header = None
    for s in [float(v) for v in args.filter_selectivity.split(",")]:
        limit = max(1, round(1000 * s))
        allowed = bucket < limit
        rows = np.flatnonzero(allowed)
        k = min(K, len(rows))
        truth = exact_top(data, queries, rows, k)
        flt = Compare(field="bucket", op="<", value=limit)
        filtered_plans = plans_for(table, queries, params, flt)
        cold_cache = gen.index.rows

        def cold(i: int) -> object:
            cold_cache.cache.clear()  # the filter is evaluated again, as after every write
            return [h.pk for h in engine.search(filtered_plans[i]).hits]

        bitmap, selector = bitmap_selector(allowed)
        raw.sel = selector
        runners = {"engine": engine_runner(engine, filtered_plans), "engine, cold filter": cold,
                   "unfiltered": engine_runner(engine, unfiltered), "faiss + IDSelector": raw_runner(index, queries, raw)}
        if family == "hnsw":
            runners.update(peer_runners(peers, queries, allowed, len(rows) / len(data), k))
        result = interleaved(runners, len(queries))
        raw.sel = None
        del bitmap
        if header is None:
            header = [n for n in result if n != "unfiltered"]
            print(f"{'select.':>8} {'rows':>7} | " + " | ".join(f"{n:>26}" for n in header) + " | unfiltered q/s")
        base = result["unfiltered"][0]
        cells = []
        for name in header:
            qps, found = result[name]
            rec = recall_at(found, truth, k)
            cells.append(f"{rec:.3f} / {qps:>6,.0f}" + (f" {qps / base:>4.2f}x" if name.startswith("engine") else "      "))
        print(f"{s:>8.3%} {len(rows):>7} | " + " | ".join(f"{c:>26}" for c in cells) + f" | {base:>14,.0f}")


def ivf_section(args, engine, table, queries, truth) -> None:
    index = engine._generation(table).index.index
    nlist = engine.stats(table).extra["nlist"]
    print(f"{'nprobes':>8} | {'engine R@10 / q/s':>22} | {'raw faiss R@10 / q/s':>22} | engine/raw")
    for nprobes in [int(v) for v in args.nprobes.split(",")]:
        raw = faiss.SearchParametersIVF()
        raw.nprobe = min(nprobes, nlist)
        result = interleaved({"engine": engine_runner(engine, plans_for(table, queries, SearchParams(nprobes=nprobes))),
                              "raw faiss": raw_runner(index, queries, raw)}, len(queries))
        (eq, ef_), (rq, rf) = result["engine"], result["raw faiss"]
        print(f"{nprobes:>8} | {fmt(recall_at(ef_, truth), eq):>22} | {fmt(recall_at(rf, truth), rq):>22} | {eq / rq:>10.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--families", default="hnsw,ivf")
    ap.add_argument("--m", type=int, default=16, help="HNSW M (proxima max_neighbor_count = 2*M)")
    ap.add_argument("--ef-construction", type=int, default=64)
    ap.add_argument("--ef", default="16,32,64,128")
    ap.add_argument("--nlist", type=int, default=None, help="IVF lists (default: the spec's ~4*sqrt(N))")
    ap.add_argument("--nprobes", default="1,4,16,64")
    ap.add_argument("--filter-selectivity", default="0.1,0.01,0.001",
                    help="fractions of rows the filter matches ('' to skip the filtered rows)")
    ap.add_argument("--filter-ef", type=int, default=64)
    ap.add_argument("--filter-nprobes", type=int, default=16)
    ap.add_argument("--peers", default="hnswlib,usearch", help="'none' to skip")
    ap.add_argument("--build-threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--data", choices=["normal", "clustered"], default="clustered")
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    data, queries = make_data(rng, args.n, args.queries, args.dim, args.data)
    truth = exact_top(data, queries)
    print(f"data: {args.n} x {args.dim} normalised {args.data}, {args.queries} queries, faiss {faiss.__version__}; "
          f"queries on 1 thread, builds on {args.build_threads}; figures from one run, blocks interleaved")
    root = Path(args.data_dir or tempfile.mkdtemp(prefix="ann-bench-"))
    engine = EmbeddedEngine(root)
    try:
        for family in args.families.split(","):
            kind = VectorIndexType.HNSW if family == "hnsw" else VectorIndexType.QC
            spec = make_spec(f"bench_{family}", kind, args.dim, args.m, args.ef_construction, args.nlist)
            faiss.omp_set_num_threads(args.build_threads)
            build_s = build_engine_table(engine, spec, data, rng)
            peers: dict = {}
            if family == "hnsw" and args.peers != "none":
                for name, build in (("hnswlib", build_hnswlib), ("usearch", build_usearch)):
                    if name not in args.peers.split(","):
                        continue
                    try:
                        t0 = time.perf_counter()
                        peers[name] = build(data, args.m, args.ef_construction, args.build_threads)
                        print(f"{name}: built in {time.perf_counter() - t0:.1f} s")
                    except ImportError:
                        print(f"{name}: not installed (pip install -e '.[bench]'), skipped")
            faiss.omp_set_num_threads(1)
            engine.checkpoint(spec.name)
            gen = engine._generation(spec.name)
            faiss_bytes = (gen.path / "index.faiss").stat().st_size
            sqlite_bytes = sum(p.stat().st_size for p in gen.path.glob("docs.sqlite*"))
            st = engine.stats(spec.name)
            print(f"\n== {family}: {st.extra} engine build {build_s:.1f} s through engine.upsert (SQLite + faiss); "
                  f"index {faiss_bytes / args.n:.0f} B/vector, SQLite {sqlite_bytes / args.n:.0f} B/vector")
            if family == "hnsw":
                hnsw_section(args, engine, spec.name, data, queries, truth, peers)
            else:
                ivf_section(args, engine, spec.name, queries, truth)
            if args.filter_selectivity:
                filtered_section(args, engine, spec.name, data, queries, peers, family)
            peers.clear()
            engine.drop_table(spec.name)
    finally:
        engine.close()
        if args.data_dir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
