"""Search latency with and without writers, side by side in one run (prints; asserts nothing).

    PYTHONPATH=. python bench/readers_writers.py
    PYTHONPATH=/path/to/other/checkout python bench/readers_writers.py   # the same load on other code

In one process, as the service runs them (threads sharing the GIL): ``--readers`` threads search
the embedded engine back to back while ``--writers`` threads push batches of ``--batch`` new
512-d documents. Windows of ``--window`` seconds alternate between idle (no writer) and under
writers, so machine-load drift hits both alike; each search's wall time is recorded.

Scenarios:
- hnsw: a table of ``--n`` documents, writers pushing steadily (every batch is SQLite inserts
  plus HNSW adds, the work that used to hold the table lock).
- qc: a Qc table one batch short of linear_build_threshold (``--qc-n``); the first push crosses
  it and trains the IVF index (k-means over every vector) while the other writer keeps
  pushing and readers keep searching; the window runs until training has finished.
- checkpoint: writers push while another thread checkpoints the table (serialises its index
  and folds SQLite's WAL) back to back.
- switch: a rebuild loop on a table of ``--switch-n`` documents: begin a generation, fill it
  with the same documents, switch to it (checkpoint of the new one, close of the old one),
  again and again, while readers search the table.

Uses only the engine's public API (SearchPlan vectors as lists), so it runs on older code too.
Figures depend on the machine: on 2 shared cores, readers, writers and faiss's OpenMP threads
compete for CPU, which no lock scheme removes.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from adapter.engines.embedded import EmbeddedEngine

try:
    from adapter.plan.records import Document
    from adapter.plan.tree import SearchPlan
except ImportError:  # a checkout from before adapter/plan (the comparison run above)
    from adapter.engines.base import Document
    from adapter.query.plan import SearchPlan
from adapter.schema.model import (
    FieldSpec, FieldType, HnswParams, QcParams, TableSpec, VectorIndexSpec, VectorIndexType,
)


def make_spec(name: str, kind: VectorIndexType, dim: int, threshold: int) -> TableSpec:
    return TableSpec(
        name=name, primary_key="id",
        fields=[FieldSpec(name="id", type=FieldType.INT64), FieldSpec(name="cate_id", type=FieldType.INT64),
                FieldSpec(name="vector", type=FieldType.FLOAT, multi_value=True)],
        vector_index=VectorIndexSpec(
            name="vector", pk_field="id", vector_field="vector", dimension=dim, index_type=kind,
            hnsw=HnswParams(max_neighbor_count=32, ef_construction=64, ef_search=64)
            if kind is VectorIndexType.HNSW else None,
            qc=QcParams() if kind is VectorIndexType.QC else None,
            linear_build_threshold=threshold),
    )


class Vectors:
    """Clustered unit vectors on demand (a 1000-centre mixture, like bench/ann.py's)."""

    def __init__(self, dim: int, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.centres = self.rng.standard_normal((1000, dim), dtype=np.float32)
        self.lock = threading.Lock()

    def take(self, n: int) -> np.ndarray:
        with self.lock:
            points = self.centres[self.rng.integers(0, 1000, n)] + 0.5 * self.rng.standard_normal(
                (n, self.centres.shape[1]), dtype=np.float32)
        return points / np.linalg.norm(points, axis=1, keepdims=True)


class Load:
    """Readers searching and writers pushing until stopped; latencies per search."""

    def __init__(self, engine: EmbeddedEngine, table: str, vectors: Vectors, next_pk: int, batch: int):
        self.engine, self.table, self.vectors, self.batch = engine, table, vectors, batch
        self.next_pk = next_pk
        self.pk_lock = threading.Lock()
        self.queries = [q.tolist() for q in vectors.take(200)]
        self.latencies: list[float] = []
        self.pushed = 0
        self.errors: list[BaseException] = []

    def reader(self, stop: threading.Event) -> None:
        i = 0
        try:
            while not stop.is_set():
                plan = SearchPlan(table=self.table, vectors=[self.queries[i % len(self.queries)]], k=10, hit=10,
                                  output_fields=["cate_id"])
                t0 = time.perf_counter()
                self.engine.search(plan)
                self.latencies.append(time.perf_counter() - t0)
                i += 1
        except BaseException as exc:  # noqa: BLE001 - reported at the end
            self.errors.append(exc)

    def push_once(self) -> None:
        with self.pk_lock:
            start, self.next_pk = self.next_pk, self.next_pk + self.batch
        vecs = self.vectors.take(self.batch)
        self.engine.upsert(self.table, [Document(pk=start + j, fields={"cate_id": (start + j) % 10}, vector=vecs[j])
                                        for j in range(self.batch)])
        self.pushed += self.batch

    def writer(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                self.push_once()
        except BaseException as exc:  # noqa: BLE001
            self.errors.append(exc)

    def window(self, seconds: float, readers: int, writers: int, until=None, side=None) -> dict:
        """Run for ``seconds`` (or until ``until()`` is true, at least ``seconds``); returns figures."""
        self.latencies, self.pushed = [], 0
        stop = threading.Event()
        threads = [threading.Thread(target=self.reader, args=(stop,)) for _ in range(readers)]
        threads += [threading.Thread(target=self.writer, args=(stop,)) for _ in range(writers)]
        if side is not None:
            threads.append(threading.Thread(target=side, args=(stop,)))
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        time.sleep(seconds)
        while until is not None and not until():
            time.sleep(0.05)
        stop.set()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
        ms = np.asarray(self.latencies) * 1000
        return {"searches": len(ms), "p50": np.percentile(ms, 50), "p95": np.percentile(ms, 95),
                "p99": np.percentile(ms, 99), "max": ms.max(), "docs/s": self.pushed / elapsed, "seconds": elapsed}


def row(scenario: str, label: str, r: dict) -> None:
    print(f"{scenario:<34} {label:<22} {r['searches']:>8} {r['p50']:>8.2f} {r['p95']:>8.2f} {r['p99']:>8.2f} "
          f"{r['max']:>8.1f} {r['docs/s']:>8.0f} {r['seconds']:>6.1f}")


def merged(results: list[dict]) -> dict:
    """Windows of one kind pooled: searches and seconds add up, percentiles are averaged."""
    out = {k: float(np.mean([r[k] for r in results])) for k in ("p50", "p95", "p99", "docs/s")}
    out.update(searches=sum(r["searches"] for r in results), max=max(r["max"] for r in results),
               seconds=sum(r["seconds"] for r in results))
    return out


def fill(engine: EmbeddedEngine, table: str, vectors: Vectors, n: int) -> None:
    for start in range(0, n, 5000):
        vecs = vectors.take(min(5000, n - start))
        engine.upsert(table, [Document(pk=start + j, fields={"cate_id": (start + j) % 10}, vector=v)
                              for j, v in enumerate(vecs)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000, help="documents in the HNSW table")
    ap.add_argument("--qc-n", type=int, default=50000, help="linear_build_threshold of the Qc table (0: skip)")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--readers", type=int, default=2)
    ap.add_argument("--writers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--window", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=2, help="idle / under-writers pairs per scenario")
    ap.add_argument("--switch-n", type=int, default=5000, help="documents in the switch scenario's table")
    ap.add_argument("--scenarios", default="hnsw,qc,checkpoint,switch")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="rw-bench-"))
    engine = EmbeddedEngine(root)
    vectors = Vectors(args.dim)
    scenarios = args.scenarios.split(",")
    print(f"{args.readers} reader and {args.writers} writer threads, batches of {args.batch} x {args.dim}-d; "
          f"latency of each search (k=10, one stored field) in ms")
    print(f"{'scenario':<34} {'window':<22} {'searches':>8} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8} "
          f"{'docs/s':>8} {'s':>6}")
    try:
        if "hnsw" in scenarios or "checkpoint" in scenarios:
            engine.create_table(make_spec("hnsw", VectorIndexType.HNSW, args.dim, 1000))
            fill(engine, "hnsw", vectors, args.n)
            load = Load(engine, "hnsw", vectors, args.n, args.batch)
            if "hnsw" in scenarios:
                name = f"hnsw {args.n // 1000}k, steady writers"
                idle, busy = [], []
                for _ in range(args.rounds):
                    idle.append(load.window(args.window, args.readers, 0))
                    busy.append(load.window(args.window, args.readers, args.writers))
                row(name, "idle", merged(idle))
                row(name, "under writers", merged(busy))
                print(f"{'':<34} {'p95 under / idle':<22} {merged(busy)['p95'] / merged(idle)['p95']:>44.1f}x")
            if "checkpoint" in scenarios:
                name = "hnsw, checkpoint loop"

                def checkpoints(stop: threading.Event) -> None:
                    while not stop.is_set():
                        engine.checkpoint("hnsw")

                idle = load.window(args.window, args.readers, 0)
                busy = load.window(args.window, args.readers, args.writers, side=checkpoints)
                row(name, "idle", idle)
                row(name, "writers + checkpoints", busy)
                print(f"{'':<34} {'p95 under / idle':<22} {busy['p95'] / idle['p95']:>44.1f}x")
            if load.errors:
                print("errors:", load.errors[:3])
        if "switch" in scenarios:
            engine.create_table(make_spec("sw", VectorIndexType.HNSW, args.dim, 1000))
            docs = [Document(pk=i, fields={"cate_id": i % 10}, vector=v) for i, v in enumerate(vectors.take(args.switch_n))]
            engine.upsert("sw", docs)
            switches = []

            def rebuilds(stop: threading.Event) -> None:
                while not stop.is_set():
                    gen = engine.begin_generation("sw")
                    for start in range(0, len(docs), 1000):
                        engine.upsert("sw", docs[start:start + 1000], generation=gen)
                    engine.switch_generation("sw", gen)
                    switches.append(gen)

            load = Load(engine, "sw", vectors, args.switch_n, args.batch)
            name = f"switch loop, {args.switch_n // 1000}k-doc generations"
            idle = load.window(args.window, args.readers, 0)
            busy = load.window(args.window, args.readers, 0, side=rebuilds)
            row(name, "idle", idle)
            row(name, f"rebuild + switch ({len(switches)}x)", busy)
            print(f"{'':<34} {'p95 under / idle':<22} {busy['p95'] / idle['p95']:>44.1f}x")
            if load.errors:
                print("errors:", load.errors[:3])
        if "qc" in scenarios and args.qc_n:
            threshold = args.qc_n
            engine.create_table(make_spec("qc", VectorIndexType.QC, args.dim, threshold))
            fill(engine, "qc", vectors, threshold - args.batch // 2)
            load = Load(engine, "qc", vectors, threshold, args.batch)
            name = f"qc {threshold // 1000}k, training at threshold"
            idle = load.window(args.window, args.readers, 0)
            row(name, "idle (exact, untrained)", idle)
            trained = lambda: engine.stats("qc").extra["trained"]  # noqa: E731
            t0 = time.perf_counter()
            busy = load.window(args.window, args.readers, args.writers, until=trained)
            row(name, "writers + training", busy)
            print(f"{'':<34} {'p95 under / idle':<22} {busy['p95'] / idle['p95']:>44.1f}x   "
                  f"(trained {time.perf_counter() - t0:.1f} s after the first push)")
            after = load.window(args.window, args.readers, 0)
            row(name, "idle (IVF, trained)", after)
            if load.errors:
                print("errors:", load.errors[:3])
    finally:
        engine.close()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
