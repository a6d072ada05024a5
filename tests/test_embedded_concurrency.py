"""Searches never wait behind writers' long work in the embedded engine.

Each test holds a writer inside the long part of its work (a batch's SQLite transaction, Qc
training, an HNSW compaction rebuild, a checkpoint) on an Event, then shows that searches,
and where it applies other writers, complete while it is held: an ordering, not a timing.
Afterwards the held work finishes and nothing written meanwhile is lost.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from adapter.plan.records import Document
from adapter.engines.docstore import DocStore
from adapter.engines.embedded import EmbeddedEngine
from adapter.engines.faissindex import VectorIndex
from adapter.engines.generation import Generation
from adapter.engines.rwlock import RWLock
from adapter.plan.tree import SearchParams, SearchPlan
from adapter.schema.model import VectorIndexType
from test_engines import make_docs, make_spec, readers_searching

LIVENESS_S = 60  # only bounds a hang if the behaviour regresses; nothing is timed


def knn(table: str, vec: np.ndarray, k: int = 5, **kw) -> SearchPlan:
    return SearchPlan(table=table, vectors=np.asarray(vec, dtype=np.float32)[None, :], k=k, hit=k, **kw)


class Held:
    """Wraps a method so that its first qualifying call parks on an Event until released."""

    def __init__(self, monkeypatch, owner, name, when=lambda *a, **kw: True, before=False):
        self.entered, self.release = threading.Event(), threading.Event()
        real = getattr(owner, name)
        held = self

        def wrapper(*args, **kwargs):
            park = when(*args, **kwargs) and not held.entered.is_set()
            if park and before:
                held.entered.set()
                held.release.wait(LIVENESS_S)
            out = real(*args, **kwargs)
            if park and not before:
                held.entered.set()
                held.release.wait(LIVENESS_S)
            return out

        monkeypatch.setattr(owner, name, wrapper)


def in_thread(fn) -> tuple[threading.Thread, list]:
    result: list = []

    def run():
        try:
            result.append(fn())
        except BaseException as exc:  # noqa: BLE001 - surfaced by the caller
            result.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def finished(thread: threading.Thread, result: list):
    thread.join(LIVENESS_S)
    assert not thread.is_alive(), "did not finish"
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


@pytest.fixture
def engine(tmp_path):
    e = EmbeddedEngine(tmp_path / "data")
    yield e
    e.close()


def test_a_search_completes_while_a_writer_holds_its_batch_transaction(engine, monkeypatch):
    engine.create_table(make_spec("t"))
    docs, vecs = make_docs(200)
    engine.upsert("t", docs[:100])
    held = Held(monkeypatch, DocStore, "write")  # the batch's SQLite work is done; COMMIT is not
    writer, written = in_thread(lambda: engine.upsert("t", docs[100:]))
    assert held.entered.wait(LIVENESS_S)

    search, found = in_thread(lambda: engine.search(knn("t", vecs[150], k=3)))
    hits = finished(search, found).hits
    assert writer.is_alive()  # the search finished while the writer still held its transaction
    assert 150 not in {h.pk for h in hits} and engine.count("t") == 100  # nothing half-visible

    held.release.set()
    assert finished(writer, written).written == 100
    assert engine.search(knn("t", vecs[150], k=1)).hits[0].pk == 150


def test_qc_training_at_the_threshold_blocks_neither_searches_nor_other_writers(engine, monkeypatch):
    spec = make_spec("qc", index_type=VectorIndexType.QC)
    spec = spec.model_copy(update={"vector_index": spec.vector_index.model_copy(update={"linear_build_threshold": 200})})
    engine.create_table(spec)
    docs, vecs = make_docs(300)
    engine.upsert("qc", docs[:150])
    held = Held(monkeypatch, VectorIndex, "train", before=True)  # k-means starts: parked
    crossing, crossed = in_thread(lambda: engine.upsert("qc", docs[150:250]))
    assert held.entered.wait(LIVENESS_S)

    assert engine.search(knn("qc", vecs[200], k=1)).hits[0].pk == 200  # exact search meanwhile
    assert engine.upsert("qc", docs[250:]).written == 50  # another writer is not held up
    assert engine.delete("qc", [3]).written == 1
    assert engine.search(knn("qc", vecs[270], k=1)).hits[0].pk == 270
    assert crossing.is_alive() and engine.stats("qc").extra["trained"] is False

    held.release.set()
    assert finished(crossing, crossed).written == 100
    st = engine.stats("qc")
    assert st.extra["trained"] is True and st.extra["indexed"] == 299 == st.doc_count
    all_lists = SearchParams(nprobes=st.extra["nlist"])
    assert engine.search(knn("qc", vecs[270], k=1, search_params=all_lists)).hits[0].pk == 270  # caught up
    assert 3 not in {h.pk for h in engine.search(knn("qc", vecs[3], k=5, search_params=all_lists)).hits}


def test_hnsw_compaction_rebuild_runs_beside_searches_and_writes(engine, monkeypatch):
    engine.create_table(make_spec("t"))
    docs, vecs = make_docs(300)
    engine.upsert("t", docs)
    # the rebuild's first pass over committed rows (it passes a limit; writes' own fills do not)
    held = Held(monkeypatch, Generation, "_fill", when=lambda self, index, conn=None, limit=None: limit is not None)
    moved = [Document(pk=d.pk, fields=d.fields, vector=-d.vector) for d in docs[:150]]  # 150 of 450 positions dead
    replacing, replaced = in_thread(lambda: engine.upsert("t", moved))
    assert held.entered.wait(LIVENESS_S)

    assert engine.search(knn("t", -vecs[5], k=1)).hits[0].pk == 5  # the replacement is live already
    extra_docs, extra_vecs = make_docs(1, seed=7)
    engine.upsert("t", [Document(pk=1000, fields={"title": "new"}, vector=extra_vecs[0])])
    engine.delete("t", [200])
    assert replacing.is_alive() and engine.stats("t").extra["tombstones"] >= 150

    held.release.set()
    finished(replacing, replaced)
    st = engine.stats("t")
    assert st.doc_count == 300 == st.extra["indexed"]
    assert st.extra["tombstones"] <= 1  # compacted: only the delete that raced the rebuild is dead
    assert engine.search(knn("t", extra_vecs[0], k=1)).hits[0].pk == 1000
    assert 200 not in {h.pk for h in engine.search(knn("t", vecs[200], k=5)).hits}
    assert engine.search(knn("t", -vecs[7], k=1)).hits[0].pk == 7


def test_a_checkpoint_writing_the_index_does_not_hold_searches(engine, monkeypatch):
    engine.create_table(make_spec("t"))
    docs, vecs = make_docs(100)
    engine.upsert("t", docs)
    held = Held(monkeypatch, VectorIndex, "to_file", before=True)
    checkpoint, done = in_thread(lambda: engine.checkpoint("t"))
    assert held.entered.wait(LIVENESS_S)
    assert engine.search(knn("t", vecs[42], k=1)).hits[0].pk == 42
    assert checkpoint.is_alive()
    held.release.set()
    finished(checkpoint, done)


def test_searches_across_generation_switches_always_answer(engine):
    engine.create_table(make_spec("t"))
    docs, vecs = make_docs(50)
    engine.upsert("t", docs)

    def check():
        assert len(engine.search(knn("t", vecs[3], k=5, output_fields=["title"])).hits) == 5

    with readers_searching(check):
        for _ in range(8):
            gen = engine.begin_generation("t")
            engine.upsert("t", docs, generation=gen)
            engine.switch_generation("t", gen)


def test_reopening_keeps_dead_positions_hidden_and_rebuilds_old_index_files(tmp_path):
    e = EmbeddedEngine(tmp_path)
    e.create_table(make_spec("t"))
    docs, vecs = make_docs(100)
    e.upsert("t", docs)
    e.delete("t", [1, 2])
    e.close()  # checkpoint: the file holds dead positions
    e = EmbeddedEngine(tmp_path)
    assert e.stats("t").extra["tombstones"] == 2 and e.count("t") == 98
    assert {1, 2}.isdisjoint(h.pk for h in e.search(knn("t", vecs[1], k=10)).hits)
    e.close()
    index_file = tmp_path / "tables" / "t" / "g1" / "index.faiss"
    index_file.write_bytes(index_file.read_bytes()[:50])  # truncated, or another format
    e = EmbeddedEngine(tmp_path)
    assert e.search(knn("t", vecs[60], k=1)).hits[0].pk == 60 and e.stats("t").extra["tombstones"] == 0
    e.close()


# -- the lock itself ----------------------------------------------------------------------------

def wait_until(predicate) -> None:
    done = threading.Event()
    for _ in range(LIVENESS_S * 1000):
        if predicate():
            return
        done.wait(0.001)
    raise AssertionError("condition never held")


def test_a_waiting_writer_holds_back_new_readers_and_readers_queued_behind_it_go_first():
    lock = RWLock()
    order: list[str] = []

    def reader(name: str):
        with lock.read():
            order.append(name)

    def writer(name: str, hold: threading.Event | None = None):
        with lock.write():
            order.append(name)
            if hold is not None:
                hold.wait(LIVENESS_S)

    lock.acquire_read()  # a search in flight
    w1_hold = threading.Event()
    w1 = threading.Thread(target=writer, args=("w1", w1_hold))
    w1.start()
    wait_until(lambda: lock._writers_waiting == 1)
    r1 = threading.Thread(target=reader, args=("r1",))
    r1.start()
    wait_until(lambda: lock._readers_waiting == 1)  # a waiting writer: new readers queue
    assert order == []
    lock.release_read()
    wait_until(lambda: order == ["w1"])
    w2 = threading.Thread(target=writer, args=("w2",))
    w2.start()
    wait_until(lambda: lock._writers_waiting == 1)
    w1_hold.set()
    for t in (w1, r1, w2):
        t.join(LIVENESS_S)
    assert order == ["w1", "r1", "w2"]  # r1 queued behind w1 goes before w2
